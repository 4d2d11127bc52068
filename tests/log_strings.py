"""A script that logs distinct strings and reports its memory (VmHWM): the SDK's
memory bound under test (tests/integration/test_sdk_memory_bound.py) and in
bench/sdk_memory.py.

    python tests/log_strings.py COUNT KIB MODE [NAMES]

Logs COUNT strings of KIB KiB to a run, each a new object as real values are,
then prints one JSON line: RSS before the first call, peak RSS, call times,
records spilled. MODE ``sync`` first waits until the agent took the run's
start, says so, and waits for a line on stdin (the test stops the agent);
``bench`` then exits; otherwise it waits for a line on stdin (the test
brings the agent back), completes the run and prints what is left and the
peak RSS again. With NAMES > 1, string i is logged as ``text{i % NAMES}``
(default: all as ``text``), each with step i.
"""

import json
import statistics
import sys
import time

from mltrail import Experiment


def vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise ValueError(field)


def main() -> None:
    count, kib, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    names = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    run = Experiment("memory-bound").start_logging()
    run.log("warm", 1.0)
    if mode == "sync":  # the start is in the agent before it is stopped
        run.flush(60)
        print(json.dumps({"ready": True}), flush=True)
        sys.stdin.readline()
    block = "x" * (kib * 1024 - 16)
    before = vm("VmRSS")
    times = []
    for i in range(count):
        text = f"{i:016d}{block}"
        started = time.perf_counter_ns()
        run.log("text" if names == 1 else f"text{i % names}", text, step=i)
        times.append(time.perf_counter_ns() - started)
    del text
    sender = run._link.sender
    print(json.dumps({"run": run.id, "before": before, "peak": vm("VmHWM"),
                      "median_us": statistics.median(times) / 1000,
                      "max_ms": max(times) / 1e6, "calls": count,
                      "spilled": sender.stats.records_spilled,
                      "spill_dir": run._link.where}), flush=True)
    if mode == "bench":
        return
    sys.stdin.readline()
    run.complete()  # flushes: waits for the agent's acknowledgement
    print(json.dumps({"pending": sender.pending(), "peak": vm("VmHWM")}), flush=True)


if __name__ == "__main__":
    main()
