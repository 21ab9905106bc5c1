"""A result-bus subscriber that connects, subscribes to everything and never reads (a hostile or
hung client). Its own queue holds one message; it exits after the given number of seconds.
Usage: stalled_subscriber.py ENDPOINT SECONDS"""
import sys
import time

import zmq

context = zmq.Context()
socket = context.socket(zmq.SUB)
socket.setsockopt(zmq.RCVHWM, 1)
socket.setsockopt(zmq.RCVBUF, 65536)
socket.setsockopt(zmq.SUBSCRIBE, b"")
socket.connect(sys.argv[1])
print("stalled subscriber connected", flush=True)
time.sleep(float(sys.argv[2]))
