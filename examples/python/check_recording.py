#!/usr/bin/env python3
"""Check a Moiré OME-TIFF the way a user's Python would read it (tifffile), and print what it holds."""
import re, sys, xml.etree.ElementTree as ET
import tifffile

path = sys.argv[1]
ns = {"o": "http://www.openmicroscopy.org/Schemas/OME/2016-06"}
with tifffile.TiffFile(path) as tif:
    assert tif.is_ome, "not an OME-TIFF"
    series = tif.series[0]
    data = series.asarray()
    root = ET.fromstring(tif.ome_metadata)
pixels = root.find(".//o:Pixels", ns)
planes = root.findall(".//o:Plane", ns)
labels = [l.text for l in root.iter("{http://www.openmicroscopy.org/Schemas/Additions/2011-09}Label")]
n_planes = data.size // (data.shape[-1] * data.shape[-2])
print(f"{path}: tifffile shape {data.shape} axes {series.axes} dtype {data.dtype}; {n_planes} planes")
print(f"pixel size {pixels.get('PhysicalSizeX')} {pixels.get('PhysicalSizeXUnit')}; "
      f"SizeZ={pixels.get('SizeZ')} SizeC={pixels.get('SizeC')} SizeT={pixels.get('SizeT')}; {len(planes)} Plane elements")
p = planes[min(len(planes) - 1, 13)]
z = int(p.get("TheZ"))
print(f"plane 13: TheT={p.get('TheT')} TheZ={z} → {labels[z] if labels else 'no modulo'}; DeltaT={p.get('DeltaT')} s")
assert len(planes) == n_planes, "every plane needs its Plane element"
