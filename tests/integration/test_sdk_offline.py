"""Scripts run as users run them: offline runs, `mltrail sync`, the embedded default."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail.agent.spool import Spool
from mltrail.pipeline.embedded import EMBEDDED_NICE, read_ready, stop_embedded
from mltrail.proto import records_pb2
from mltrail.query.client import QueryClient
from tests.procs import Service, mltrail_cli

OFFLINE_SCRIPT = textwrap.dedent("""
    import json
    from mltrail import Run
    run = Run.get_context()
    for i in range(100):
        run.log("loss", i / 100, step=i)
    run.log_list("sizes", [1, 2, 3])
    run.tag("where", "offline")
    print(json.dumps({"id": run.id, "where": run._link.where, "metrics": run.get_metrics()}))
""")

EMBEDDED_SCRIPT = textwrap.dedent("""
    import json
    from mltrail import Experiment
    with Experiment("embedded").start_logging() as run:
        run.log("answer", 42)
    print(json.dumps({"id": run.id, "metrics": run.get_metrics(),
                      "status": run.get_status()}))
""")


def run_script(source: str, home: Path, tmp_path: Path, **env: str) -> dict[str, object]:
    script = tmp_path / "script.py"
    script.write_text(source)
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MLTRAIL_AGENT", "MLTRAIL_RUN_ID", "MLTRAIL_COLLECTOR")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env={**clean, "MLTRAIL_HOME": str(home), **env})
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]), stderr=proc.stderr)


def test_an_offline_run_reads_back_locally_and_syncs_exactly_once(
        tmp_path: Path, collector: Service) -> None:
    home = tmp_path / "home"
    out = run_script(OFFLINE_SCRIPT, home, tmp_path)
    metrics = out["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["loss"] == [i / 100 for i in range(100)] and metrics["sizes"] == [1, 2, 3]
    where = str(out["where"])
    assert where == str(home / "offline" / str(out["id"]))
    assert f"mltrail sync {where}" in str(out["stderr"])

    first = mltrail_cli("sync", where, "--collector", collector.grpc)
    assert first.returncode == 0, first.stderr
    assert "sent 104 records" in first.stdout  # started, 100 + 1 metrics, tag, completed
    second = mltrail_cli("sync", str(home / "offline"), "--collector", collector.grpc)
    assert second.returncode == 0, second.stderr
    assert "sent 0 records" in second.stdout

    with QueryClient(collector.grpc) as client:
        assert len(client.get_metric_records(str(out["id"]), "loss")) == 100
        info = client.get_run(str(out["id"]))
    assert info.status == "Completed" and info.tags == {"where": "offline"}


def test_sync_of_a_directory_without_a_spool_says_so(tmp_path: Path) -> None:
    result = mltrail_cli("sync", str(tmp_path), "--collector", "127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.startswith("mltrail: error: ")
    assert "holds no mltrail spool" in result.stderr


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    stop_embedded(home)  # by the PIDs in the ready files


def thread_nice_values(pid: int) -> set[int]:
    """The nice value of each thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values.add(int(fields[16]))
    return values


def test_the_embedded_default_starts_once_and_is_reused(tmp_path: Path, fresh_home: Path) -> None:
    first = run_script(EMBEDDED_SCRIPT, fresh_home, tmp_path)
    assert first["metrics"] == {"answer": 42} and first["status"] == "Completed"
    agent = read_ready(fresh_home / "embedded" / "agent.json")
    collector = read_ready(fresh_home / "embedded" / "collector.json")
    assert agent and collector and agent["collector"] == collector["grpc"]
    # Both yield the CPU to training, every thread of them (EMBEDDED_NICE).
    for info in (agent, collector):
        assert thread_nice_values(int(info["pid"])) == {EMBEDDED_NICE}

    second = run_script(EMBEDDED_SCRIPT, fresh_home, tmp_path)
    assert second["metrics"] == {"answer": 42} and second["id"] != first["id"]
    assert read_ready(fresh_home / "embedded" / "agent.json") == agent  # reused, not restarted
    with QueryClient(str(collector["grpc"])) as client:
        runs = {r.run_id for r in client.list_runs(experiment="embedded")}
    assert runs == {first["id"], second["id"]}


