"""QueryClient against a real collector process, fed over Ingest as an agent would.

A small scripted Query service remains only for what a real collector cannot be made
to do on demand: replay lines it already sent on a reconnect, or break a finished tail
in the middle (each says so at its test).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from mltrail.query.client import (
    ArtifactCorrupt,
    ArtifactNotFound,
    CollectorUnreachable,
    QueryClient,
    RunNotFound,
    resolve_collector_address,
    status_number,
)
from tests import builders as b
from tests.procs import Service, collector_service


def line(stream: str, n: int, text: str) -> collector_pb2.LogLine:
    return collector_pb2.LogLine(stream=stream, line=n, text=text, time_unix_nano=n)


class ScriptedQuery(collector_pb2_grpc.QueryServicer):
    """Knows one run, "r1"; its TailLogs follows a script per call (responses, or a
    status code to fail with)."""

    def __init__(self) -> None:
        self.tail_calls = 0
        self.tail_script: list[list[Any]] = []

    def TailLogs(self, request: Any, context: Any) -> Iterator[Any]:
        if request.run_id != "r1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no run {request.run_id}")
        script = self.tail_script[min(self.tail_calls, len(self.tail_script) - 1)]
        self.tail_calls += 1
        for step in script:
            if isinstance(step, grpc.StatusCode):
                context.abort(step, "scripted failure")
            yield step


@pytest.fixture
def query() -> Iterator[tuple[ScriptedQuery, str]]:
    servicer = ScriptedQuery()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collector_pb2_grpc.add_QueryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


ARTIFACT = b"model bytes " * 1000
DAMAGED = b"to be damaged on disk " * 500


@pytest.fixture(scope="module")
def collector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collector")


@pytest.fixture(scope="module")
def real(collector_dir: Path) -> Iterator[str]:
    """A collector holding run r1 (failed, tagged, two children, metrics, console lines,
    two artifacts) and r-live (still running); the tests only read it (one damages the
    file of outputs/damaged.bin, which no other reads)."""
    svc = collector_service(collector_dir).start()
    error = records_pb2.ErrorDetails(code="UserError", message="boom", type="ValueError",
                                     exit_code=3)
    r1 = [b.started(1, "r1", tags={"a": "1"}), b.scalar(2, "r1", "loss", 3.0, step=0),
          b.scalar(3, "r1", "loss", 2.0, step=1), b.log(4, "r1", b"a\nb\n"),
          b.log(5, "r1", b"c\n", stream="stderr"),
          *b.artifact(6, "r1", "outputs/model.bin", ARTIFACT, piece=5000)]
    r1 += b.artifact(len(r1) + 1, "r1", "outputs/damaged.bin", DAMAGED)
    r1.append(b.ended(len(r1) + 1, "r1", status=records_pb2.FAILED, error=error))
    with svc_stopped_after(svc), b.IngestClient(svc.grpc) as ingest:
        for stream, records in (
                ("s-r1", r1),
                ("s-c1", [b.started(1, "c1", parent_run_id="r1")]),
                ("s-c2", [b.started(1, "c2", parent_run_id="r1")]),
                ("s-other", [b.started(1, "other", experiment="else")]),
                ("s-live", [b.started(1, "r-live"), b.log(2, "r-live", b"a\n")])):
            response = ingest.write([b.batch(stream, records)])
            assert [r.code for r in response.results] == [0], response
        yield svc.grpc


@contextlib.contextmanager
def svc_stopped_after(svc: Service) -> Iterator[None]:
    try:
        yield
    finally:
        svc.stop()


# ---- addresses --------------------------------------------------------------------------


def test_address_flag_beats_env_beats_embedded_beats_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path))
    monkeypatch.delenv("MLTRAIL_COLLECTOR", raising=False)
    assert resolve_collector_address() == "127.0.0.1:7431"
    (tmp_path / "embedded").mkdir()
    (tmp_path / "embedded" / "collector.json").write_text(json.dumps({"grpc": "127.0.0.1:5555"}))
    assert resolve_collector_address() == "127.0.0.1:5555"
    monkeypatch.setenv("MLTRAIL_COLLECTOR", "10.0.0.1:7431")
    assert resolve_collector_address() == "10.0.0.1:7431"
    assert resolve_collector_address("h:1") == "h:1"


def test_a_broken_embedded_file_falls_back_to_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path))
    monkeypatch.delenv("MLTRAIL_COLLECTOR", raising=False)
    (tmp_path / "embedded").mkdir()
    (tmp_path / "embedded" / "collector.json").write_text('{"grpc": ')
    assert resolve_collector_address() == "127.0.0.1:7431"


def test_an_unreachable_address_says_where_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_HOME", str(tmp_path))
    monkeypatch.setenv("MLTRAIL_COLLECTOR", "127.0.0.1:1")
    with QueryClient() as client, pytest.raises(CollectorUnreachable) as env_info:
        client.list_runs()
    assert "(connection refused; address from MLTRAIL_COLLECTOR)" in str(env_info.value)
    monkeypatch.delenv("MLTRAIL_COLLECTOR")
    ready = tmp_path / "embedded" / "collector.json"
    ready.parent.mkdir()
    ready.write_text(json.dumps({"grpc": "127.0.0.1:1"}))
    with QueryClient() as client, pytest.raises(CollectorUnreachable) as file_info:
        client.get_run("r")
    assert f"(connection refused; address from {ready})" in str(file_info.value)


def test_status_names_parse_in_any_case() -> None:
    assert status_number("completed") == records_pb2.COMPLETED
    assert status_number("CANCELED") == records_pb2.CANCELED
    assert status_number("Running") == records_pb2.RUNNING
    with pytest.raises(ValueError, match="Completed"):
        status_number("done")


# ---- runs and metrics -------------------------------------------------------------------


def test_list_runs_applies_every_filter_and_types_the_answer(real: str) -> None:
    with QueryClient(real) as client:
        runs = client.list_runs(experiment="exp", status="failed", tags={"a": "1"}, limit=5)
        running = client.list_runs(experiment="exp", status="running")
        assert sorted(r.run_id for r in running) == ["c1", "c2", "r-live"]  # not r1, not "other"
        assert sorted(r.run_id for r in client.list_runs(parent_run_id="r1")) == ["c1", "c2"]
        assert client.list_runs(experiment="exp", tags={"a": "2"}) == []
    assert len(runs) == 1
    run = runs[0]
    assert (run.run_id, run.status, run.tags, sorted(run.child_run_ids)) == (
        "r1", "Failed", {"a": "1"}, ["c1", "c2"])
    assert run.is_terminal
    assert run.error is not None
    assert run.error.summary() == "ValueError: boom (UserError, exit code 3)"
    assert run.to_dict()["error"]["exit_code"] == 3


def test_get_metrics_folds_to_azure_shape(real: str) -> None:
    with QueryClient(real) as client:
        assert client.get_metrics("r1") == {"loss": [3.0, 2.0]}


def test_unknown_run_is_run_not_found_naming_run_and_collector(real: str) -> None:
    with QueryClient(real) as client, pytest.raises(RunNotFound) as info:
        client.get_run("nope")
    assert str(info.value) == (f"run 'nope' not found at collector {real}; "
                               f"list runs with `mltrail runs --collector {real}`")


def test_no_collector_is_collector_unreachable() -> None:
    with QueryClient("127.0.0.1:1", timeout=5) as client, \
            pytest.raises(CollectorUnreachable) as info:
        client.list_runs()
    assert str(info.value).startswith(
        "cannot reach the collector at 127.0.0.1:1 (connection refused); check the address, "
        "or start a collector there with `mltrail collector --grpc 127.0.0.1:1`")


# ---- logs ---------------------------------------------------------------------------------


def test_tail_yields_lines_then_reports_the_final_status(real: str) -> None:
    with QueryClient(real) as client:
        tail = client.tail_logs("r1", streams=["stdout", "stderr"], from_line=0, follow=True)
        texts = [(ln.stream, ln.line, ln.text) for ln in tail]
    assert sorted(texts) == [("stderr", 0, "c"), ("stdout", 0, "a"), ("stdout", 1, "b")]
    assert [t for t in texts if t[0] == "stdout"] == [("stdout", 0, "a"), ("stdout", 1, "b")]
    assert tail.run_status == "Failed"  # the follow ended with the run


def test_a_dropped_follow_reconnects_without_repeating_or_losing_lines(query: Any) -> None:
    # Scripted: a real collector resumes at the line asked for; this server answers the
    # reconnect from line 0 again, so the client's own skip of seen lines is what is tested.
    servicer, address = query
    first = [collector_pb2.TailLogsResponse(lines=[line("stdout", 0, "a"), line("stdout", 1, "b")]),
             grpc.StatusCode.UNAVAILABLE]
    # The server answers the reconnect from line 0 again; the client skips what it saw.
    second = [collector_pb2.TailLogsResponse(lines=[line("stdout", n, t) for n, t in
                                                    enumerate("abc")]),
              collector_pb2.TailLogsResponse(end=True, run_status=records_pb2.FAILED)]
    servicer.tail_script = [first, second]
    notices: list[Exception] = []
    with QueryClient(address) as client:
        tail = client.tail_logs("r1", follow=True)
        tail.on_reconnect = notices.append
        texts = [ln.text for ln in tail]
    assert texts == ["a", "b", "c"]
    assert [type(n).__name__ for n in notices] == ["CollectorUnreachable"]
    assert tail.run_status == "Failed"
    assert servicer.tail_calls == 2


def test_a_dropped_tail_without_follow_is_an_error(query: Any) -> None:
    # Scripted: a real collector's finished tail cannot be broken at a chosen point.
    servicer, address = query
    servicer.tail_script = [[grpc.StatusCode.UNAVAILABLE]]
    with QueryClient(address) as client, pytest.raises(CollectorUnreachable):
        list(client.tail_logs("r1"))


def test_close_ends_a_blocked_follow(real: str) -> None:
    got: list[str] = []
    with QueryClient(real) as client:
        tail = client.tail_logs("r-live", follow=True)  # the run goes on: the follow waits
        reader = threading.Thread(target=lambda: got.extend(ln.text for ln in tail))
        reader.start()
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        tail.close()
        reader.join(timeout=60)  # without close it would wait for the run's end
    assert not reader.is_alive()
    assert got == ["a"]
    assert tail.run_status is None


def test_tail_of_unknown_run_is_run_not_found(real: str) -> None:
    with QueryClient(real) as client, pytest.raises(RunNotFound):
        list(client.tail_logs("nope", follow=True))


# ---- artifacts ------------------------------------------------------------------------------


def test_download_writes_the_file_and_checks_it(real: str, tmp_path: Path) -> None:
    with QueryClient(real) as client:
        info = client.download_artifact("r1", "outputs/model.bin", tmp_path / "m.bin")
        into_dir = client.download_artifact("r1", "outputs/model.bin", tmp_path)
    assert (tmp_path / "m.bin").read_bytes() == ARTIFACT
    assert (tmp_path / "model.bin").read_bytes() == ARTIFACT
    assert info.sha256 == hashlib.sha256(ARTIFACT).hexdigest() == into_dir.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "model.bin"]


def test_a_damaged_download_leaves_nothing(real: str, collector_dir: Path,
                                          tmp_path: Path) -> None:
    # The stored file is damaged on disk (same size, other bytes): the collector serves
    # it as it is; the client checks it against its sha256 and keeps nothing.
    sha = hashlib.sha256(DAMAGED).hexdigest()
    stored = collector_dir / "artifacts" / "sha256" / sha[:2] / sha
    stored.write_bytes(DAMAGED.replace(b"damaged", b"DAMAGED"))
    with QueryClient(real) as client, pytest.raises(ArtifactCorrupt, match="damaged"):
        client.download_artifact("r1", "outputs/damaged.bin", tmp_path / "m.bin")
    assert list(tmp_path.iterdir()) == []


def test_missing_artifact_and_missing_run_are_told_apart(real: str, tmp_path: Path) -> None:
    with QueryClient(real) as client:
        with pytest.raises(ArtifactNotFound, match=re.escape("run 'r1' has no artifact 'x.txt'")):
            client.download_artifact("r1", "x.txt", tmp_path / "x")
        with pytest.raises(RunNotFound):
            client.download_artifact("nope", "x.txt", tmp_path / "x")
        assert sorted(a.path for a in client.list_artifacts("r1")) == [
            "outputs/damaged.bin", "outputs/model.bin"]
    assert list(tmp_path.iterdir()) == []


def test_one_client_serves_several_with_blocks(real: str) -> None:
    client = QueryClient(real)
    with client:
        assert client.get_run("r1").run_id == "r1"
    with client:
        assert client.get_run("r1").status == "Failed"
    client.close()
    client.close()  # idempotent
