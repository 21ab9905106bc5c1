"""`python -m moire status|subscribe …`: a quick look at a daemon from Python."""
from __future__ import annotations

import argparse
import json
import sys

from .control import Daemon, DaemonError
from .subscriber import Subscriber
from .wire import Frame, RunStart, RunStop


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moire-py", description=__doc__)
    parser.add_argument("--daemon", help="control endpoint (default: your daemon's socket)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="who answers and what it is doing")
    sub = commands.add_parser("subscribe", help="print one line per message of a result bus, then a summary")
    sub.add_argument("endpoint")
    sub.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args(argv)
    if args.command == "status":
        try:
            reply = Daemon(args.daemon).status()
        except DaemonError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(json.dumps({"state": reply.state, "run": reply.run, "daemon": reply.daemon.__dict__ if reply.daemon else None}))
        return 0
    counts: dict = {}
    with Subscriber(args.endpoint, timeout=args.timeout) as bus:
        for message in bus:
            if isinstance(message, RunStart):
                print(f"start {message.run} {message.mode} {message.shape}")
            elif isinstance(message, Frame):
                counts[message.header.stream] = counts.get(message.header.stream, 0) + 1
            elif isinstance(message, RunStop):
                print(f"stop {message.run} {message.reason}")
                break
        print(json.dumps({"streams": counts, "gaps": bus.gaps, "malformed": bus.tally.malformed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
