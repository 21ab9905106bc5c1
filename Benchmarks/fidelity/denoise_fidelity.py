"""Denoising fidelity harness: Moiré's denoiser beside the simple tools on simulated time-lapses with a
known noise-free truth.

Scenes (timelapse.py): filaments, puncta and cells, static and moving, 5–100 photoelectrons at the
brightest pixel, random optics, gain, read noise and background. Methods, side by side on the same
frames:
- noisy: the raw frame;
- gaussian: a Gaussian filter whose σ an oracle picks per scene against the truth (a tuned filter);
- bm3d: BM3D (PyPI `bm3d`) after the generalized Anscombe transform, with the closed-form
  approximation of the exact unbiased inverse (Mäkitalo & Foi 2013);
- average: the causal mean of the frames so far (static scenes: all of them, the 16-frame average at
  the last frame) or of the last 4 (moving scenes);
- Moiré through `moire denoise` as a user runs it, given the camera's noise model: frozen (the
  shipped model with temporal context, no adaptation), adapted (the default: shipped model, temporal
  context, adapted on every frame) and single-frame (`--context none`: no context, from the shipped
  single-frame model, adapted on every frame).
Figures: PSNR of the last frame and the mean over the second half, against the truth (peak of the
truth); for moving puncta the centroid error of the isolated puncta in the last frame.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timelapse import OFFSET_ADU, TimeLapse, simulate  # noqa: E402


def make_scenes(count, seed, n, frames):
    rng = np.random.default_rng(seed)
    kinds = [("filaments", "static"), ("puncta", "static"), ("cells", "static"), ("puncta", "moving"),
             ("filaments", "moving"), ("cells", "moving")]
    photon_levels = [5, 20, 100]
    scenes = []
    for i in range(count):
        specimen, motion = kinds[i % len(kinds)]
        photons = photon_levels[(i // len(kinds)) % len(photon_levels)]
        scenes.append(TimeLapse(
            name=f"s{i:02d}-{specimen}-{motion}-{photons}e", specimen=specimen, motion=motion,
            photons=float(photons), na=float(rng.uniform(1.2, 1.49)), emission_nm=float(rng.uniform(510, 680)),
            background=float(rng.uniform(0.5, 3) * photons / 20), gain=float(rng.uniform(0.5, 2.5)),
            read_noise_e=float(rng.uniform(1.0, 2.0)), seed=int(rng.integers(1 << 31)), frames=frames, n=n))
    return scenes


def psnr(img, truth):
    peak = truth.max() - truth.min()
    mse = np.mean((img - truth) ** 2)
    return float(10 * np.log10(peak * peak / max(mse, 1e-30)))


def gaussian(img, sigma):
    n = img.shape[0]
    f = np.fft.fftfreq(2 * n)
    fx, fy = np.meshgrid(f, f)
    padded = np.pad(img, ((0, n), (0, n)), mode="symmetric")
    out = np.real(np.fft.ifft2(np.fft.fft2(padded) * np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))))
    return out[:n, :n]


def tuned_gaussian(frame, truth):
    return max((gaussian(frame, s) for s in np.arange(0.4, 4.01, 0.2)), key=lambda d: psnr(d, truth))


def bm3d_poisson_gaussian(frame_e, read_noise_e):
    import bm3d
    s2 = read_noise_e ** 2
    z = 2 * np.sqrt(np.maximum(frame_e + 3 / 8 + s2, 0))
    d = np.maximum(bm3d.bm3d(z, sigma_psd=1.0), 1e-3)
    r = np.sqrt(1.5)
    inverse = d ** 2 / 4 + r / 4 / d - 11 / 8 / d ** 2 + 5 * r / 8 / d ** 3 - 1 / 8 - s2
    return np.maximum(inverse, 0)


def causal_average(frames_e, t, window):
    start = 0 if window is None else max(0, t + 1 - window)
    return frames_e[start:t + 1].mean(axis=0)


def moire_denoise(binary, raw, scene, extra, workdir, label):
    import tifffile
    source = os.path.join(workdir, f"raw-{raw.shape[0]}-planes.tif")
    if not os.path.exists(source):
        tifffile.imwrite(source, raw, photometric="minisblack")
    out = os.path.join(workdir, f"{label}.ome.tif")
    command = [binary, "denoise", source, "--out", out, "--overwrite", "--noise", scene.noise_argument(), *extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-400:]}")
    frames = tifffile.imread(out).astype(float).reshape(raw.shape)
    return (frames - OFFSET_ADU) / scene.gain


def centroid_error(frame, truth_frame, positions):
    """Mean distance between the centroids of frame and truth around each isolated punctum (radius 3 px)."""
    if positions is None or len(positions) == 0:
        return None
    errors = []
    yy, xx = np.mgrid[-3:4, -3:4]
    inside = xx ** 2 + yy ** 2 <= 9
    for x, y in positions:
        cx, cy = int(round(x)), int(round(y))

        def centroid(img):
            patch = img[cy - 3:cy + 4, cx - 3:cx + 4]
            weights = np.where(inside, np.clip(patch - np.median(patch), 0, None), 0)
            total = weights.sum()
            if total <= 0:
                return np.array([np.nan, np.nan])
            return np.array([(weights * xx).sum() / total + cx, (weights * yy).sum() / total + cy])

        errors.append(np.linalg.norm(centroid(frame) - centroid(truth_frame)))
    return float(np.nanmean(errors))


METHODS = ["noisy", "gaussian", "bm3d", "average", "moire-frozen", "moire-adapted", "moire-single-frame",
           "moire-one-plane"]
MOIRE_ARGUMENTS = {
    "moire-frozen": ["--first-steps", "0", "--adapt-steps", "0"],
    "moire-adapted": [],
    "moire-single-frame": ["--context", "none"],
    # The last frame saved alone as a one-plane file and denoised with the defaults: what a user
    # who has one image gets (no earlier frames to adapt on or to use as context).
    "moire-one-plane": [],
}
ONE_PLANE_METHODS = {"moire-one-plane"}


def evaluate(scene, binary, methods):
    raw, truth, tracks = simulate(scene)
    frames_e = (raw.astype(float) - OFFSET_ADU) / scene.gain
    last = scene.frames - 1
    half = range(scene.frames // 2, scene.frames)
    window = None if scene.motion == "static" else 4
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        stacks = {m: moire_denoise(binary, raw[last:] if m in ONE_PLANE_METHODS else raw, scene,
                                   MOIRE_ARGUMENTS[m], workdir, m)
                  for m in methods if m in MOIRE_ARGUMENTS}
    for method in methods:
        def frame_at(t):
            if method == "noisy":
                return frames_e[t]
            if method == "gaussian":
                return tuned_gaussian(frames_e[t], truth[t])
            if method == "bm3d":
                return bm3d_poisson_gaussian(frames_e[t], scene.read_noise_e)
            if method == "average":
                return causal_average(frames_e, t, window)
            if method in ONE_PLANE_METHODS:
                return stacks[method][t - last]
            return stacks[method][t]
        last_frame = frame_at(last)
        last_only = method == "bm3d" or method in ONE_PLANE_METHODS
        second_half = [psnr(last_frame, truth[last])] if last_only else [psnr(frame_at(t), truth[t]) for t in half]
        results[method] = {
            "psnr_last": psnr(last_frame, truth[last]),
            "psnr_mean": float(np.mean(second_half)),
            "centroid_px": centroid_error(last_frame, truth[last], tracks[last] if tracks is not None else None),
        }
    return results


def summarise(rows, methods):
    lines = []
    header = f"{'scene':34s}" + "".join(f"{m:>15s}" for m in methods)
    lines.append("PSNR of the last frame (dB)")
    lines.append(header)
    for r in rows:
        lines.append(f"{r['scene']['name']:34s}" + "".join(f"{r['results'][m]['psnr_last']:15.2f}" for m in methods))
    for photons in sorted({r["scene"]["photons"] for r in rows}):
        for motion in ("static", "moving"):
            subset = [r for r in rows if r["scene"]["photons"] == photons and r["scene"]["motion"] == motion]
            if subset:
                lines.append(f"{'mean ' + motion + f' {photons:g} e':34s}" + "".join(
                    f"{np.mean([r['results'][m]['psnr_last'] for r in subset]):15.2f}" for m in methods))
    moving = [r for r in rows if r["scene"]["specimen"] == "puncta" and r["scene"]["motion"] == "moving"]
    if moving:
        lines.append("")
        lines.append("centroid error of isolated moving puncta, last frame (px)")
        lines.append(header)
        for r in moving:
            lines.append(f"{r['scene']['name']:34s}" + "".join(
                f"{r['results'][m]['centroid_px']:15.3f}" for m in methods))
    return "\n".join(lines)


def plot(rows, methods, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, motion in zip(axes, ("static", "moving")):
        subset = [r for r in rows if r["scene"]["motion"] == motion]
        for m in methods:
            ax.scatter([r["scene"]["photons"] * (1 + 0.03 * methods.index(m)) for r in subset],
                       [r["results"][m]["psnr_last"] for r in subset], label=m, s=14)
        ax.set_xscale("log")
        ax.set_xlabel("photoelectrons at the brightest pixel")
        ax.set_title(f"{motion} scenes, last frame")
    axes[0].set_ylabel("PSNR against the truth (dB)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_results(folder, stem, rows, table):
    """Writes FOLDER/STEM.json (the rows) and FOLDER/STEM.txt (the table)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{stem}.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(folder, f"{stem}.txt"), "w") as f:
        f.write(table + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moire", required=True, help="path of the moire binary")
    parser.add_argument("--scenes", type=int, default=18)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=None, help="folder for the table, JSON and plot")
    parser.add_argument("--extra", default="", help="extra moire denoise arguments for every Moiré method")
    parser.add_argument("--photons", default="", help="comma-separated photon levels to evaluate (default: all)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    for m in MOIRE_ARGUMENTS:
        MOIRE_ARGUMENTS[m] = MOIRE_ARGUMENTS[m] + args.extra.split()
    rows = []
    levels = {float(p) for p in args.photons.split(",") if p}
    for scene in make_scenes(args.scenes, args.seed, args.size, args.frames):
        if levels and scene.photons not in levels:
            continue
        results = evaluate(scene, args.moire, methods)
        rows.append({"scene": scene.as_dict(), "results": results})
        print(f"{scene.name}: " + ", ".join(f"{m} {results[m]['psnr_last']:.2f}" for m in methods), flush=True)
    table = summarise(rows, methods)
    print()
    print(table)
    if args.out:
        write_results(args.out, "denoise-fidelity", rows, table)
        if plot(rows, methods, os.path.join(args.out, "denoise-fidelity.png")):
            print(f"plot: {os.path.join(args.out, 'denoise-fidelity.png')}")


if __name__ == "__main__":
    main()
