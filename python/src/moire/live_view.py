"""A live napari view of a Moiré result bus: one image layer per stream and channel (raw, sr, wf,
den, dcv, vol, sr3d, mip), in micrometres, updated as frames arrive.

`LiveView` works on any napari viewer model (`napari.Viewer`, or `napari.components.ViewerModel`
without Qt): call `poll()` from the viewer's thread and it shows the newest frame of each layer.
The dock widget around it is `moire.live_view_widget` (it needs Qt; this module does not).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from .subscriber import Subscriber
from .wire import Frame, RunStart, RunStop

#: Streams shown by default: everything the daemon publishes that is an image.
STREAMS: Tuple[str, ...] = ("raw", "sr", "wf", "den", "dcv", "vol", "sr3d", "mip")

#: Colour maps by emission (nm): the usual fluorophore colours; grey without an emission.
_COLOURS = ((480, "cyan"), (560, "green"), (600, "yellow"), (650, "red"), (10_000, "magenta"))


def layer_name(frame: Frame) -> str:
    """`stream.channel` (the wire's topic without its trailing dot)."""
    return f"{frame.header.stream}.{frame.header.channel}"


def frame_scale(frame: Frame) -> Tuple[float, ...]:
    """The frame's pixel (or voxel) size in µm, one value per image axis (z first for volumes)."""
    y, x = frame.scale_um
    image = frame.image
    if image is not None and image.ndim == 3:
        voxel_z = float(frame.header.params.get("voxelZUm", 0) or 0)
        return (voxel_z if voxel_z > 0 else x, y, x)
    return (y, x)


def contrast(image: np.ndarray) -> Tuple[float, float]:
    """Contrast limits from the 0.1 and 99.9 percentiles (a few hot pixels do not set them)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(finite, [0.1, 99.9])
    if high <= low:
        high = low + 1
    return (float(low), float(high))


class LiveView:
    """Shows a result bus in a napari viewer: each `poll()` applies the newest frame of every
    layer waiting on the socket (older ones are dropped: the view follows the run, it does not
    record it). Layers get their physical scale, contrast from their first frame (then left as the
    user sets them), and a colour map from the channel's emission."""

    def __init__(self, viewer: Any, endpoint: str, streams: Iterable[str] = STREAMS) -> None:
        self.viewer = viewer
        self.endpoint = endpoint
        self.subscriber = Subscriber(endpoint, topics=[f"{s}." for s in streams], timeout=0)
        self.start: Optional[RunStart] = None
        self.stop: Optional[RunStop] = None
        #: Frames shown per layer, and frames received (shown or superseded).
        self.shown: Dict[str, int] = {}
        self.received = 0
        self._emission: Dict[str, float] = {}

    def poll(self, max_messages: int = 1000) -> int:
        """Applies what is waiting (at most `max_messages` messages); returns the frames shown."""
        newest: Dict[str, Frame] = {}
        for _ in range(max_messages):
            message = self.subscriber.receive(timeout=0)
            if message is None:
                break
            if isinstance(message, RunStart):
                self.start, self.stop = message, None
                self._emission = {str(c.get("name")): float(c.get("emissionNm") or 0) for c in message.channels}
            elif isinstance(message, RunStop):
                self.stop = message
            elif isinstance(message, Frame) and message.image is not None:
                self.received += 1
                newest[layer_name(message)] = message
        for name, frame in newest.items():
            self._show(name, frame)
        return len(newest)

    def _show(self, name: str, frame: Frame) -> None:
        image = frame.image
        assert image is not None
        metadata = {"seq": frame.header.seq, "t": frame.header.t, "run": frame.header.run}
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer.data.shape == image.shape:
                layer.data = image
                layer.metadata.update(metadata)
                self.shown[name] += 1
                return
            self.viewer.layers.remove(name)  # a new run with another shape
        self.viewer.add_image(
            image, name=name, scale=frame_scale(frame), contrast_limits=contrast(image),
            colormap=self._colormap(frame.header.channel), blending="additive", metadata=metadata)
        self.shown[name] = 1

    def _colormap(self, channel: str) -> str:
        emission = self._emission.get(channel, 0)
        if emission <= 0:
            return "gray"
        return next(name for limit, name in _COLOURS if emission < limit)

    def close(self) -> None:
        self.subscriber.close()

