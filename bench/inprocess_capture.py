"""Benchmark: what ``start_logging(capture_output=True)`` costs a process that prints.

A script prints N lines with ``print`` (default 100,000, as a notebook cell
or a training loop would) to stdout, which is a file, and times its own
printing. It runs in two ways, alternating, several times each:

- baseline: no run; the file is written and nobody records it;
- captured: inside ``Experiment(...).start_logging(capture_output=True)``
  with a real agent and collector on this machine (at the embedded default's
  nice 10), every line checked at the collector afterwards.

It prints the median of each, and the ratio captured / baseline (the goal:
at most 1.5).

    python bench/inprocess_capture.py [--lines 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mltrail.pipeline.embedded import EMBEDDED_NICE
from mltrail.query.client import QueryClient
from tests.agent_client import agent_service
from tests.procs import collector_service

PRINTER = (
    "import sys, time\n"
    "n, capture = int(sys.argv[1]), sys.argv[2] == '1'\n"
    "if capture:\n"
    "    from mltrail import Experiment\n"
    "    run = Experiment('bench').start_logging(capture_output=True)\n"
    "t = time.perf_counter()\n"
    "for i in range(n):\n"
    "    print('step', i, 'loss', 0.5, 'accuracy', 0.9)\n"
    "sys.stdout.flush()\n"
    "took = time.perf_counter() - t\n"
    "if capture:\n"
    "    run.complete()\n"
    "    sys.__stderr__.write(run.id + '\\n')\n"
    "sys.__stderr__.write(f'{took:.6f}\\n')\n"
)


def one(lines: int, capture: bool, env: dict[str, str], out: Path) -> tuple[float, str]:
    with open(out, "wb") as fh:
        done = subprocess.run([sys.executable, "-c", PRINTER, str(lines), "1" if capture else "0"],
                              stdout=fh, stderr=subprocess.PIPE, env=env, check=True, text=True)
    assert out.read_text().count("\n") == lines
    *run, seconds = done.stderr.strip().splitlines()
    return float(seconds), (run[-1] if run else "")


def stored_lines(address: str, run_id: str) -> int:
    with QueryClient(address) as client:
        return client.get_run(run_id).log_lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        workdir = Path(tmp)
        collector = collector_service(workdir)
        collector.env["MLTRAIL_COLLECTOR_NICE"] = str(EMBEDDED_NICE)
        collector.start()
        agent = agent_service(workdir, collector.grpc)
        agent.env["MLTRAIL_AGENT_NICE"] = str(EMBEDDED_NICE)
        agent.start()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env.update(MLTRAIL_AGENT=agent.info["socket"], MLTRAIL_HOME=str(workdir / "home"))
        base, captured = [], []
        try:
            for _ in range(args.repeat):
                base.append(one(args.lines, False, env, workdir / "out.txt")[0])
                seconds, run_id = one(args.lines, True, env, workdir / "out.txt")
                captured.append(seconds)
                deadline = time.monotonic() + 120
                while stored_lines(collector.grpc, run_id) < args.lines:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"run {run_id}: lines missing at the collector")
                    time.sleep(0.05)
        finally:
            agent.stop()
            collector.stop()
    b, c = statistics.median(base), statistics.median(captured)
    print(f"== print() of {args.lines} lines to a file, median of {args.repeat}")
    print(f"not recorded:                     {b:.3f} s")
    print(f"start_logging(capture_output=True): {c:.3f} s")
    print(f"ratio captured / not recorded:    {c / b:.2f} (goal: at most 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
