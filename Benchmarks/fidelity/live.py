"""The live pipeline on a harness scene: its frames as a plain TIFF stack replayed through `moire
replay` with a protocol written for the scene (a rig with the scene's optics and camera noise, a
modulator whose nominal patterns are the scene's, the live SIM stage and, with `denoise`, the live
denoiser at its default settings), the SR and denoised frames taken off the result bus.

The time-lapse is a static scene with a new noise realisation per time point, as a microscopist
imaging a fixed cell; the live denoiser adapts as the run goes (2 steps per set by default), so
its last frames are what a run of this length gives.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading

import numpy as np

import forward

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_REPO, "python", "src"))
from moire.subscriber import Subscriber  # noqa: E402
from moire.wire import Frame  # noqa: E402

CAMERA_PIXEL_UM = 6.5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_rig(directory, scene, angles):
    """Camera, modulator and rig profiles for the scene; returns the rig's path."""
    camera = f"""moire: 1
kind: camera
model: fidelity harness camera (offset {forward.OFFSET_ADU:g} ADU, 1 ADU/e-, {forward.READ_NOISE_E} e- read noise)
driver: sim
capabilities:
  sensor: [2048, 2048]
  pixel_um: {CAMERA_PIXEL_UM}
  binning: [1]
  roi_min: 16
  exposure_ms: [0.05, 10000]
  trigger_modes: [internal, external, software]
  bit_depth: 16
timing:
  readout_ms: 1.0
calibration:
  offset_adu: {forward.OFFSET_ADU:g}
  gain_adu_per_e: 1
  read_noise_e: {forward.READ_NOISE_E}
  qe: 1
  full_well_e: 60000
"""
    patterns = []
    index = 0
    for a, angle in enumerate(angles):
        for p in range(scene.phases):
            patterns.append(
                f"      - {{index: {index}, angle: {a}, phase: {p}, kx_per_um: {angle['kx']:.6f}, "
                f"ky_per_um: {angle['ky']:.6f}, phase_rad: {2 * np.pi * p / scene.phases:.5f}, modulation: 0.8}}")
            index += 1
    modulator = """moire: 1
kind: modulator
model: fidelity harness pattern generator (the scene's nominal patterns)
driver: sim
capabilities:
  sequence_max: 64
  trigger_out: true
timing:
  settle_ms: 0.1
pattern_sets:
  - name: scene
    wavelength_nm: 488
    patterns:
""" + "\n".join(patterns) + "\n"
    laser = os.path.join(_REPO, "sim-hardware", "profiles", "laser-sim-488.yaml")
    rig = f"""moire: 1
name: fidelity harness rig
devices:
  camera: {{name: cam, profile: camera.yaml}}
  modulator: {{name: slm, profile: modulator.yaml}}
  lasers:
    - {{name: l488, profile: {laser}}}
optics:
  objective_na: {scene.na}
  magnification: {CAMERA_PIXEL_UM / scene.pixel_um:.6f}
  immersion_index: 1.518
wiring:
  leader: modulator
"""
    for name, text in (("camera.yaml", camera), ("modulator.yaml", modulator), ("rig.yaml", rig)):
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    return os.path.join(directory, "rig.yaml")


def write_protocol(directory, scene, rig, timepoints, endpoint, denoise):
    text = f"""moire: 1
name: fidelity harness, live
rig: {rig}
mode: sim2d
camera:
  roi: [{scene.n}, {scene.n}]
channels:
  - {{name: scene, laser: l488, power_mw: 20, exposure_ms: 5, emission_nm: {scene.emission_nm:g}, pattern_set: scene}}
sim:
  angles: {scene.angles}
  phases: {scene.phases}
timelapse:
  count: {timepoints}
  interval_ms: 0
outputs:
  publish: {endpoint}
  publish_raw: false
"""
    if denoise:
        text += "denoise: {enabled: true}\n"
    path = os.path.join(directory, "protocol.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def run(series, scene, angles, binary, denoise=True, timeout=3600):
    """Replays `series` (time points × angles·phases × n × n uint16) through the live pipeline.
    Returns {"sr": [...], "den": [...]}: each stream's frames (float arrays, 2× grid) in order."""
    with tempfile.TemporaryDirectory() as tmp:
        import tifffile
        stack = os.path.join(tmp, "stack.tif")
        tifffile.imwrite(stack, np.asarray(series).reshape(-1, scene.n, scene.n), photometric="minisblack")
        rig = write_rig(tmp, scene, angles)
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        protocol = write_protocol(tmp, scene, rig, len(series), endpoint, denoise)
        frames = {"sr": {}, "den": {}}
        process = None

        def listen():
            with Subscriber(endpoint, topics=["sr.", "den."], timeout=timeout) as bus:
                while True:
                    message = bus.receive(timeout=1.0)
                    if message is None:
                        if process is not None and process.poll() is not None:
                            return
                        continue
                    if isinstance(message, Frame) and message.image is not None:
                        frames[message.header.stream][message.header.seq] = np.asarray(message.image, dtype=float)

        listener = threading.Thread(target=listen)
        listener.start()
        process = subprocess.Popen(
            [binary, "replay", stack, "--protocol", protocol, "--publish", endpoint, "--wait-subscribers", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = process.communicate(timeout=timeout)
        listener.join()
        if process.returncode != 0:
            raise RuntimeError(f"moire replay: {output[-2000:]}")
        return {stream: [frames[stream][k] for k in sorted(frames[stream])] for stream in frames}
