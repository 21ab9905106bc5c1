#!/usr/bin/env python3
"""LLS-SIM fidelity harness: one pattern orientation per plane (lattice light-sheet SIM), Moiré
beside a known-parameter Wiener ceiling and widefield on simulated planes with a known ground
truth, in one run. The forward model, ceiling and metrics are the 2D harness's (forward.py,
methods.py), with one orientation: the reference is the ground truth through the ideal transfer
function of the extended support, which for one orientation reaches f_c + |k·û| in each
direction û (f_c + |k| along k, f_c across; the incoherent OTF's profile over that reach).

Usage: llssim_fidelity.py --moire PATH/TO/moire [--out DIR] [--photons 100,500,2000] [--seed S]

Scenes: filaments and puncta at each photon level, 3 and 5 phases, detection NA 1.0–1.1 (a
lattice light-sheet's water objective), emission 500–620 nm, |k| 0.75–0.9 f_c, modulation
0.5–0.9, background 0–30 photons, random orientation and phases. PSNR and SSIM after an affine
fit; prints a table, writes DIR/llssim_fidelity.json.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward  # noqa: E402
import methods  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moire", required=True, help="path of the moire binary (release build)")
    parser.add_argument("--out", default=None, help="folder for llssim_fidelity.json")
    parser.add_argument("--photons", default="100,500,2000")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--size", type=int, default=128, help="camera pixels per side")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"{'scene':<30} {'method':<18} {'PSNR dB':>8} {'SSIM':>6}")
    for phases in (3, 5):
        for specimen in ("filaments-sparse", "puncta-sparse"):
            for photons in [float(p) for p in args.photons.split(",")]:
                scene = forward.Scene(
                    name=f"{specimen}-{phases}ph-{int(photons)}", specimen=specimen, photons=photons,
                    na=float(np.round(rng.uniform(1.0, 1.1), 3)), emission_nm=float(np.round(rng.uniform(500, 620))),
                    k_fraction=float(np.round(rng.uniform(0.75, 0.9), 3)),
                    modulation=float(np.round(rng.uniform(0.5, 0.9), 2)),
                    background=float(np.round(rng.uniform(0, 30), 1)), seed=int(rng.integers(1 << 30)),
                    n=args.size, angles=1, phases=phases)
                raws, reference, angles = forward.simulate(scene, realisations=1)
                raw = raws[0]
                results = {
                    "widefield": methods.widefield(raw, scene),
                    "ceiling": methods.wiener_ceiling(raw, scene, angles, reference, methods.psnr)[0],
                    "moire": methods.moire(raw, scene, angles, args.moire),
                    # Moiré's filter given the true pattern: what estimation costs is the difference.
                    "moire[true params]": methods.moire(raw, scene, angles, args.moire, given_truth=True),
                }
                row = {"scene": scene.as_dict()}
                for name, image in results.items():
                    row[name] = {"psnr": methods.psnr(image, reference), "ssim": methods.ssim(image, reference)}
                    print(f"{scene.name:<30} {name:<18} {row[name]['psnr']:8.2f} {row[name]['ssim']:6.3f}", flush=True)
                rows.append(row)
    methods.report_against_ceiling(rows, args.out, "llssim_fidelity.json")


if __name__ == "__main__":
    main()