UNREACHABLE_SCRIPT = textwrap.dedent("""
    import json
    from mltrail import Experiment
    run = Experiment("unreachable").start_logging()
    for i in range(300):
        run.log("loss", float(i), step=i)
    print(json.dumps({"id": run.id}))
""")


def test_records_an_unreachable_agent_never_took_are_kept_for_sync(
        tmp_path: Path, collector: Service) -> None:
    home = tmp_path / "home"
    out = run_script(UNREACHABLE_SCRIPT, home, tmp_path,
                     MLTRAIL_AGENT=str(tmp_path / "no-agent.sock"), MLTRAIL_EXIT_TIMEOUT="1")
    # the start, 300 points, and the end Python's exit gave the run
    assert "302 records were not delivered before exit" in str(out["stderr"])
    kept = str(out["stderr"]).split("they are kept in ")[1].split(";")[0]
    assert Path(kept).parent == home / "offline"
    synced = mltrail_cli("sync", kept, "--collector", collector.grpc)
    assert synced.returncode == 0, synced.stderr
    assert "sent 302 records" in synced.stdout
    with QueryClient(collector.grpc) as client:
        steps = [r.metric.scalar.step for r in client.get_metric_records(str(out["id"]), "loss")]
        assert client.get_run(str(out["id"])).status == "Completed"
    assert steps == list(range(300))


def test_a_dead_embedded_agent_is_replaced_in_front_of_the_live_collector(
        tmp_path: Path, fresh_home: Path) -> None:
    run_script(EMBEDDED_SCRIPT, fresh_home, tmp_path)
    agent = read_ready(fresh_home / "embedded" / "agent.json")
    collector = read_ready(fresh_home / "embedded" / "collector.json")
    assert agent and collector
    os.kill(int(agent["pid"]), signal.SIGKILL)  # a crash; its stale socket file stays
    again = run_script(EMBEDDED_SCRIPT, fresh_home, tmp_path)
    assert again["metrics"] == {"answer": 42} and again["status"] == "Completed"
    new_agent = read_ready(fresh_home / "embedded" / "agent.json")
    assert new_agent and new_agent["pid"] != agent["pid"]
    assert read_ready(fresh_home / "embedded" / "collector.json") == collector


def one_record_spool(directory: Path) -> None:
    record = records_pb2.Record(seq=1, run_id=directory.name, time_unix_nano=1)
    record.metric.name = "loss"
    record.metric.scalar.value.number = 0.5
    batch = records_pb2.Batch(stream_id=directory.name, records=[record])
    with Spool(directory) as spool:
        spool.append(directory.name, 1, 1, batch.SerializeToString())


def test_sync_keeps_to_one_timeout_and_skips_a_spool_in_use(tmp_path: Path) -> None:
    root = tmp_path / "offline"
    others = [f"b{i:02d}" for i in range(40)]
    for name in ("a-in-use", *others):
        one_record_spool(root / name)
    with Spool(root / "a-in-use"):  # as a still running offline run holds it
        # one deadline for all: 1 s per directory would outlast this wait (40 s > 25 s)
        result = mltrail_cli("sync", str(root), "--collector", "127.0.0.1:1", "--timeout", "1",
                             timeout=25)
    assert result.returncode == 1
    assert f"{root / 'a-in-use'}: in use by another process, skipped" in result.stdout
    for name in others:  # the others were still tried
        assert f"{root / name}: sent 0 records" in result.stdout
    error = result.stderr.strip().splitlines()[-1]  # after the forwarder's retry lines
    assert error.startswith("mltrail: error: not everything reached 127.0.0.1:1")
    assert "a-in-use (in use)" in error
