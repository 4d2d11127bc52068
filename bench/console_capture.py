"""Benchmark: what recording a script's console costs the script.

A script writes N lines of 100 bytes (default 1,000,000: 100 MB) to stdout
and reports how long its own writing took. It runs twice, each several
times, alternating:

- baseline: stdout is a pipe that a reader drains and nobody records;
- recorded: under `mltrail run`, through a real agent into a real collector.

Prints the script's median time in each mode, the slowdown, the time until
`mltrail run` returned (every line acknowledged by the agent), and the time
until the collector held every line.

    python bench/console_capture.py [--lines 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mltrail.client import QueryClient
from tests.agent_client import agent_service
from tests.procs import MLTRAIL, collector_service, cpu_seconds

WRITER = (
    "import sys, time\n"
    "n = int(sys.argv[1]); line = 'x' * 99 + '\\n'; w = sys.stdout.write\n"
    "t = time.perf_counter()\n"
    "for _ in range(n): w(line)\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write(f'{time.perf_counter() - t:.6f} {time.process_time():.6f}\\n')\n"
)


def script_seconds(stderr: bytes) -> float:
    return float(stderr.decode().strip().splitlines()[-1].split()[0])


def script_cpu(stderr: bytes) -> float:
    return float(stderr.decode().strip().splitlines()[-1].split()[1])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline(lines: int) -> float:
    done = subprocess.run([sys.executable, "-c", WRITER, str(lines)],
                          capture_output=True, check=True)
    assert len(done.stdout) == lines * 100
    return script_seconds(done.stderr)


def recorded(lines: int, env: dict[str, str], run_id: str) -> tuple[float, float, float]:
    """The script's seconds, seconds until `mltrail run` returned, and the launcher's CPU."""
    started, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run([*MLTRAIL, "run", "--run-id", run_id, "--", sys.executable, "-c",
                           WRITER, str(lines)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=True)
    launcher_cpu = children_cpu() - cpu - script_cpu(done.stderr)
    return script_seconds(done.stderr), time.perf_counter() - started, launcher_cpu


def wait_stored(address: str, run_id: str, lines: int, started: float) -> float:
    with QueryClient(address) as client:
        while client.get_run(run_id).log_lines < lines + 1:  # + the timing line on stderr
            time.sleep(0.05)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        workdir = Path(tmp)
        collector = collector_service(workdir).start()
        agent = agent_service(workdir, collector.grpc).start()
        env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
               "MLTRAIL_HOME": str(workdir / "home")}
        try:
            base, rec, returned, stored, launcher = [], [], [], [], []
            stages = {"agent": 0.0, "collector": 0.0}
            for i in range(args.repeat):
                base.append(baseline(args.lines))
                before = {"agent": cpu_seconds(agent.proc.pid),  # type: ignore[union-attr]
                          "collector": cpu_seconds(collector.proc.pid)}  # type: ignore[union-attr]
                started = time.perf_counter()
                script, total, launcher_cpu = recorded(args.lines, env, f"bench-{i}")
                rec.append(script)
                returned.append(total)
                launcher.append(launcher_cpu)
                stored.append(wait_stored(collector.grpc, f"bench-{i}", args.lines, started))
                stages["agent"] += cpu_seconds(agent.proc.pid) - before["agent"]  # type: ignore[union-attr]
                stages["collector"] += (cpu_seconds(collector.proc.pid)  # type: ignore[union-attr]
                                        - before["collector"])
        finally:
            agent.stop()
            collector.stop()
    b, r = statistics.median(base), statistics.median(rec)
    mib = args.lines * 100 / 2**20
    print(f"lines: {args.lines} of 100 bytes ({mib:.0f} MiB), median of {args.repeat}")
    print(f"script writing to a drained pipe: {b:.3f} s")
    print(f"script writing under mltrail run: {r:.3f} s")
    print(f"slowdown of the script: {100 * (r / b - 1):.1f} %")
    print(f"mltrail run returned after: {statistics.median(returned):.3f} s")
    print(f"collector held every line after: {statistics.median(stored):.3f} s "
          f"({mib / statistics.median(stored):.1f} MiB/s end to end)")
    print(f"CPU per run: launcher {statistics.median(launcher):.2f} s, "
          f"agent {stages['agent'] / args.repeat:.2f} s, "
          f"collector {stages['collector'] / args.repeat:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
