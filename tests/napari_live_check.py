"""The napari live view (python/src/moire/live_view.py) against real daemon runs, headless: a real
`napari.Viewer` shown in a window on an X server without a screen (integration.sh runs this under
`xvfb-run`), its canvas drawn by Mesa's software OpenGL. (Qt's offscreen platform gives the canvas a
context but draws nothing into it: its screenshots are black.) The dock widget is docked in the
viewer's window and connected as a user would (endpoint, Connect); its timer drives the view while a
plain subscriber records the frames beside it. Two runs on the same result bus: a 2D-SIM run with
live denoising (raw, SR, widefield and denoised layers), then a lattice light-sheet run (a volume
layer). Prints one JSON line; exit 0 when every check held. napari's own screenshot of the canvas
(the 2D-SIM run's layers in its grid mode) goes to PICTURE (default WORKDIR/napari-live-view.png).
Usage: napari_live_check.py CONTROL SIM_PROTOCOL VOLUME_PROTOCOL WORKDIR [PICTURE]"""
import json
import os
import sys
import threading
import time

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

import imageio.v2 as imageio
import napari
import numpy as np
from qtpy.QtWidgets import QApplication

import moire
from moire.live_view_widget import LiveViewWidget

# The hang watchdog of every wait (integration.sh sets it); not a speed assumption.
WATCHDOG_S = float(os.environ.get("MOIRE_TEST_WATCHDOG_S", "600"))

control, protocol, volume_protocol, work = sys.argv[1:5]
picture_path = sys.argv[5] if len(sys.argv) > 5 else os.path.join(work, "napari-live-view.png")
# The viewer first (napari makes the Qt application with the OpenGL settings its canvas needs); it
# takes seconds to build, longer than a run takes.
viewer = napari.Viewer(show=True)
viewer.window.resize(1600, 900)
app = QApplication.instance()
daemon = moire.Daemon(control)


def run(protocol_path, out_name, streams):
    """Starts a run; returns its start reply and the last frame of each stream (and counts) as a
    plain subscriber sees them, filled by a thread that ends at the run's stop."""
    started = daemon.start(protocol_path, out=os.path.join(work, out_name))
    seen = {"last": {}, "counts": {s: 0 for s in streams}}

    def record():
        with moire.Subscriber(started.publish, topics=[f"{s}." for s in streams], timeout=WATCHDOG_S) as bus:
            for frame in bus.frames():
                if frame.image is not None:
                    seen["last"][frame.header.stream] = frame
                    seen["counts"][frame.header.stream] += 1

    thread = threading.Thread(target=record)
    thread.start()
    return started, seen, thread


def wait_for_stop(widget, thread, run_id):
    """Until the view has seen run `run_id` stop (the widget's timer applying the bus meanwhile)."""
    deadline = time.time() + WATCHDOG_S

    def stopped():
        view = widget.view
        return view is not None and view.start is not None and view.start.run == run_id and view.stop is not None

    while not stopped() and time.time() < deadline:
        app.processEvents()
        time.sleep(0.005)
    thread.join(timeout=WATCHDOG_S)
    while daemon.status().state not in ("idle", "faulted") and time.time() < deadline:
        time.sleep(0.05)


def canvas(size=(400, 400)):
    viewer.reset_view()
    app.processEvents()
    return viewer.screenshot(canvas_only=True, size=size, flash=False)[..., :3]


checks = {}
started, seen, recorder = run(protocol, "napari-live.ome.tif", ("raw", "sr", "den"))
last = seen["last"]
# At most 8 messages a tick: a run has 12 per time point (9 raw, SR, widefield, denoised), so the
# view shows SR frames on several ticks however late this process is scheduled (a loaded machine
# may run the whole run before the first tick).
widget = LiveViewWidget(viewer, endpoint=started.publish, interval_ms=20, messages_per_tick=8)
viewer.window.add_dock_widget(widget, name="Moiré live view")
widget.button.click()  # Connect
wait_for_stop(widget, recorder, started.run)
view = widget.view
names = [layer.name for layer in viewer.layers]
shown = ("raw.gfp", "sr.gfp", "den.gfp", "wf.gfp")
checks["layers raw.gfp, sr.gfp, den.gfp, wf.gfp"] = set(shown) <= set(names)
checks["the run ended and the widget says so"] = (
    view is not None and view.stop is not None and view.stop.reason == "completed"
    and "ended: completed" in widget.status.text())
