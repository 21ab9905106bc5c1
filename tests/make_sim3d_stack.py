#!/usr/bin/env python3
"""An independent 3D-SIM forward model for the integration check: sub-resolution beads under a
three-beam pattern fixed to the focal plane (order 1: lateral k, axial cos(2π kz Δz); order 2: 2k),
imaged through a Gaussian 3D PSF, Poisson noise, offset 100 ADU. Planes z × angle × phase (phase
fastest), written as a float32 TIFF. Arguments: OUT N NZ. Prints k and kz (cycles/µm) as JSON."""
import json, math, sys
import numpy as np
import tifffile

out, n, nz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
px, dz, lam_ex, n_imm = 0.08, 0.125, 0.488, 1.518
k = 1 / 0.42                                           # order-1 period 0.42 µm
kz = n_imm / lam_ex - math.sqrt((n_imm / lam_ex) ** 2 - k ** 2)
m1, m2, first = 0.8, 0.6, 12.0
sl, sa = 0.095, 0.30                                   # Gaussian PSF σ lateral / axial, µm
rng = np.random.default_rng(3)
beads = np.column_stack([rng.uniform(6, n - 6, 400) * px, rng.uniform(6, n - 6, 400) * px,
                         (rng.uniform(-0.35, 0.35, 400) * nz) * dz])
yy, xx = np.mgrid[0:n, 0:n] * px
planes = []
for zi in range(nz):
    zf = (zi - nz // 2) * dz
    for a in range(3):
        th = math.radians(first + a * 60)
        kx, ky = k * math.cos(th), k * math.sin(th)
        for p in range(5):
            phi = 2 * math.pi * p / 5
            img = np.zeros((n, n))
            for bx, by, bz in beads:
                d = bz - zf
                if abs(d) > 4 * sa:
                    continue
                arg = 2 * math.pi * (kx * bx + ky * by) + phi
                ex = 1 + m1 * math.cos(arg) * math.cos(2 * math.pi * kz * d) + m2 * math.cos(2 * arg)
                img += ex * math.exp(-d * d / (2 * sa * sa)) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sl * sl))
            planes.append(100 + rng.poisson(300 * img).astype(np.float32))
tifffile.imwrite(out, np.array(planes, dtype=np.float32))
print(json.dumps({"k": k, "kz": kz, "orientations": [first + 60 * a for a in range(3)]}))
