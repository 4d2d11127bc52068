"""Item 8 of issue 13: small refusals, each as a user meets it on the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.procs import Service, mltrail_cli


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_runs_refuses_a_limit_below_one(collector: Service, limit: str) -> None:
    done = mltrail_cli("runs", "--limit", limit, "--collector", collector.grpc)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"mltrail runs: error: argument --limit: must be 1 or more, got {limit}")


def test_a_collector_without_a_port_gets_the_default_port(tmp_path: Path) -> None:
    done = mltrail_cli("runs", "--collector", "127.0.0.2", env={"MLTRAIL_HOME": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.startswith(
        "mltrail: error: cannot reach the collector at 127.0.0.2:7431 (")
    bad = mltrail_cli("runs", "--collector", "127.0.0.1:x")
    assert bad.stderr.strip() == ("mltrail: error: --collector '127.0.0.1:x' is not HOST:PORT "
                                  "(for example 127.0.0.1:7431)")


def test_an_empty_stream_name_in_a_source_flag_is_refused(tmp_path: Path) -> None:
    done = mltrail_cli("agent", "--source", f"file:{tmp_path}/x.log=r1:",
                       "--spool", str(tmp_path / "spool"), env={"MLTRAIL_HOME": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"--source 'file:{tmp_path}/x.log=r1:': the stream name after '=' is empty; write "
        "RUN_ID or RUN_ID:STREAM, e.g. file:/logs/*.log=run-1:trainer")


def test_log_table_refuses_columns_of_different_lengths(agent: Service, collector: Service,
                                                        tmp_path: Path) -> None:
    code = ("from mltrail import Run\n"
            "Run.get_context().log_table('t', {'a': [1, 2, 3], 'b': [1]})\n")
    done = mltrail_cli("run", "--quiet", "--", sys.executable, "-c", code, env={
        "MLTRAIL_AGENT": agent.info["socket"], "MLTRAIL_COLLECTOR": collector.grpc,
        "MLTRAIL_HOME": str(tmp_path / "home")})
    assert done.returncode == 1
    assert ("ValueError: value's columns must all have the same length, got 'a': 3, 'b': 1; "
            "fill the short columns or log them as separate tables") in done.stderr
