"""Moiré recordings (OME-TIFF, docs/recording-format.md): pixels through tifffile, the run's layout
and per-plane records from the OME-XML's `moire.planes/v1` annotation."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import tifffile

_OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


@dataclass(frozen=True)
class PlaneRecord:
    """One plane's record: plan coordinates, whether it was acquired, device state, timing."""
    index: int
    t: int
    c: int
    z: int
    angle: int
    phase: int
    status: str            # ok, missing, not-acquired
    lost: Optional[str]    # why a missing plane did not come
    pattern: int
    lasers: List[str]
    z_um: float
    exposure_ms: float
    start_ns: int

    @property
    def acquired(self) -> bool:
        return self.status == "ok"


def _plane(i: int, text: str) -> PlaneRecord:
    kv = dict(item.split("=", 1) for item in text.split() if "=" in item)
    return PlaneRecord(
        index=i, t=int(kv.get("t", 0)), c=int(kv.get("c", 0)), z=int(kv.get("z", 0)),
        angle=int(kv.get("angle", 0)), phase=int(kv.get("phase", 0)), status=kv.get("status", "ok"),
        lost=kv.get("lost"), pattern=int(kv.get("pattern", -1)),
        lasers=[x for x in kv.get("lasers", "").split(",") if x], z_um=float(kv.get("zUm", 0)),
        exposure_ms=float(kv.get("exposureMs", 0)), start_ns=int(kv.get("startNs", 0)))


class Recording:
    """A Moiré OME-TIFF. `array()` is (t, c, z, angles, phases, y, x) for raw recordings (planes
    that were not acquired are zeros, see `planes`); derived recordings keep their own plane order."""

    def __init__(self, path: str) -> None:
        self.path = path
        with tifffile.TiffFile(path) as tif:
            self.ome_xml: str = tif.ome_metadata or ""
            self.plane_count = len(tif.pages)
            page = tif.pages[0]
            self.height, self.width = int(page.shape[0]), int(page.shape[1])
            self.dtype = page.dtype
        root = ElementTree.fromstring(self.ome_xml) if self.ome_xml else None
        entries: Dict[str, str] = {}
        if root is not None:
            for m in root.iter(f"{_OME}M"):
                entries[m.get("K", "")] = m.text or ""
        self.layout: Dict[str, Any] = json.loads(entries["layout"]) if "layout" in entries else {}
        self.planes: List[PlaneRecord] = [
            _plane(i, entries[f"plane{i}"]) for i in range(self.plane_count) if f"plane{i}" in entries]
        pixels = root.find(f".//{_OME}Pixels") if root is not None else None
        self.pixel_size_um: Optional[float] = (
            float(pixels.get("PhysicalSizeX")) if pixels is not None and pixels.get("PhysicalSizeX") else None)

    @property
    def shape(self) -> Tuple[int, ...]:
        """(t, c, z, angles, phases, y, x) from the run's layout; (planes, y, x) without one."""
        lay = self.layout
        if not lay:
            return (self.plane_count, self.height, self.width)
        per_t = len(lay["channels"]) * lay["zPlanes"] * lay["angles"] * lay["phases"]
        t = max(1, self.plane_count // max(1, per_t))
        return (t, len(lay["channels"]), lay["zPlanes"], lay["angles"], lay["phases"], self.height, self.width)

    def array(self) -> np.ndarray:
        """Every plane, shaped as `shape` (memory-mapped when tifffile can)."""
        with tifffile.TiffFile(self.path) as tif:
            data = tif.asarray(key=range(self.plane_count)) if self.plane_count > 1 else tif.asarray()
        return np.asarray(data).reshape(self.shape)

    @property
    def missing(self) -> List[int]:
        """Indices of planes that did not come (or were not acquired)."""
        return [p.index for p in self.planes if not p.acquired]
