"""Benchmark: the SDK's peak memory with N MiB logged while the agent is away.

    python bench/sdk_memory.py [--mib 128] [--bound 64] [--string-kib 64]

Runs a script twice, each in a fresh process whose ``MLTRAIL_AGENT`` names a
socket nobody listens on: ``run.log`` of ``--mib`` MiB of distinct strings
(``--string-kib`` KiB each), first with the memory bound ``MLTRAIL_MEMORY_MIB
= --bound``, then with a bound far above what is logged (the SDK as it was:
everything stays in memory). Prints for each the process's peak RSS
(VmHWM) over its RSS just before the first call, the slowest call and the
median call, and the records on disk at exit. Figures from a loaded machine
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


if __name__ == "__main__":
    main()
