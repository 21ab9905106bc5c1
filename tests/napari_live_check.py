"""The napari live view (python/src/moire/live_view.py) against a real daemon run, headless: a real
`napari.Viewer` shown in a window on an X server without a screen (integration.sh runs this under
`xvfb-run`), its canvas drawn by Mesa's software OpenGL. (Qt's offscreen platform gives the canvas a
context but draws nothing into it: its screenshots are black.) The dock widget is
docked in the viewer's window and connected as a user would (endpoint, Connect); its timer drives
the view while a plain subscriber records the frames beside it. Prints one JSON line; exit 0 when
every check held. napari's own screenshot of the canvas (raw, SR and widefield in its grid mode)
goes to PICTURE (default WORKDIR/napari-live-view.png).
Usage: napari_live_check.py CONTROL PROTOCOL WORKDIR [PICTURE]"""
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

control, protocol, work = sys.argv[1:4]
picture_path = sys.argv[4] if len(sys.argv) > 4 else os.path.join(work, "napari-live-view.png")
app = QApplication.instance() or QApplication([])
# The viewer first: a napari.Viewer takes seconds to build, longer than the run takes.
viewer = napari.Viewer(show=True)
viewer.window.resize(1600, 900)
daemon = moire.Daemon(control)
started = daemon.start(protocol, out=os.path.join(work, "napari-live.ome.tif"))

# Beside the view: every SR and raw frame as a plain subscriber sees it, up to `stop`.
last = {}
counts = {"sr": 0, "raw": 0}


def record():
    with moire.Subscriber(started.publish, topics=["raw.", "sr."], timeout=WATCHDOG_S) as bus:
        for frame in bus.frames():
            if frame.image is not None:
                last[frame.header.stream] = frame
                counts[frame.header.stream] += 1


recorder = threading.Thread(target=record)
recorder.start()

# At most 8 messages a tick: a run has 11 per time point (9 raw, SR, widefield), so the view shows
# SR frames on several ticks however late this process is scheduled (a loaded machine may run the
# whole run before the first tick).
widget = LiveViewWidget(viewer, endpoint=started.publish, interval_ms=20, messages_per_tick=8)
viewer.window.add_dock_widget(widget, name="Moiré live view")
widget.button.click()  # Connect
deadline = time.time() + WATCHDOG_S
while (widget.view is None or widget.view.stop is None) and time.time() < deadline:
    app.processEvents()
    time.sleep(0.005)
recorder.join(timeout=WATCHDOG_S)
view = widget.view
checks = {}
names = [layer.name for layer in viewer.layers]
checks["layers raw.gfp, sr.gfp, wf.gfp"] = {"raw.gfp", "sr.gfp", "wf.gfp"} <= set(names)
checks["the run ended and the widget says so"] = (
    view is not None and view.stop is not None and view.stop.reason == "completed"
    and "ended: completed" in widget.status.text())
if checks["layers raw.gfp, sr.gfp, wf.gfp"]:
    raw, sr = viewer.layers["raw.gfp"], viewer.layers["sr.gfp"]
    pixel = view.start.pixel_size_um
    checks["scales in µm: raw the camera pixel, SR half of it"] = (
        np.allclose(raw.scale, [pixel, pixel]) and np.allclose(sr.scale, [pixel / 2, pixel / 2]))
    checks["the SR layer shows the run's last SR frame"] = (
        "sr" in last and np.array_equal(sr.data, last["sr"].image) and sr.metadata["seq"] == last["sr"].header.seq)
    checks["the raw layer shows the last raw frame"] = "raw" in last and np.array_equal(raw.data, last["raw"].image)
    checks["updated live, not once"] = view.shown.get("sr.gfp", 0) >= 2 and view.shown.get("raw.gfp", 0) >= 2
    low, high = sr.contrast_limits
    checks["contrast from the data"] = low < high and high <= float(np.nanmax(sr.data)) * 1.5 + 1e-6
    checks["colour from the emission (525 nm: green)"] = sr.colormap.name == "green"
    # napari draws each layer on its canvas (OpenGL): alone, it fills the view with structure in
    # the layer's colour (green: no red, no blue), and the three pictures differ.
    shown = ("raw.gfp", "sr.gfp", "wf.gfp")
    shots = {}
    for name in shown:
        for layer in viewer.layers:
            layer.visible = layer.name == name
        viewer.reset_view()
        app.processEvents()
        shots[name] = viewer.screenshot(canvas_only=True, size=(400, 400), flash=False)[..., :3]
    checks["napari's canvas draws every layer, in its colour"] = all(
        shot[..., 1].std() > 5 and int(shot[..., 0].max()) == 0 and int(shot[..., 2].max()) == 0
        for shot in shots.values())
    checks["the canvas pictures of raw, SR and widefield differ"] = all(
        np.abs(shots[a].astype(int) - shots[b].astype(int)).mean() > 1
        for a, b in (("raw.gfp", "sr.gfp"), ("raw.gfp", "wf.gfp"), ("sr.gfp", "wf.gfp")))
    # The picture for the README (docs/images/napari-live-view.png is one, from this check):
    # napari's grid mode, the three layers side by side in their physical extent.
    for layer in viewer.layers:
        layer.visible = layer.name in shown
    viewer.grid.enabled = True
    viewer.grid.shape = (1, len(shown))
    viewer.reset_view()
    app.processEvents()
    picture = viewer.screenshot(canvas_only=True, size=(400, 1200), flash=False)[..., :3]
    imageio.imwrite(picture_path, picture)
    checks["the grid picture shows three layers"] = all(
        third[..., 1].std() > 5 for third in np.array_split(picture, 3, axis=1))
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
while daemon.status().state not in ("idle", "faulted"):
    time.sleep(0.05)
failed = [name for name, ok in checks.items() if not ok]
print(json.dumps({"layers": names, "shown": view.shown if view else {}, "received": view.received if view else 0,
                  "recorded": counts, "failed": failed}))
sys.exit(1 if failed else 0)
