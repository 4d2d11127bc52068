"""The collector process as a user runs it: clean stop, clear one-line errors."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mltrail.collector.store.sqlite_schema import SCHEMA_VERSION
from mltrail.proto import collector_pb2
from tests import builders as b
from tests.procs import Service, mltrail_cli


def collector_args(tmp_path: Path, store: str | None = None) -> list[str]:
    return ["--store", store or f"sqlite:///{tmp_path / 'store.db'}", "--grpc", "127.0.0.1:0",
            "--http", "127.0.0.1:0", "--artifacts", str(tmp_path / "artifacts")]


def test_sigterm_with_an_open_stream_acknowledges_and_exits_0(collector: Service) -> None:
    requests = [collector_pb2.IngestRequest(request_id=1, batches=[
        b.batch("s", [b.scalar(1, "r", "m", 1.0)])])]
    release = threading.Event()

    def held_open():  # type: ignore[no-untyped-def]
        yield from requests
        release.wait(20)  # the stream stays open, as an agent's does

    client = b.IngestClient(collector.grpc)
    responses = client.write_stream(held_open(), timeout=30)
    first = next(responses)
    assert first.results[0].acked_seq == 1
    assert collector.terminate(timeout=15) == 0
    try:
        rest = list(responses)
        code = None
    except grpc.RpcError as exc:
        rest, code = [], exc.code()
    finally:
        release.set()
        client.close()
    assert rest == []
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "stopped" in collector.output()


def test_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    svc = Service("collector", collector_args(tmp_path), tmp_path).start()
    svc.stop()
    with sqlite3.connect(tmp_path / "store.db") as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 5,))
    done = mltrail_cli("collector", *collector_args(tmp_path), timeout=30)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("mltrail: error: store ")
    assert f"schema version {SCHEMA_VERSION + 5}, newer" in lines[-1]
    assert "Traceback" not in done.stderr


def test_bad_store_url_is_one_clear_line(tmp_path: Path) -> None:
    done = mltrail_cli("collector", *collector_args(tmp_path, store="mysql:/nowhere"),
                       timeout=30)
    assert done.returncode == 1
    assert "unknown scheme 'mysql'" in done.stderr
    assert "Traceback" not in done.stderr
    done = mltrail_cli("collector", *collector_args(tmp_path, store="postgres:/nowhere"),
                       timeout=30)
    assert done.returncode == 1
    assert "names no database" in done.stderr and "Traceback" not in done.stderr


def test_port_in_use_is_one_clear_line(collector: Service, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    args = collector_args(other)
    args[args.index("--grpc") + 1] = collector.grpc
    done = mltrail_cli("collector", *args, timeout=30)
    assert done.returncode == 1
    assert f"cannot listen for gRPC on {collector.grpc}" in done.stderr
    assert "Traceback" not in done.stderr


def test_unwritable_store_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = mltrail_cli("collector", *collector_args(
        tmp_path, store=f"sqlite:///{blocker / 'store.db'}"), timeout=30)
    assert done.returncode == 1
    assert "cannot open store" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_file_is_read_and_unknown_keys_refused(tmp_path: Path) -> None:
    good = tmp_path / "collector.toml"
    good.write_text(f'store = "sqlite:///{tmp_path / "from-config.db"}"\n'
                    'max_metric_series = 5\n')
    args = collector_args(tmp_path)
    del args[0:2]  # no --store flag: the file's value counts
    svc = Service("collector", [*args, "--config", str(good)], tmp_path).start()
    svc.stop()
    assert (tmp_path / "from-config.db").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("max_series = 5\n")
    done = mltrail_cli("collector", *args, "--config", str(bad), timeout=30)
    assert done.returncode == 1
    assert "unknown setting 'max_series'" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_collector_on_one_sqlite_file_refuses_naming_the_first(
        collector: Service, tmp_path: Path) -> None:
    (tmp_path / "second").mkdir()
    second = Service("collector", [
        "--store", f"sqlite:///{tmp_path / 'store.db'}", "--grpc", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--artifacts", str(tmp_path / "artifacts")],
        tmp_path / "second")
    with pytest.raises(RuntimeError) as refused:
        second.start()
    assert collector.proc is not None
    text = str(refused.value)
    assert f"in use by another collector (pid {collector.proc.pid})" in text
    assert "Traceback" not in text


def test_an_agent_going_away_mid_stream_leaves_no_task_error_in_the_log(
        collector: Service) -> None:
    gate = threading.Event()

    def requests() -> Iterator[collector_pb2.IngestRequest]:
        yield collector_pb2.IngestRequest(request_id=1, batches=[
            b.batch(b.new_stream_id(), [b.scalar(1, "gone", "loss", 1.0)])])
        gate.wait(30)  # the stream stays open, then the channel goes away under it

    client = b.IngestClient(collector.grpc)
    responses = client.stub.Write(requests(), timeout=60)
    assert next(responses).results[0].code == 0
    client.close()  # like an agent killed mid-stream
    gate.set()
    with b.IngestClient(collector.grpc) as again:  # the collector goes on
        assert again.write([b.batch(b.new_stream_id(),
                                    [b.scalar(1, "after", "loss", 1.0)])]).results[0].code == 0
    assert collector.terminate() == 0
    assert "Task exception was never retrieved" not in collector.output()
    assert "StopAsyncIteration" not in collector.output()
