"""The napari live view (python/src/moire/live_view.py) against a real daemon run, headless: Qt on
its offscreen platform, napari's ViewerModel (no canvas, so no OpenGL). The dock widget is
connected as a user would (endpoint, Connect) and its timer drives the view while a plain
subscriber records the frames beside it. Prints one JSON line; exit 0 when every check held.
Also draws the view (moire.live_view.render: raw, SR and widefield side by side) into PICTURE
(default WORKDIR/napari-live-view.png).
Usage: napari_live_check.py CONTROL PROTOCOL WORKDIR [PICTURE]"""
import json
import os
import sys
import threading
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import imageio.v2 as imageio
import numpy as np
from napari.components import ViewerModel
from qtpy.QtWidgets import QApplication

import moire
from moire.live_view import render
from moire.live_view_widget import LiveViewWidget

# The hang watchdog of every wait (integration.sh sets it); not a speed assumption.
WATCHDOG_S = float(os.environ.get("MOIRE_TEST_WATCHDOG_S", "600"))

control, protocol, work = sys.argv[1:4]
picture_path = sys.argv[4] if len(sys.argv) > 4 else os.path.join(work, "napari-live-view.png")
app = QApplication.instance() or QApplication([])
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

viewer = ViewerModel()
# At most 8 messages a tick: a run has 11 per time point (9 raw, SR, widefield), so the view shows
# SR frames on several ticks however late this process is scheduled (a loaded machine may run the
# whole run before the first tick).
widget = LiveViewWidget(viewer, endpoint=started.publish, interval_ms=20, messages_per_tick=8)
widget.show()
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
    # The picture of the view for the README (docs/images/napari-live-view.png is one, from this check).
    picture = render(viewer, tile=384)
    imageio.imwrite(picture_path, picture)
    tiles = np.split(picture[:, : 3 * 384 + 2 * 4], [384, 388, 772, 776], axis=1)[::2]
    checks["the picture shows every layer, in its colour"] = (
        len(tiles) == 3 and all(t[..., 1].std() > 5 for t in tiles) and int(picture[..., 0].max()) == 0)
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
