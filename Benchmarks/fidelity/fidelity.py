#!/usr/bin/env python3
"""2D-SIM fidelity harness: Moiré beside a known-parameter Wiener ceiling, napari-sim-processor and
widefield, on simulated scenes with a known ground truth (forward.py), in one run.

Usage: fidelity.py --moire PATH/TO/moire [--out DIR] [--scenes N] [--seed S] [--size N] [--denoise]
                   [--live SETS] [--variant NAME='OPTIONS' ...]

For every scene it prints PSNR (dB) and SSIM against the reference after an affine fit, and the
FRC resolution (µm) from two noise realisations; then a summary per photon level, and it writes
DIR/fidelity.json (with the PSNR of the field without its outer 10 %, `psnr_inner`, to tell edge
losses from the rest) and DIR/fidelity.png (PSNR vs photons per method). `moire[true params]` is
Moiré's filter given the true pattern (`--parameters`), so estimation and filtering are told apart. A variant runs
`moire reconstruct` again with extra options (e.g. --variant nosupp='--suppression 0').
`--live SETS` also runs the live pipeline at ≤ 100 photons (live.py): a time-lapse of SETS noise
realisations of the scene replayed through `moire replay` with live SIM and live denoising at their
defaults, scored on its last two sets (`moire-live`: the SR frames; `moire-live+denoise`: the
denoised ones, with `first_psnr`, the first denoised frame's).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402
import live  # noqa: E402
import methods  # noqa: E402

SPECIMENS = ["filaments-sparse", "filaments-dense", "puncta-sparse", "puncta-dense"]
PHOTONS = [30, 100, 500, 2000]


def make_scenes(count, seed, n):
    """`count` scenes: every specimen at every photon level in turn, the optics and the pattern drawn at random."""
    rng = np.random.default_rng(seed)
    scenes = []
    for i in range(count):
        specimen = SPECIMENS[i % len(SPECIMENS)]
        photons = PHOTONS[(i // len(SPECIMENS)) % len(PHOTONS)]
        scenes.append(forward.Scene(
            name=f"s{i:02d}-{specimen}-{photons}",
            specimen=specimen,
            photons=float(photons),
            na=float(np.round(rng.uniform(1.2, 1.49), 3)),
            emission_nm=float(np.round(rng.uniform(500, 700))),
            k_fraction=float(np.round(rng.uniform(0.75, 0.95), 3)),
            modulation=float(np.round(rng.uniform(0.4, 0.9), 2)),
            background=float(np.round(rng.uniform(0, 50), 1)),
            seed=int(rng.integers(1 << 30)),
            n=n))
    return scenes


def evaluate(scene, binary, with_denoise, variants=(), live_sets=0):
    realisations = max(2, live_sets) if live_sets and scene.photons <= 100 else 2
    raws, reference, angles = forward.simulate(scene, realisations=realisations)
    sr_pixel = scene.pixel_um / 2
    results = {}

    def score(name, images, extra=None):
        first, second = images
        border = first.shape[0] // 10
        inner = (slice(border, -border), slice(border, -border))
        entry = {"psnr": methods.psnr(first, reference), "ssim": methods.ssim(first, reference),
                 "frc_um": methods.frc_resolution(first, second, sr_pixel),
                 "psnr_inner": methods.psnr(first[inner], reference[inner])}
        entry.update(extra or {})
        results[name] = entry

    score("widefield", [methods.widefield(r, scene) for r in raws[:2]])
    ceiling = [methods.wiener_ceiling(r, scene, angles, reference, methods.psnr) for r in raws[:2]]
    score("ceiling", [c[0] for c in ceiling], {"w": ceiling[0][1]})
    try:
        peer = [methods.napari_sim_processor(r, scene) for r in raws[:2]]
        if peer[0] is not None:
            score("napari-sim-processor", peer)
    except Exception as error:  # the peer's own estimation can fail on a scene; that is a result too
        results["napari-sim-processor"] = {"error": str(error)[:200]}
    score("moire", [methods.moire(r, scene, angles, binary) for r in raws[:2]])
    # The same filter given the true pattern: what estimation costs is the difference to `moire`.
    score("moire[true params]", [methods.moire(r, scene, angles, binary, given_truth=True) for r in raws[:2]])
    for name, options in variants:
        score(f"moire[{name}]", [methods.moire(r, scene, angles, binary, options) for r in raws[:2]])
    if with_denoise and scene.photons <= 100:
        noise = f"{forward.OFFSET_ADU},1,{forward.READ_NOISE_E}"
        score("moire+denoise", [methods.moire(r, scene, angles, binary, ["--denoise", "auto", "--noise", noise]) for r in raws[:2]])
    if live_sets and scene.photons <= 100:
        frames = live.run(raws, scene, angles, binary)
        score("moire-live", frames["sr"][-2:][::-1])
        score("moire-live+denoise", frames["den"][-2:][::-1],
              {"first_psnr": methods.psnr(frames["den"][0], reference), "sets": len(frames["den"])})
    return results


def summarise(rows):
    method_names = []
    for row in rows:
        for name in row["results"]:
            if name not in method_names:
                method_names.append(name)
    print("\nmean PSNR (dB) / SSIM per photon level; Δ = method − ceiling")
    header = f"{'photons':>8}  " + "  ".join(f"{m:>22}" for m in method_names)
    print(header)
    for photons in sorted({r["scene"]["photons"] for r in rows}):
        subset = [r for r in rows if r["scene"]["photons"] == photons]
        cells = []
        for m in method_names:
            vals = [r["results"][m] for r in subset if m in r["results"] and "psnr" in r["results"][m]]
            if not vals:
                cells.append(f"{'–':>22}")
                continue
            p = np.mean([v["psnr"] for v in vals])
            s = np.mean([v["ssim"] for v in vals])
            d = np.mean([r["results"][m]["psnr"] - r["results"]["ceiling"]["psnr"] for r in subset
                         if m in r["results"] and "psnr" in r["results"][m]])
            cells.append(f"{p:6.2f}/{s:4.2f} Δ{d:+6.2f}".rjust(22))
        print(f"{photons:>8.0f}  " + "  ".join(cells))
    return method_names


def plot(rows, method_names, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = sorted({r["scene"]["photons"] for r in rows})
    for m in method_names:
        means = []
        for photons in levels:
            vals = [r["results"][m]["psnr"] for r in rows
                    if r["scene"]["photons"] == photons and m in r["results"] and "psnr" in r["results"][m]]
            means.append(np.mean(vals) if vals else np.nan)
        ax.plot(levels, means, marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("photons at the widefield peak")
    ax.set_ylabel("PSNR vs reference (dB), mean over scenes")
    ax.set_title("2D-SIM fidelity (Benchmarks/fidelity)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moire", required=True, help="path to the moire executable (release build)")
    parser.add_argument("--out", default="Benchmarks/fidelity/results")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--size", type=int, default=256, help="camera pixels per side")
    parser.add_argument("--denoise", action="store_true", help="also moire reconstruct --denoise auto at ≤ 100 photons")
    parser.add_argument("--live", type=int, default=0, metavar="SETS",
                        help="also the live pipeline (moire replay, live SIM and denoising) on SETS time points at ≤ 100 photons")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="also moire reconstruct with these extra options, reported as moire[NAME]")
    args = parser.parse_args()
    variants = []
    for text in args.variant:
        name, _, options = text.partition("=")
        variants.append((name, options.split()))
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for scene in make_scenes(args.scenes, args.seed, args.size):
        t0 = time.time()
        results = evaluate(scene, args.moire, args.denoise, variants, args.live)
        rows.append({"scene": scene.as_dict(), "results": results})
        line = "  ".join(f"{m} {v['psnr']:.2f}/{v['ssim']:.3f}/{v['frc_um'] * 1000:.0f}nm" if "psnr" in v else f"{m} failed"
                         for m, v in results.items())
        print(f"{scene.name} NA {scene.na} λ {scene.emission_nm:.0f} k {scene.k_fraction} m {scene.modulation} "
              f"bg {scene.background}: {line}  ({time.time() - t0:.1f} s)", flush=True)
    names = summarise(rows)
    with open(os.path.join(args.out, "fidelity.json"), "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, names, os.path.join(args.out, "fidelity.png"))


if __name__ == "__main__":
    main()
