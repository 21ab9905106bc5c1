"""Reads back a Moiré OME-Zarr recording written by OMEZarrTests (zarr-python, ome-zarr-py, napari-ome-zarr).

Arguments: store path, width, height, planes written, the missing plane. Prints what ome-zarr found as JSON.
"""
import sys, json, warnings, numpy as np, zarr

# A file in the store that is not part of the hierarchy makes zarr-python warn: not a clean store.
warnings.filterwarnings("error", message=".*not recognized as a component")
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
path, w, h, written, missing = sys.argv[1], *map(int, sys.argv[2:6])
root = zarr.open_group(path, mode="r")
full, half = root["0"], root["1"]
assert full.shape == (2, 9, 1, h, w) and full.dtype == np.uint16, (full.shape, full.dtype)
assert half.shape == (2, 9, 1, h // 2, w // 2), half.shape
for i in range(18):
    t, c = divmod(i, 9)
    expected = ((np.arange(w * h) * 7 + i * 131) % 65536).astype(np.uint16).reshape(h, w)
    if i >= written or i == missing:
        expected = np.zeros((h, w), np.uint16)
    plane = full[t, c, 0]
    assert np.array_equal(plane, expected), f"plane {i}"
    blocks = expected.astype(np.uint32).reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    assert np.array_equal(half[t, c, 0], ((blocks + 2) // 4).astype(np.uint16)), f"level 1 of plane {i}"
node = Reader(parse_url(path))()
image = next(iter(node))
axes = [a["name"] for a in image.metadata["axes"]]
scale = image.metadata["coordinateTransformations"][1][0]["scale"]
# napari opens it through napari-ome-zarr (its reader, then napari's own layer checks: no Qt needed).
import contextlib, napari
from napari.layers.utils.stack_utils import split_channels
from napari_ome_zarr import napari_get_reader
with contextlib.redirect_stdout(sys.stderr):  # the reader prints the group's attributes
    (data, meta, kind), = napari_get_reader(path)(path)
channel_axis = meta.pop("channel_axis")
layers = [napari.layers.Image(d, **m) for d, m, _ in split_channels(data, channel_axis, **meta)]
first = layers[0]
assert first.multiscale and np.array_equal(np.asarray(first.data[0][0, 0]), np.asarray(full[0, 0, 0])), "napari's level 0"
print(json.dumps({"axes": axes, "levels": len(image.data), "scale1": scale, "napariLayers": len(layers),
                  "napariLevels": len(first.data), "napariScale": [float(v) for v in first.scale]}))
