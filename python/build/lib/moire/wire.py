"""Wire format v1: three-part messages [topic][JSON header][payload] (docs/wire-format.md)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

WIRE_VERSION = 1
_DTYPES = {"uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}


class WireError(ValueError):
    """A message that is not wire format v1 (wrong parts, bad JSON, payload of the wrong size)."""


@dataclass(frozen=True)
class DeviceState:
    """Device state during an exposure: modulator pattern (−1 uniform, −2 idle), lasers, z, exposure."""
    pattern: int = -1
    lasers: List[str] = field(default_factory=list)
    z_um: float = 0.0
    exposure_ms: float = 0.0


@dataclass(frozen=True)
class FrameHeader:
    """A frame's header. `seq` is contiguous per run and stream: a gap is a lost message."""
    stream: str
    run: str
    seq: int
    index: int
    t: int
    c: int
    z: int
    angle: int
    phase: int
    channel: str
    width: int
    height: int
    pixel: str
    pixel_size_um: float
    exposure_start_ns: int
    published_ns: int
    missing: bool
    missing_reason: Optional[str]
    state: DeviceState
    depth: Optional[int]
    inputs: Optional[List[int]]
    params: Dict[str, str]

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self.pixel]

    @property
    def shape(self) -> tuple:
        return (self.depth, self.height, self.width) if self.depth else (self.height, self.width)

    @property
    def byte_count(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    @staticmethod
    def from_json(h: Dict[str, Any]) -> "FrameHeader":
        try:
            s = h.get("state") or {}
            header = FrameHeader(
                stream=str(h.get("stream", "raw")), run=str(h["run"]), seq=int(h["seq"]), index=int(h["index"]),
                t=int(h["t"]), c=int(h["c"]), z=int(h["z"]), angle=int(h["angle"]), phase=int(h["phase"]),
                channel=str(h["channel"]), width=int(h["width"]), height=int(h["height"]), pixel=str(h["pixel"]),
                pixel_size_um=float(h["pixelSizeUm"]), exposure_start_ns=int(h.get("exposureStartNs", 0)),
                published_ns=int(h.get("publishedNs", 0)), missing=bool(h.get("missing", False)),
                missing_reason=h.get("missingReason"),
                state=DeviceState(int(s.get("pattern", -1)), list(s.get("lasers", [])), float(s.get("zUm", 0)),
                                  float(s.get("exposureMs", 0))),
                depth=int(h["depth"]) if h.get("depth") is not None else None,
                inputs=[int(i) for i in h["inputs"]] if h.get("inputs") is not None else None,
                params={str(k): str(v) for k, v in (h.get("params") or {}).items()})
        except (KeyError, TypeError, ValueError) as e:
            raise WireError(f"malformed frame header: {e!r}") from e
        if header.pixel not in _DTYPES:
            raise WireError(f"unknown pixel type {header.pixel!r}")
        if header.width <= 0 or header.height <= 0 or (header.depth is not None and header.depth <= 0):
            raise WireError(f"impossible frame size {header.width}×{header.height}×{header.depth}")
        return header


@dataclass(frozen=True)
class Frame:
    """A frame: its header and its pixels (None when the frame is missing)."""
    header: FrameHeader
    image: Optional[np.ndarray]

    @property
    def scale_um(self) -> tuple:
        """Pixel size (µm) along y, x; derived SR frames are on a 2× finer grid."""
        s = self.header.pixel_size_um
        return (s, s)


@dataclass(frozen=True)
class RunStart:
    """`start`: what a client needs to interpret a run's frames."""
    run: str
    protocol_name: str
    protocol_file: str
    mode: str
    rig: str
    objective_na: float
    magnification: float
    channels: List[Dict[str, Any]]
    shape: Dict[str, int]
    pixel: str
    pixel_size_um: float
    started_ns: int
    raw: Dict[str, Any]


@dataclass(frozen=True)
class RunStop:
    """`stop`: why the run ended and what it produced."""
    run: str
    reason: str
    error: Optional[str]
    frames: int
    missing: int
    planned: int
    stopped_ns: int
    pool_exhausted: Optional[int]


Message = Union[RunStart, RunStop, Frame]


def decode(parts: Sequence[bytes]) -> Message:
    """One multipart message of wire format v1 → RunStart, RunStop or Frame (pixels as a read-only view)."""
    if len(parts) != 3:
        raise WireError(f"expected 3 message parts [topic][header][payload], got {len(parts)}")
    topic, header, payload = bytes(parts[0]).decode("utf-8", "replace"), parts[1], parts[2]
    try:
        h = json.loads(bytes(header))
    except ValueError as e:
        raise WireError(f"header is not JSON: {e}") from e
    if not isinstance(h, dict):
        raise WireError("header is not a JSON object")
    if topic == "run":
        try:
            if h.get("event") == "start":
                if int(h.get("wire", WIRE_VERSION)) != WIRE_VERSION:
                    raise WireError(f"wire version {h.get('wire')} (this client reads {WIRE_VERSION})")
                return RunStart(
                    run=h["run"], protocol_name=h.get("protocolName", ""), protocol_file=h.get("protocolFile", ""),
                    mode=h.get("mode", ""), rig=h.get("rig", ""), objective_na=float(h.get("objectiveNA", 0)),
                    magnification=float(h.get("magnification", 0)), channels=list(h.get("channels", [])),
                    shape={str(k): int(v) for k, v in h.get("shape", {}).items()}, pixel=h.get("pixel", "uint16"),
                    pixel_size_um=float(h.get("pixelSizeUm", 0)), started_ns=int(h.get("startedNs", 0)), raw=h)
            if h.get("event") == "stop":
                return RunStop(
                    run=h["run"], reason=h["reason"], error=h.get("error"), frames=int(h.get("frames", 0)),
                    missing=int(h.get("missing", 0)), planned=int(h.get("planned", 0)),
                    stopped_ns=int(h.get("stoppedNs", 0)), pool_exhausted=h.get("poolExhausted"))
        except (KeyError, TypeError, ValueError) as e:
            raise WireError(f"malformed run message: {e!r}") from e
        raise WireError(f"unknown run event {h.get('event')!r}")
    frame_header = FrameHeader.from_json(h)
    if topic != f"{frame_header.stream}.{frame_header.channel}":
        raise WireError(f"topic {topic!r} does not match the header's stream and channel")
    if frame_header.missing:
        return Frame(frame_header, None)
    if len(payload) != frame_header.byte_count:
        raise WireError(f"payload is {len(payload)} bytes; the header says {frame_header.byte_count}")
    image = np.frombuffer(payload, dtype=frame_header.dtype).reshape(frame_header.shape)
    return Frame(frame_header, image)
