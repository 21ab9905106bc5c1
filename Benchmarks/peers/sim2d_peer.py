#!/usr/bin/env python3
"""Peer for `moire bench sim2d`: napari-sim-processor's ConvSimProcessor on the same raw data.

Usage: sim2d_peer.py RAW.f32 N PIXEL_UM NA EMISSION_UM REPEATS
       sim2d_peer.py RAW.f32 N PIXEL_UM NA EMISSION_UM --serve
RAW.f32: 9 frames of N×N float32, angle-major. Prints one JSON line with milliseconds per SR frame
(the median of REPEATS); with --serve, reconstructs one SR frame per `frame` line read (interleave.py).
"""
import json, sys, time, os, io, contextlib
import importlib.util, types
import numpy as np

# The package's __init__ imports its Qt widget; load the processors without it (no napari, no Qt).
_spec = importlib.util.find_spec("napari_sim_processor")
if _spec is None:
    print(json.dumps({"error": "napari-sim-processor is not installed (pip install --no-deps napari-sim-processor)"}))
    sys.exit(0)
_pkg = types.ModuleType("napari_sim_processor")
_pkg.__path__ = list(_spec.submodule_search_locations)
sys.modules["napari_sim_processor"] = _pkg
from napari_sim_processor.processors.convSimProcessor import ConvSimProcessor

raw, n, pixel, na, em = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
serving = sys.argv[6] == "--serve"
repeats = 0 if serving else int(sys.argv[6])
img = np.fromfile(raw, dtype=np.float32).reshape(9, n, n)
p = ConvSimProcessor(angleSteps=3, phaseSteps=3)
p.N = n; p.Nx = n; p.Ny = n
p.pixelsize = pixel; p.magnification = 1.0      # camera pixel / magnification = sample pixel
p.NA = na; p.n = 1.518; p.wavelength = em; p.debug = False
with contextlib.redirect_stdout(io.StringIO()):
    t0 = time.perf_counter(); p.calibrate(img); t_cal = time.perf_counter() - t0
    p.reconstruct_rfftw(img)                     # warm-up
    if serving:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from interleave import serve
        serve({"frame": lambda: p.reconstruct_rfftw(img)},
              {"peer": "napari-sim-processor ConvSimProcessor.reconstruct_rfftw (numpy FFT)",
               "calibrate_ms": t_cal * 1000})
        sys.exit(0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); p.reconstruct_rfftw(img); times.append(time.perf_counter() - t0)
    t_rec = sorted(times)[len(times) // 2]       # the median, as moire reports its own
print(json.dumps({"peer": "napari-sim-processor ConvSimProcessor.reconstruct_rfftw (numpy FFT)",
                  "ms_per_frame": t_rec * 1000, "calibrate_ms": t_cal * 1000}))