if checks["layers raw.gfp, sr.gfp, den.gfp, wf.gfp"]:
    raw, sr, den = viewer.layers["raw.gfp"], viewer.layers["sr.gfp"], viewer.layers["den.gfp"]
    pixel = view.start.pixel_size_um
    checks["scales in µm: raw the camera pixel, SR and denoised SR half of it"] = (
        np.allclose(raw.scale, [pixel, pixel]) and np.allclose(sr.scale, [pixel / 2, pixel / 2])
        and np.allclose(den.scale, [pixel / 2, pixel / 2]))
    checks["the SR layer shows the run's last SR frame"] = (
        "sr" in last and np.array_equal(sr.data, last["sr"].image) and sr.metadata["seq"] == last["sr"].header.seq)
    checks["the denoised layer shows the run's last denoised frame"] = (
        "den" in last and np.array_equal(den.data, last["den"].image))
    checks["the raw layer shows the last raw frame"] = "raw" in last and np.array_equal(raw.data, last["raw"].image)
    checks["updated live, not once"] = view.shown.get("sr.gfp", 0) >= 2 and view.shown.get("raw.gfp", 0) >= 2
    low, high = sr.contrast_limits
    checks["contrast from the data"] = low < high and high <= float(np.nanmax(sr.data)) * 1.5 + 1e-6
    checks["colour from the emission (525 nm: green)"] = sr.colormap.name == "green" and den.colormap.name == "green"
    # napari draws each layer on its canvas (OpenGL): alone, it fills the view with structure in
    # the layer's colour (green: no red, no blue), and the pictures differ.
    shots = {}
    for name in shown:
        for layer in viewer.layers:
            layer.visible = layer.name == name
        shots[name] = canvas()
    checks["napari's canvas draws every layer, in its colour"] = all(
        shot[..., 1].std() > 5 and int(shot[..., 0].max()) == 0 and int(shot[..., 2].max()) == 0
        for shot in shots.values())
    checks["the canvas pictures of the layers differ"] = all(
        np.abs(shots[a].astype(int) - shots[b].astype(int)).mean() > 1
        for i, a in enumerate(shown) for b in shown[i + 1:])
    # The picture for the README (docs/images/napari-live-view.png is one, from this check):
    # napari's grid mode, the layers side by side in their physical extent.
    for layer in viewer.layers:
        layer.visible = layer.name in shown
    # Grid mode places the top layer first: raw, SR, denoised, widefield from the left.
    for position, name in enumerate(reversed(shown)):
        viewer.layers.move(viewer.layers.index(name), position)
    viewer.grid.enabled = True
    viewer.grid.shape = (1, len(shown))
    picture = canvas((400, 400 * len(shown)))
    imageio.imwrite(picture_path, picture)
    checks["the grid picture shows every layer"] = all(
        part[..., 1].std() > 5 for part in np.array_split(picture, len(shown), axis=1))
    viewer.grid.enabled = False

# A lattice light-sheet run on the same bus: the deskewed volumes as one 3D layer in µm (z first).
volume_started, volume_seen, volume_recorder = run(volume_protocol, "napari-volume.ome.tif", ("vol",))
wait_for_stop(widget, volume_recorder, volume_started.run)
view = widget.view
volume = viewer.layers["vol.gfp"] if "vol.gfp" in [layer.name for layer in viewer.layers] else None
latest = volume_seen["last"].get("vol")
checks["a volume layer from the light-sheet run"] = (
    volume is not None and latest is not None and volume.data.ndim == 3 and volume_started.publish == started.publish)
if checks["a volume layer from the light-sheet run"]:
    voxel_z = float(latest.header.params.get("voxelZUm", 0))
    y, x = latest.scale_um
    checks["the volume layer shows the last volume at its voxel size"] = (
        np.array_equal(volume.data, latest.image) and voxel_z > 0 and np.allclose(volume.scale, [voxel_z, y, x]))
    for layer in viewer.layers:
        layer.visible = layer is volume
    shot = canvas()
    checks["napari's canvas draws the volume"] = shot[..., 1].std() > 1
# napari finds the widget through the package's manifest (npe2), as its Plugins menu does.
from npe2 import PluginManager

plugins = PluginManager.instance()
plugins.discover()
manifest = plugins.get_manifest("moire-client")
checks["napari lists the widget (npe2 manifest)"] = (
    [w.display_name for w in manifest.contributions.widgets] == ["Moiré live view"]
    and plugins.get_command("moire-client.live_view").python_name == "moire.live_view_widget:make_widget")
widget.button.click()  # Disconnect
checks["disconnect closes the view"] = widget.view is None and widget.status.text() == "not connected"
failed = [name for name, ok in checks.items() if not ok]
print(json.dumps({"layers": [layer.name for layer in viewer.layers], "shown": view.shown if view else {},
                  "received": view.received if view else 0, "recorded": seen["counts"],
                  "volumes": volume_seen["counts"], "failed": failed}))
sys.exit(1 if failed else 0)
