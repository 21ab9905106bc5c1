"""Serving one peer measurement at a time, so that `moire bench` can alternate its own units of work
with the peer's in the same seconds (a shared machine's load then weighs on both sides alike).

Line protocol on stdin/stdout: after its set-up the peer prints one JSON line {"ready": true, ...};
then, for each line it reads (a task name), it runs that task once and prints {"ms": milliseconds}
(or {"error": ...} for a task it does not know). It exits at the end of its input.
"""
import json
import sys
import time


def serve(tasks, describe):
    """Runs `tasks[name]()` for each task name read from stdin and prints its milliseconds."""
    answer = sys.__stdout__
    print(json.dumps({"ready": True, **describe}), file=answer, flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        task = tasks.get(name)
        if task is None:
            print(json.dumps({"error": f"unknown task {name!r}; known: {sorted(tasks)}"}), file=answer, flush=True)
            continue
        start = time.perf_counter()
        task()
        print(json.dumps({"ms": (time.perf_counter() - start) * 1000}), file=answer, flush=True)
