#!/usr/bin/env python3
"""Receive Moiré frames from a result bus (wire format v1, docs/wire-format.md) with pyzmq + numpy."""
import json, sys
import numpy as np
import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5560"
timeout_ms = int(float(sys.argv[2]) * 1000) if len(sys.argv) > 2 else 30000
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.SUBSCRIBE, b"")          # every topic: raw.*, sr.*, den.*, run
sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
sock.connect(endpoint)
first, frames, missing, gaps, last, streams = None, 0, 0, 0, {}, {}
while True:
    topic, header, payload = sock.recv_multipart()   # always three parts
    h = json.loads(header)
    if topic == b"run":
        first = first or h["event"]
        print(f"{h['event']} run={h['run']}")
        if h["event"] == "stop":
            break
        continue
    if first is None:                                  # joined mid-run: wait for the replayed start
        continue
    dtype = {"uint16": "<u2", "float32": "<f4"}[h["pixel"]]   # raw: uint16; sr/wf: float32
    img = np.frombuffer(payload, dtype=dtype).reshape(h["height"], h["width"]) if not h["missing"] else None
    key = topic.decode()
    gaps += key in last and h["seq"] != last[key] + 1
    last[key], frames, missing = h["seq"], frames + 1, missing + h["missing"]
    streams[h["stream"]] = streams.get(h["stream"], 0) + 1
    print(f"{key} seq={h['seq']} t={h['t']} angle={h['angle']} phase={h['phase']} "
          f"{'MISSING' if img is None else f'mean={img.mean():.1f}'}")
print(json.dumps({"first": first, "frames": frames, "missing": missing, "gaps": gaps, "streams": streams}))
