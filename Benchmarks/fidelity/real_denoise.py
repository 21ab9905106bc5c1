"""Real-data denoising harness: Moiré beside the simple tools on the FMD test set (real confocal,
two-photon and widefield frames, 8-bit, with averaged ground truth; fetched by fetch_fmd.py).

Each of the 12 fields has four noisy frames of the same scene and one ground truth (the average of
50 frames). Side by side, scored on the fourth frame (PSNR with the 8-bit range, 255, as the FMD
benchmark does; no fit):
- noisy: the fourth frame;
- gaussian: a Gaussian filter whose σ an oracle picks against the truth;
- bm3d: BM3D (PyPI `bm3d`) after the generalized Anscombe transform, with the Poisson–Gaussian
  parameters fitted against the truth (an oracle: the peer gets the noise model Moiré has to estimate);
- average: the mean of the four frames;
- moire: `moire denoise STACK --noise auto` on the four frames as a time-lapse, as a user runs it
  (noise model from frame differences, temporal context, the shipped model adapted);
- moire-one-frame: `moire denoise` on the fourth frame alone (its noise from that frame), scored on it
  like every other column.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from denoise_fidelity import gaussian, write_results  # noqa: E402
from fetch_fmd import fetch  # noqa: E402

METHODS = ["noisy", "gaussian", "bm3d", "average", "moire", "moire-one-frame"]


def psnr(img, truth):
    return float(10 * np.log10(255.0 ** 2 / np.mean((img - truth) ** 2)))


def read_png(path):
    from PIL import Image
    return np.asarray(Image.open(path)).astype(float)


def fields(folder):
    names = sorted({f.rsplit("_", 1)[0] for f in os.listdir(os.path.join(folder, "raw")) if f.endswith(".png")})
    for name in names:
        frames = np.stack([read_png(os.path.join(folder, "raw", f"{name}_{i}.png")) for i in range(1, 5)])
        truth = read_png(os.path.join(folder, "gt", f"{name}_1.png"))
        yield name, frames, truth


def oracle_noise(frame, truth):
    """variance = a·truth + b fitted on unclipped pixels against the truth."""
    usable = (frame > frame.min()) & (frame < frame.max())
    edges = np.unique(np.quantile(truth[usable], np.linspace(0.02, 0.98, 12)))
    points = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = usable & (truth >= low) & (truth < high)
        if inside.sum() > 100:
            points.append((truth[inside].mean(), (frame - truth)[inside].var()))
    points = np.array(points)
    a, b = np.polyfit(points[:, 0], points[:, 1], 1)
    return max(a, 1e-3), b


def bm3d_real(frame, truth):
    import bm3d
    a, b = oracle_noise(frame, truth)
    # In units of a (photon-like counts): variance = counts + (b / a²), Poisson–Gaussian.
    counts = frame / a
    read_variance = b / (a * a)
    z = 2 * np.sqrt(np.maximum(counts + 3 / 8 + read_variance, 0))
    d = np.maximum(bm3d.bm3d(z, sigma_psd=1.0), 1e-3)
    r = np.sqrt(1.5)
    inverse = d ** 2 / 4 + r / 4 / d - 11 / 8 / d ** 2 + 5 * r / 8 / d ** 3 - 1 / 8 - read_variance
    return np.maximum(inverse, 0) * a


EXTRA_ARGUMENTS = []


def moire(binary, frames, workdir, label):
    import tifffile
    source = os.path.join(workdir, f"{label}.tif")
    tifffile.imwrite(source, frames.astype(np.uint8), photometric="minisblack")
    out = os.path.join(workdir, f"{label}.den.ome.tif")
    done = subprocess.run([binary, "denoise", source, "--out", out, "--overwrite", "--noise", "auto",
                           *EXTRA_ARGUMENTS],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"moire denoise failed on {label}: {done.stderr.strip()[-400:]}")
    noise = next((line for line in done.stdout.splitlines() if line.startswith("noise model")), "")
    return tifffile.imread(out).astype(float).reshape(frames.shape), noise


def evaluate(name, frames, truth, binary, methods):
    results = {}
    noise = ""
    with tempfile.TemporaryDirectory() as workdir:
        for method in methods:
            if method == "noisy":
                score = psnr(frames[3], truth)
            elif method == "gaussian":
                score = max(psnr(gaussian(frames[3], s), truth) for s in np.arange(0.4, 3.01, 0.2))
            elif method == "bm3d":
                score = psnr(bm3d_real(frames[3], truth), truth)
            elif method == "average":
                score = psnr(frames.mean(axis=0), truth)
            elif method == "moire":
                denoised, noise = moire(binary, frames, workdir, "stack")
                score = psnr(denoised[3], truth)
            else:
                denoised, _ = moire(binary, frames[3:4], workdir, "one")
                score = psnr(denoised[0], truth)
            results[method] = score
    return results, noise


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moire", required=True, help="path of the moire binary")
    parser.add_argument("--data", default=None, help="FMD test set folder (raw/, gt/); fetched when absent")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--only", default="", help="comma-separated field names (default: all 12)")
    parser.add_argument("--out", default=None, help="folder for the table and JSON")
    parser.add_argument("--extra", default="", help="extra moire denoise arguments for every Moiré method")
    args = parser.parse_args()
    EXTRA_ARGUMENTS.extend(args.extra.split())
    folder = args.data or fetch(os.path.join(HERE, "data", "FMD_testset"))
    if folder is None:
        print("FMD test set unavailable (see fetch_fmd.py); real-data harness skipped", file=sys.stderr)
        sys.exit(0)
    methods = args.methods.split(",")
    only = set(filter(None, args.only.split(",")))
    rows = []
    for name, frames, truth in fields(folder):
        if only and name not in only:
            continue
        results, noise = evaluate(name, frames, truth, args.moire, methods)
        rows.append({"field": name, "results": results, "noise": noise})
        print(f"{name}: " + ", ".join(f"{m} {results[m]:.2f}" for m in methods) + f"   [{noise}]", flush=True)
    lines = ["PSNR on the FMD test set (dB, peak 255)", f"{'field':22s}" + "".join(f"{m:>16s}" for m in methods)]
    for r in rows:
        lines.append(f"{r['field']:22s}" + "".join(f"{r['results'][m]:16.2f}" for m in methods))
    for kind in ("Confocal", "TwoPhoton", "WideField", ""):
        subset = [r for r in rows if r["field"].startswith(kind)]
        if subset:
            lines.append(f"{'mean ' + (kind or 'all'):22s}" + "".join(
                f"{np.mean([r['results'][m] for r in subset]):16.2f}" for m in methods))
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        write_results(args.out, "real-denoise", rows, table)


if __name__ == "__main__":
    main()
