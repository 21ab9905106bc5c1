"""Exits 0 when an OME-Zarr recording's level 0 equals an OME-TIFF recording plane for plane.

Arguments: the store, the TIFF. Planes are compared in the order (t, c, z): the acquisition order when a plane has no angles or phases (SR, volumes).
"""
import sys

import numpy as np
import tifffile
import zarr

store, tiff = sys.argv[1], sys.argv[2]
level0 = np.asarray(zarr.open_group(store, mode="r")["0"])
planes = tifffile.imread(tiff)
height, width = level0.shape[-2:]
from_zarr = level0.reshape(-1, height, width)
from_tiff = planes.reshape(-1, height, width)
if from_zarr.shape != from_tiff.shape or not np.array_equal(from_zarr, from_tiff):
    sys.exit(f"differ: zarr {from_zarr.shape} {from_zarr.dtype}, tiff {from_tiff.shape} {from_tiff.dtype}")
print("equal", from_zarr.shape)
