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
