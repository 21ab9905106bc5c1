"""An LLS-SIM plane (one orientation, five phases) from the fidelity harness's independent numpy
forward model (Benchmarks/fidelity/forward.py): sparse filaments at 2000 photons, NA 1.023,
559 nm, |k| 0.837 of the cutoff, modulation 0.58 (a weak pattern peak beside the object's own
strong low-frequency spectrum). Writes the five 128² frames as little-endian uint16 to OUT and
prints the truth as JSON.
Usage: weak_peak_scene.py OUT"""
import json
import os
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "Benchmarks", "fidelity"))
import forward  # noqa: E402

scene = forward.Scene(
    name="filaments-sparse-5ph-2000", specimen="filaments-sparse", photons=2000.0, na=1.023, emission_nm=559.0,
    k_fraction=0.837, modulation=0.58, background=21.9, seed=1044366194, n=128, angles=1, phases=5)
raws, _, angles = forward.simulate(scene, realisations=1)
raws[0].astype("<u2").tofile(sys.argv[1])
print(json.dumps({"pixelUm": scene.pixel_um, "na": scene.na, "emissionNm": scene.emission_nm,
                  "kx": angles[0]["kx"], "ky": angles[0]["ky"], "modulation": scene.modulation,
                  "offset": forward.OFFSET_ADU}))
