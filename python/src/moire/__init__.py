"""Moiré's Python client: live frames, daemon control, recordings (docs/wire-format.md)."""
from .control import ControlReply, Daemon, DaemonError, DaemonInfo, default_control_endpoint
from .recording import Recording
from .subscriber import AsyncSubscriber, Subscriber
from .wire import DeviceState, Frame, FrameHeader, RunStart, RunStop, WireError, decode

__all__ = [
    "AsyncSubscriber", "ControlReply", "Daemon", "DaemonError", "DaemonInfo", "DeviceState", "Frame",
    "FrameHeader", "Recording", "RunStart", "RunStop", "Subscriber", "WireError", "decode",
    "default_control_endpoint",
]
__version__ = "0.1.0"
