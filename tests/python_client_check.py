"""The Python package (python/) against a real daemon: control with the owner check, the sync and
asyncio subscribers on two real runs, and the recording reader. Prints one JSON line; exit 0 when
every check held. Usage: python_client_check.py CONTROL PROTOCOL WORKDIR"""
import asyncio
import json
import os
import sys
import time

import numpy as np
import tifffile

import moire

# The hang watchdog of every wait (integration.sh sets it); not a speed assumption.
WATCHDOG_S = float(os.environ.get("MOIRE_TEST_WATCHDOG_S", "600"))

control, protocol, work = sys.argv[1:4]
checks = {}
daemon = moire.Daemon(control)
info = daemon.ping().daemon
checks["ping names the daemon"] = info is not None and info.uid == os.getuid() and info.data_root == os.path.realpath(work)
try:
    moire.Daemon(control, daemon_user="nobody").ping()
    checks["a socket of another owner is refused"] = False
except moire.DaemonError as e:
    checks["a socket of another owner is refused"] = "not the daemon you mean" in str(e)
try:
    daemon.start(protocol, out="/tmp/outside-the-data-root.ome.tif")
    checks["the daemon's refusal reaches Python"] = False
except moire.DaemonError as e:
    checks["the daemon's refusal reaches Python"] = "data root" in str(e)


def run_with(out, subscribe):
    started = daemon.start(protocol, out=out)
    seen = subscribe(started.publish)
    while daemon.status().state not in ("idle", "faulted"):
        time.sleep(0.05)
    return started, seen


def sync_subscribe(endpoint):
    seen = {"frames": 0, "starts": 0, "stop": None, "shapes": set(), "dtypes": set()}
    with moire.Subscriber(endpoint, topics=["raw.", "sr."], timeout=WATCHDOG_S) as bus:
        for message in bus:
            if isinstance(message, moire.RunStart):
                seen["starts"] += 1
            elif isinstance(message, moire.Frame):
                seen["frames"] += 1
                if message.image is not None:
                    seen["shapes"].add((message.header.stream, message.image.shape))
                    seen["dtypes"].add((message.header.stream, str(message.image.dtype)))
            elif isinstance(message, moire.RunStop):
                seen["stop"] = message.reason
                break
        seen["gaps"] = bus.gaps
    return seen


async def async_subscribe(endpoint):
    seen = {"frames": 0, "stop": None}
    async with moire.AsyncSubscriber(endpoint, topics=["raw."], timeout=WATCHDOG_S) as bus:
        async for message in bus:
            if isinstance(message, moire.Frame):
                seen["frames"] += 1
            elif isinstance(message, moire.RunStop):
                seen["stop"] = message.reason
                break
        seen["gaps"] = bus.gaps
    return seen


out1 = os.path.join(work, "py-run1.ome.tif")
started, seen = run_with(out1, sync_subscribe)
ended = daemon.status()
checks["status after the run: last seq per topic, messages published"] = (
    ended.last_seq.get("raw.gfp") == 179 and ended.last_seq.get("sr.gfp") == 19 and (ended.published or 0) >= 222)
checks["sync subscriber: start, frames, stop, no gaps"] = (
    seen["starts"] == 1 and seen["frames"] > 0 and seen["stop"] == "completed" and seen["gaps"] == 0)
checks["raw frames uint16 128×128, SR float32 256×256"] = (
    ("raw", (128, 128)) in seen["shapes"] and ("sr", (256, 256)) in seen["shapes"]
    and seen["dtypes"] >= {("raw", "uint16"), ("sr", "float32")})
_, seen2 = run_with(os.path.join(work, "py-run2.ome.tif"), lambda e: asyncio.run(async_subscribe(e)))
checks["asyncio subscriber: frames, stop, no gaps"] = seen2["frames"] > 0 and seen2["stop"] == "completed" and seen2["gaps"] == 0
recording = moire.Recording(out1)
array = recording.array()
with tifffile.TiffFile(out1) as tif:
    reference = tif.asarray()
checks["recording: shape (t,c,z,angles,phases,y,x) and pixels as tifffile reads them"] = (
    recording.shape == (20, 1, 1, 3, 3, 128, 128) and np.array_equal(array.reshape(reference.shape), reference)
    and len(recording.planes) == 180 and recording.missing == [] and recording.pixel_size_um is not None)
print(json.dumps({"checks": checks, "sync": {k: v for k, v in seen.items() if k not in ("shapes", "dtypes")}, "async": seen2}))
sys.exit(0 if all(checks.values()) else 1)
