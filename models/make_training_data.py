"""Simulated time-lapses to train the shipped starting model of the denoiser (models/README.md).

Uses the harness's independent forward model (Benchmarks/fidelity/timelapse.py) with seeds that the
harness never draws (its scenes come from a seeded generator; these seeds start at 10⁹), one camera
(offset 100 ADU, gain 1 ADU/e⁻, read noise 1.5 e⁻), photons log-uniform over 3–300 at the brightest
pixel, filaments, puncta and cells, static and moving. Writes uint16 TIFF stacks, and beside them in
truth/ the noise-free images of the same frames in ADU (float32 TIFF stacks of the same names), the
targets of supervised training (`moire train --targets`).
"""
import argparse
import os
import sys

import numpy as np
import tifffile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Benchmarks", "fidelity"))
from timelapse import OFFSET_ADU, TimeLapse, simulate  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "truth"), exist_ok=True)
    rng = np.random.default_rng(1_000_000_007)
    for i in range(args.count):
        specimen = ["filaments", "puncta", "cells"][i % 3]
        motion = ["static", "moving"][(i // 3) % 2]
        photons = float(np.exp(rng.uniform(np.log(3), np.log(300))))
        scene = TimeLapse(
            name=f"train-{i:03d}", specimen=specimen, motion=motion, photons=photons,
            na=float(rng.uniform(1.1, 1.49)), emission_nm=float(rng.uniform(500, 700)),
            background=float(rng.uniform(0.2, 3) * photons / 20), gain=1.0, read_noise_e=1.5,
            seed=1_000_000_000 + i, frames=args.frames, n=args.size)
        raw, truth, _ = simulate(scene)
        name = f"{scene.name}-{specimen}-{motion}.tif"
        tifffile.imwrite(os.path.join(args.out, name), raw)
        # The expected reading of each pixel: photoelectrons times the gain, above the offset.
        clean = (truth * scene.gain + OFFSET_ADU).astype(np.float32)
        tifffile.imwrite(os.path.join(args.out, "truth", name), clean)
    print(f"wrote {args.count} stacks to {args.out}")


if __name__ == "__main__":
    main()
