#!/usr/bin/env python3
"""Peer for `moire bench llsm`: numpy deskew (the same shear with linear interpolation along x) and
scikit-image's richardson_lucy (10 iterations) on the same raw stack and PSF.
Arguments: RAW PSF NX NY NZ PX PY PZ ANGLE_DEG STEP_UM PIXEL_UM ITERATIONS. Prints one JSON line."""
import json, sys, time, math
try:
    import numpy as np
    from skimage.restoration import richardson_lucy
except ImportError as e:
    print(json.dumps({"error": str(e)})); sys.exit(0)
raw_path, psf_path = sys.argv[1], sys.argv[2]
nx, ny, nz, px, py, pz = map(int, sys.argv[3:9])
angle, step, pixel = map(float, sys.argv[9:12]); iters = int(sys.argv[12])
raw = np.fromfile(raw_path, dtype="<f4").reshape(nz, ny, nx)
psf = np.fromfile(psf_path, dtype="<f4").reshape(pz, py, px)
t0 = time.perf_counter()
shift = step * math.cos(math.radians(angle)) / pixel
w = nx + int(math.floor(nz * step * abs(math.cos(math.radians(angle))) / pixel))
out = np.full((nz, ny, w), 100.0, dtype=np.float32)
xs = np.arange(w, dtype=np.float64)
for z in range(nz):
    u = xs - z * shift
    ok = (u >= 0) & (u <= nx - 1)
    u0 = np.minimum(np.floor(u[ok]).astype(int), nx - 2); f = (u[ok] - u0).astype(np.float32)
    out[z][:, ok] = raw[z][:, u0] * (1 - f) + raw[z][:, u0 + 1] * f
t1 = time.perf_counter()
img = np.maximum(out - np.percentile(out, 1), 0)
richardson_lucy(img, psf, num_iter=iters, clip=False)
t2 = time.perf_counter()
print(json.dumps({"deskew_s": t1 - t0, "deconvolution_s": t2 - t1, "total_s": t2 - t0, "shape": list(out.shape)}))
