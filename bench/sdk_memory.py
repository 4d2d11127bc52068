"""Benchmark: the SDK's peak memory with N MiB logged while the agent is away.

    python bench/sdk_memory.py [--mib 128] [--bound 64] [--string-kib 64]

Runs a script twice, each in a fresh process whose ``MLTRAIL_AGENT`` names a
socket nobody listens on: ``run.log`` of ``--mib`` MiB of distinct strings
(``--string-kib`` KiB each), first with the memory bound ``MLTRAIL_MEMORY_MIB
= --bound``, then with a bound far above what is logged (the SDK as it was:
everything stays in memory). Prints for each the process's peak RSS
(VmHWM) over its RSS just before the first call, the slowest call and the
median call, and the records spilled while logging; then the time of
``run.log`` of a number with the bound's counting and with a plain append
(what the call did before), alternating in one process. Figures from a loaded machine
are indicative; the ratio of the two peaks, measured in the same run, says
more.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "log_strings.py"


def measure(mib: int, kib: int, bound: float, work: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTRAIL_")}
    env.update(MLTRAIL_HOME=str(work / f"home-{bound:g}"), MLTRAIL_MEMORY_MIB=f"{bound:g}",
               MLTRAIL_AGENT=str(work / "nobody.sock"), MLTRAIL_EXIT_TIMEOUT="0",
               MLTRAIL_RECORD_ENVIRONMENT="0")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(mib * 1024 // kib), str(kib),
                           "bench"], env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the script failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


CALLS = textwrap.dedent("""
    import json, statistics, time
    from collections import deque
    from mltrail import Run
    run = Run.get_context()  # offline: no agent needed to time the call
    sender = run._link.sender

    def timed(groups=2000):
        log, out = run.log, []
        for g in range(groups):
            started = time.perf_counter_ns()
            for i in range(100):
                log("loss", 0.5, step=i)
            out.append((time.perf_counter_ns() - started) / 100)
        return statistics.median(out)

    bound, plain = [], []
    for _ in range(4):  # alternating, so load hits both alike
        run._enqueue_scalar = sender.enqueue_scalar
        bound.append(timed())
        run._enqueue_scalar = deque().append  # what the call did before the bound
        plain.append(timed())
    print(json.dumps({"bound": statistics.median(bound), "plain": statistics.median(plain)}))
""")


def call_cost(work: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTRAIL_")}
    env.update(MLTRAIL_HOME=str(work / "home-calls"), MLTRAIL_EXIT_TIMEOUT="5")
    proc = subprocess.run([sys.executable, "-c", CALLS], env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"the call timing failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"run.log of a number: median {out['bound']:.0f} ns/call counting its bytes for the "
          f"bound, {out['plain']:.0f} ns with a plain append as before "
          f"({out['bound'] / out['plain']:.2f} times)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="MiB of strings logged")
    parser.add_argument("--bound", type=float, default=64, help="MLTRAIL_MEMORY_MIB")
    parser.add_argument("--string-kib", type=int, default=64, help="size of each string")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-memory-") as tmp:
        rows = []
        for label, bound in ((f"bound {args.bound:g} MiB", args.bound),
                             ("no bound (as before)", 1 << 20)):
            out = measure(args.mib, args.string_kib, bound, Path(tmp))
            grown = (out["peak"] - out["before"]) / (1 << 20)
            rows.append(grown)
            print(f"{label:>24}: {args.mib} MiB of {args.string_kib} KiB strings logged "
                  f"({out['calls']:.0f} calls), agent away: peak RSS {out['peak'] / (1 << 20):.0f}"
                  f" MiB, {grown:.0f} MiB over the {out['before'] / (1 << 20):.0f} MiB before;"
                  f" median call {out['median_us']:.1f} µs, slowest {out['max_ms']:.0f} ms;"
                  f" {out['spilled']:.0f} records spilled while logging")
        print(f"peak growth with the bound / without: {rows[0] / rows[1]:.2f}")
        call_cost(Path(tmp))


if __name__ == "__main__":
    main()
