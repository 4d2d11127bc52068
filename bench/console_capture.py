"""Benchmark: what recording a script's console costs the script.

A script writes N lines of 100 bytes (default 1,000,000: 100 MB) to stdout
with ``sys.stdout.write`` and reports how long its own writing took. It runs
in two ways, each several times, alternating:

- baseline: stdout is a pipe that a reader drains and nobody records;
- recorded: under `mltrail run`, through a real agent into a real collector
  on the same machine, run as the embedded default runs them (at nice 10).

Both ways run with Python's stdout block-buffered (its default on a pipe:
one write per 8 KiB) and unbuffered (``PYTHONUNBUFFERED=1``, common in
container images: one write per line), since the two load the pipe very
differently. For each it prints the script's median time both ways, the
slowdown, the time until `mltrail run` returned (every line acknowledged by
the agent), the time until the collector held every line, and the CPU of
each part.

    python bench/console_capture.py [--lines 1000000] [--repeat 5]
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

from mltrail.pipeline.embedded import EMBEDDED_NICE
from mltrail.query.client import QueryClient
from tests.agent_client import agent_service
from tests.procs import MLTRAIL, Service, collector_service, cpu_seconds

WRITER = (
    "import sys, time\n"
    "n = int(sys.argv[1]); line = 'x' * 99 + '\\n'; w = sys.stdout.write\n"
    "t = time.perf_counter()\n"
    "for _ in range(n): w(line)\n"
    "sys.stdout.flush()\n"
    "sys.stderr.write(f'{time.perf_counter() - t:.6f} {time.process_time():.6f}\\n')\n"
)


def script_line(stderr: bytes) -> list[str]:
    """The writer's last line (after it, `mltrail run` may say it waits for the agent)."""
    lines = [x for x in stderr.decode().strip().splitlines() if not x.startswith("mltrail:")]
    return lines[-1].split()


def script_seconds(stderr: bytes) -> float:
    return float(script_line(stderr)[0])


def script_cpu(stderr: bytes) -> float:
    return float(script_line(stderr)[1])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline(lines: int, env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", WRITER, str(lines)],
                          capture_output=True, check=True, env=env)
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


def measure(lines: int, repeat: int, env: dict[str, str], collector: Service,
            agent: Service, label: str) -> None:
    base, rec, returned, stored, launcher = [], [], [], [], []
    stages = {"agent": 0.0, "collector": 0.0}
    for i in range(repeat):
        base.append(baseline(lines, env))
        before = {"agent": cpu_seconds(agent.proc.pid),  # type: ignore[union-attr]
                  "collector": cpu_seconds(collector.proc.pid)}  # type: ignore[union-attr]
        started = time.perf_counter()
        run_id = f"bench-{label}-{i}"
        script, total, launcher_cpu = recorded(lines, env, run_id)
        rec.append(script)
        returned.append(total)
        launcher.append(launcher_cpu)
        stored.append(wait_stored(collector.grpc, run_id, lines, started))
        stages["agent"] += cpu_seconds(agent.proc.pid) - before["agent"]  # type: ignore[union-attr]
        stages["collector"] += (cpu_seconds(collector.proc.pid)  # type: ignore[union-attr]
                                - before["collector"])
    b, r = statistics.median(base), statistics.median(rec)
    mib = lines * 100 / 2**20
    print(f"== stdout {label}: {lines} lines of 100 bytes ({mib:.0f} MiB), median of {repeat}")
    print(f"script writing to a drained pipe: {b:.3f} s")
    print(f"script writing under mltrail run: {r:.3f} s")
    print(f"slowdown of the script: {100 * (r / b - 1):.1f} %")
    print(f"mltrail run returned after: {statistics.median(returned):.3f} s")
    print(f"collector held every line after: {statistics.median(stored):.3f} s "
          f"({mib / statistics.median(stored):.1f} MiB/s end to end)")
    print(f"CPU per run: launcher {statistics.median(launcher):.2f} s, "
          f"agent {stages['agent'] / repeat:.2f} s, "
          f"collector {stages['collector'] / repeat:.2f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mltrail-bench-") as tmp:
        workdir = Path(tmp)
        # On one machine, as the embedded default runs them: below the script's priority.
        collector = collector_service(workdir)
        collector.env["MLTRAIL_COLLECTOR_NICE"] = str(EMBEDDED_NICE)
        collector.start()
        agent = agent_service(workdir, collector.grpc)
        agent.env["MLTRAIL_AGENT_NICE"] = str(EMBEDDED_NICE)
        agent.start()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        env.update(MLTRAIL_AGENT=agent.info["socket"], MLTRAIL_HOME=str(workdir / "home"))
        try:
            measure(args.lines, args.repeat, env, collector, agent, "block-buffered")
            measure(args.lines, args.repeat, {**env, "PYTHONUNBUFFERED": "1"}, collector,
                    agent, "unbuffered")
        finally:
            agent.stop()
            collector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
