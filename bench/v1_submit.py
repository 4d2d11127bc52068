"""Benchmark: what v1's submit lifecycle costs.

    python bench/v1_submit.py [--runs 5]

Starts a collector and an agent (port 0, temp dir), then times, in a fresh
Python per measurement:

1. ``Experiment.submit`` until it returns (the run is registered: its
   first record reached the collector), and the ``get_status()`` right after;
2. submit to the end of ``wait_for_completion`` for a script that only logs
   one metric, against the same script under ``mltrail run`` started
   directly (the baseline, measured in the same run: the ratio survives a
   loaded machine better than the seconds).
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

from tests.agent_client import agent_service
from tests.procs import collector_service

SCRIPT = "from mltrail import Run\nRun.get_context().log('x', 1)\n"
SUBMITTER = textwrap.dedent("""
    import json, sys, time
    from mltrail import Experiment, ScriptRunConfig
    started = time.perf_counter()
    run = Experiment("bench").submit(ScriptRunConfig(sys.argv[1], "job.py"))
    returned = time.perf_counter()
    status = run.get_status()
    answered = time.perf_counter()
    run.wait_for_completion()
    ended = time.perf_counter()
    print(json.dumps({"submit": returned - started, "status": answered - returned,
                      "first_status": status, "total": ended - started}))
""")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        collector = collector_service(work).start()
        agent = agent_service(work, collector.grpc).start()
        try:
            (work / "job.py").write_text(SCRIPT)
            env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
                   "MLTRAIL_HOME": str(work / "home")}
            submits, direct = [], []
            for _ in range(args.runs):
                out = subprocess.run([sys.executable, "-c", SUBMITTER, str(work)], env=env,
                                     capture_output=True, text=True, check=True).stdout
                submits.append(json.loads(out.strip().splitlines()[-1]))
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "mltrail", "run", "--experiment", "bench",
                                "--", sys.executable, "job.py"], cwd=work, env=env, check=True,
                               capture_output=True)
                direct.append(time.perf_counter() - started)
        finally:
            agent.stop()
            collector.stop()
    med = statistics.median
    print(f"submit returns (registered) : {med(s['submit'] for s in submits) * 1000:7.0f} ms "
          f"median of {args.runs}; first status {submits[0]['first_status']!r}")
    print(f"get_status right after      : {med(s['status'] for s in submits) * 1000:7.0f} ms")
    total, baseline = med(s["total"] for s in submits), med(direct)
    print(f"submit .. wait_for_completion: {total:6.2f} s; `mltrail run` direct {baseline:.2f} s;"
          f" ratio {total / baseline:.2f}")


if __name__ == "__main__":
    main()
