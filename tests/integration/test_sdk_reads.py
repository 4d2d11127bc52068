"""A read with the collector down does not hang (issue 11, item 7): it waits a
bounded time for this process's records, says so after a second, then asks
the collector and says what is still on the way."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.agent_client import agent_service
from tests.integration.test_agent_chaos import free_port

SCRIPT = textwrap.dedent("""
    from mltrail import Experiment
    run = Experiment("reads").start_logging()
    run.log("loss", 1.0)
    try:
        run.get_metrics(timeout_seconds=3)
    except Exception as exc:
        print("ERROR", type(exc).__name__, exc)
    run.complete()
""")


def test_get_metrics_with_the_collector_down_waits_its_timeout_and_says_why(
        tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nobody listens: the collector is down
    agent = agent_service(tmp_path, address).start()
    try:
        script = tmp_path / "reads.py"
        script.write_text(SCRIPT)
        env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
               "MLTRAIL_HOME": str(tmp_path / "home"), "MLTRAIL_EXIT_TIMEOUT": "1"}
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env=env, timeout=120)
        assert "mltrail: waiting for 2 records to reach the collector" in done.stderr
        assert "answering from what the collector has now" in done.stderr
        assert "ERROR" in done.stdout and address in done.stdout, done.stdout
    finally:
        agent.stop()


BLOCKED = textwrap.dedent("""
    import sys
    from mltrail import Experiment
    run = Experiment("blocked").start_logging()
    for i in range(20_000):
        run.log("note", "x" * 500, step=i)
    run.flush(timeout_seconds=2)
    print("FLUSHED", flush=True)
    sys.stdin.readline()  # the collector is back
    try:
        run.wait_for_completion(timeout=1)
    except Exception as exc:
        print("WAIT", type(exc).__name__, flush=True)
    run.complete()
""")


def test_flush_against_a_blocked_agent_times_out_and_loses_nothing(tmp_path: Path) -> None:
    # A 5 MB spool, 10 MB of points and no collector: the agent's Append blocks.
    # flush returns at its timeout and says what is still on the way;
    # wait_for_completion on the live run raises WaitTimeout; once the collector is
    # up, every point arrives.
    from mltrail.query.client import QueryClient
    from tests.integration.test_agent_chaos import collector_on

    port = free_port()
    collector = collector_on(port, tmp_path)
    agent = agent_service(tmp_path, f"127.0.0.1:{port}")
    agent.env = {"MLTRAIL_AGENT_MAX_SPOOL_BYTES": "5000000"}
    agent.start()
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED)
    env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
           "MLTRAIL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "FLUSHED"
        collector.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "records are still on the way" in err and "after 2 s" in err
        assert "WAIT WaitTimeout" in out
        with QueryClient(collector.grpc) as client:
            run_id = client.list_runs("blocked")[0].run_id
            steps = [r.metric.scalar.step for r in client.get_metric_records(run_id, "note")]
        assert steps == list(range(20_000))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        agent.stop()
        collector.stop()
