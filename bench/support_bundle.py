"""Benchmark: building a run's support bundle, against reading the same run.

A run with N console lines of typical training output (default 500,000,
about 30 MB) and M scalar points (default 100,000) goes through a real agent
into a real collector. Then, each a few times, alternating:

- read: `mltrail logs RUN` and `mltrail metrics RUN --json`, output discarded
  (what a person would do by hand to collect the same data);
- bundle: `mltrail bundle RUN` (the collector reads the run through its own
  Query API, redacts every line, cuts to 32 MiB and zips).

Prints the median seconds of each, the ratio, the bundle's size and how many
bytes of logs it cut, and the redaction rate of the Redactor alone.

    python bench/support_bundle.py [--lines 500000] [--points 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mltrail.common.redact import Redactor
from tests.agent_client import agent_service
from tests.procs import MLTRAIL, collector_service

TRAIN = (
    "import sys\n"
    "from mltrail import Run\n"
    "run = Run.get_context()\n"
    "lines, points = int(sys.argv[1]), int(sys.argv[2])\n"
    "for i in range(points): run.log('loss', 1.0 / (i + 1), step=i)\n"
    "w = sys.stdout.write\n"
    "for i in range(lines):\n"
    "    w(f'epoch {i // 1000} step {i} loss {1.0 / (i + 1):.6f} lr 0.001 took 12.3ms\\n')\n"
)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)
    return time.perf_counter() - start


def redaction_rate(lines: int) -> float:
    text = "".join(f"epoch {i // 1000} step {i} loss {1.0 / (i + 1):.6f} lr 0.001 took 12.3ms\n"
                   for i in range(lines))
    redactor = Redactor()
    start = time.perf_counter()
    for at in range(0, len(text), 256 * 1024):
        redactor.text(text[at:at + 256 * 1024], "bench")
    return len(text) / (time.perf_counter() - start) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        collector = collector_service(work).start()
        agent = agent_service(work, collector.grpc).start()
        try:
            env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
                   "MLTRAIL_HOME": str(work / "home"), "MLTRAIL_COLLECTOR": collector.grpc}
            script = work / "train.py"
            script.write_text(TRAIN)
            subprocess.run([*MLTRAIL, "run", "--run-id", "bench-1", "--", sys.executable,
                            str(script), str(args.lines), str(args.points)],
                           env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)
            reads, bundles = [], []
            out = work / "b.zip"
            for _ in range(args.repeat):
                reads.append(timed([*MLTRAIL, "logs", "bench-1"], env)
                             + timed([*MLTRAIL, "metrics", "bench-1", "--json"], env))
                bundles.append(timed([*MLTRAIL, "bundle", "bench-1", "-o", str(out)], env))
            manifest = json.loads(zipfile.ZipFile(out).read("manifest.json"))
        finally:
            agent.stop()
            collector.stop()
    read, bundle = statistics.median(reads), statistics.median(bundles)
    cut = sum(c["original_bytes"] - c["kept_bytes"] for c in manifest["cuts"])
    print(f"run: {args.lines:,} console lines, {args.points:,} scalar points")
    print(f"read logs + metrics by hand: {read:.2f} s (median of {args.repeat})")
    print(f"mltrail bundle:              {bundle:.2f} s ({bundle / read:.2f} x the read)")
    print(f"manifest: "
          f"{len(manifest['files'])} files, {cut:,} bytes cut, "
          f"{manifest['redactions']['total']} redactions")
    print(f"Redactor alone: {redaction_rate(200_000):.0f} MiB/s of log text")


if __name__ == "__main__":
    main()
