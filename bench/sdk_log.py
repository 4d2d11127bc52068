"""Benchmark: the cost of ``run.log`` and points per second end to end.

    python bench/sdk_log.py [--points 200000] [--other-venv /tmp/bench-venv]

Starts a collector and an agent (port 0, temp dir), then:

1. call time: ``run.log`` in a tight loop, timed with ``perf_counter_ns``
   around groups of 100 calls (median and p99 of the per-call average), and
   per single call (median and p99, including the timer's own ~50 ns);
2. end to end: points per second from the first ``run.log`` until ``flush``
   returned and the collector acknowledged every record (``WaitForwarded``).

With ``--other-venv`` (a venv holding mlflow and/or wandb), the same loop
times ``mlflow.log_metric`` (file store) and ``wandb.log`` (offline mode)
in that interpreter and prints the ratios; otherwise it says they were not
available.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.procs import Service

GROUP = 100

OTHER = textwrap.dedent("""
    import json, os, statistics, sys, time
    which, work, groups = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.chdir(work)
    if which == "mlflow":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the file store, as asked
        import mlflow
        mlflow.set_tracking_uri("file://" + os.path.join(work, "mlruns"))
        mlflow.start_run()
        call = lambda i: mlflow.log_metric("loss", 0.5, step=i)
    else:
        os.environ["WANDB_SILENT"] = "true"
        import wandb
        run = wandb.init(mode="offline", dir=work, project="bench")
        call = lambda i: wandb.log({"loss": 0.5}, step=i)
    samples = []
    for g in range(groups):
        t = time.perf_counter_ns()
        for i in range(g * 100, g * 100 + 100):
            call(i)
        samples.append((time.perf_counter_ns() - t) / 100)
    samples.sort()
    print(json.dumps({"median": statistics.median(samples),
                      "p99": samples[int(len(samples) * 0.99) - 1]}))
    if which == "wandb":
        run.finish()
""")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def time_grouped(run: object, groups: int) -> list[float]:
    log = run.log  # type: ignore[attr-defined]
    samples = []
    for g in range(groups):
        started = time.perf_counter_ns()
        for i in range(g * GROUP, (g + 1) * GROUP):
            log("loss", 0.5, step=i)
        samples.append((time.perf_counter_ns() - started) / GROUP)
    return samples


def time_single(run: object, calls: int) -> list[float]:
    log = run.log  # type: ignore[attr-defined]
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        started = clock()
        log("acc", 0.5, step=i)
        samples.append(float(clock() - started))
    return samples


def end_to_end(run: object, points: int) -> tuple[float, float]:
    """Points per second (into the agent's spool, into the collector's store)."""
    link = run._link  # type: ignore[attr-defined]
    log = run.log  # type: ignore[attr-defined]
    started = time.perf_counter()
    for i in range(points):
        log("e2e", float(i), step=i)
    link.flush(300)
    spooled = time.perf_counter() - started
    done = link.agent.wait_forwarded(link.sender.stream_id, link.sender.acked_seq, 300)
    assert done.done, done
    return points / spooled, points / (time.perf_counter() - started)


def other_tool(venv: Path | None, which: str, groups: int, work: Path) -> dict[str, float] | None:
    python = venv / "bin" / "python" if venv else None
    if python is None or not python.exists():
        return None
    proc = subprocess.run([str(python), "-c", OTHER, which, str(work), str(groups)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"  {which}: not available ({proc.stderr.strip().splitlines()[-1:]})")
        return None
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--groups", type=int, default=2000, help="groups of 100 calls")
    parser.add_argument("--other-venv", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        collector = Service("collector", ["--store", f"sqlite:///{work / 'store.db'}",
                                          "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
                                          "--artifacts", str(work / "artifacts")], work).start()
        agent = Service("agent", ["--socket", str(work / "agent.sock"), "--collector",
                                  collector.grpc, "--spool", str(work / "spool"),
                                  "--http", "127.0.0.1:0"], work).start()
        os.environ.update(MLTRAIL_AGENT=str(work / "agent.sock"), MLTRAIL_HOME=str(work / "home"))
        try:
            report(args, work)
        finally:
            agent.stop()
            collector.stop()


def report(args: argparse.Namespace, work: Path) -> None:
    from mltrail import Experiment

    run = Experiment("bench").start_logging()
    grouped = time_grouped(run, args.groups)
    run.flush()
    single = time_single(run, args.groups * GROUP // 2)
    run.flush()
    mltrail_median = statistics.median(grouped)
    print(f"run.log, groups of {GROUP}: median {mltrail_median:.0f} ns/call, "
          f"p99 {percentile(grouped, 0.99):.0f} ns/call ({args.groups * GROUP} calls)")
    print(f"run.log, single calls:  median {statistics.median(single):.0f} ns, "
          f"p99 {percentile(single, 0.99):.0f} ns (timer included)")
    to_agent, to_collector = end_to_end(run, args.points)
    print(f"end to end: {to_collector:,.0f} points/s ({args.points} points until flush "
          f"returned and the collector acknowledged them all); into the agent's spool: "
          f"{to_agent:,.0f} points/s")
    run.complete()
    for which in ("mlflow", "wandb"):
        other = other_tool(args.other_venv, which, min(args.groups, 200), work)
        if other is None:
            print(f"{which}: not available (pass --other-venv with {which} installed)")
            continue
        print(f"{which}: median {other['median']:.0f} ns/call, p99 {other['p99']:.0f} ns/call; "
              f"{other['median'] / mltrail_median:.0f}x the time of run.log")


if __name__ == "__main__":
    main()
