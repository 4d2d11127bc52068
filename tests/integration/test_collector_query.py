"""Query against a real collector process (SQLite and PostgreSQL): follow, artifacts,
/metrics, runs."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from tests import builders as b
from tests.procs import Service

OK, INVALID = 0, 3


@pytest.fixture
def collector(collector_on_each_store: Service) -> Service:
    """Every test of this module runs on SQLite and on PostgreSQL."""
    return collector_on_each_store


@pytest.fixture
def ingest(collector: Service) -> Iterator[b.IngestClient]:
    with b.IngestClient(collector.grpc) as client:
        yield client


@pytest.fixture
def query(collector: Service) -> Iterator[collector_pb2_grpc.QueryStub]:
    channel = grpc.insecure_channel(collector.grpc, options=[
        ("grpc.max_receive_message_length", b.MAX_MESSAGE)])
    yield collector_pb2_grpc.QueryStub(channel)
    channel.close()


def follow_into(query: collector_pb2_grpc.QueryStub, run_id: str,
                sink: queue.Queue[collector_pb2.TailLogsResponse | None]) -> threading.Thread:
    def pump() -> None:
        for response in query.TailLogs(collector_pb2.TailLogsRequest(run_id=run_id,
                                                                     follow=True), timeout=30):
            sink.put(response)
        sink.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def next_lines(sink: queue.Queue[collector_pb2.TailLogsResponse | None],
               timeout: float) -> list[str]:
    response = sink.get(timeout=timeout)
    assert response is not None
    return [line.text for line in response.lines]


def test_follow_gets_new_lines_and_ends_with_the_run(ingest: b.IngestClient,
                                                              query) -> None:
    ingest.write([b.batch("s", [b.started(1, "r"), b.log(2, "r", b"first\n")])])
    sink: queue.Queue[collector_pb2.TailLogsResponse | None] = queue.Queue()
    thread = follow_into(query, "r", sink)
    assert next_lines(sink, timeout=30) == ["first"]
    ingest.write([b.batch("s", [b.log(3, "r", b"second\nthird\n")])])
    assert next_lines(sink, timeout=30) == ["second", "third"]
    ingest.write([b.batch("s", [b.log(4, "r", b"last\n"), b.ended(5, "r")])])
    rest = []
    while (response := sink.get(timeout=30)) is not None:
        rest.append(response)
    thread.join(timeout=30)
    assert [ln.text for resp in rest for ln in resp.lines] == ["last"]
    assert rest[-1].end and rest[-1].run_status == records_pb2.COMPLETED


def test_tail_logs_ranges_and_streams(ingest: b.IngestClient, query) -> None:
    ingest.write([b.batch("s", [b.log(1, "r", b"a0\na1\na2\n"),
                                b.log(2, "r", b"e0\n", stream="stderr")])])
    lines = [ln for resp in query.TailLogs(collector_pb2.TailLogsRequest(
        run_id="r", streams=["stdout"], from_line=1, to_line=2)) for ln in resp.lines]
    assert [(ln.stream, ln.line, ln.text) for ln in lines] == [("stdout", 1, "a1")]


def test_artifact_round_trip_and_sha_mismatch_refused(ingest: b.IngestClient, query) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    records = b.artifact(1, "r", "outputs/model.bin", data, piece=512 * 1024)
    assert all(res.code == OK for res in ingest.write([b.batch("a", records)]).results)
    listed = query.ListArtifacts(collector_pb2.ListArtifactsRequest(run_id="r")).artifacts
    assert [(a.path, a.size, a.sha256) for a in listed] == [
        ("outputs/model.bin", len(data), hashlib.sha256(data).hexdigest())]
    parts = list(query.DownloadArtifact(collector_pb2.DownloadArtifactRequest(
        run_id="r", path="outputs/model.bin")))
    assert all(len(p.data) <= 1024 * 1024 for p in parts)
    assert parts[0].info.size == len(data)
    assert b"".join(p.data for p in parts) == data
    bad = b.artifact(1, "r", "bad.bin", b"payload", sha256="ab" * 32)
    result = ingest.write([b.batch("bad", bad)]).results[0]
    assert result.code == INVALID
    assert f"expected {'ab' * 32}" in result.message
    assert f"actual {hashlib.sha256(b'payload').hexdigest()}" in result.message
    with pytest.raises(grpc.RpcError) as info:
        list(query.DownloadArtifact(collector_pb2.DownloadArtifactRequest(run_id="r",
                                                                         path="bad.bin")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_runs_listing_and_not_found(ingest: b.IngestClient, query) -> None:
    ingest.write([b.batch("s", [b.started(1, "old", experiment="e1"),
                                b.started(2, "new", experiment="e1", tags={"k": "v"}),
                                b.started(3, "other", experiment="e2")])])
    runs = query.ListRuns(collector_pb2.ListRunsRequest(experiment="e1")).runs
    assert [r.run_id for r in runs] == ["new", "old"]  # newest first
    tagged = query.ListRuns(collector_pb2.ListRunsRequest(tags={"k": "v"})).runs
    assert [r.run_id for r in tagged] == ["new"]
    with pytest.raises(grpc.RpcError) as info:
        query.GetRun(collector_pb2.GetRunRequest(run_id="missing"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "run 'missing' not found"


def scrape(service: Service) -> str:
    with urllib.request.urlopen(f"http://{service.http}/metrics", timeout=10) as response:
        return response.read().decode()


def test_metrics_endpoint_counts_and_latest_values(collector: Service,
                                                   ingest: b.IngestClient) -> None:
    batch = b.batch("s", [b.started(1, "r", experiment="exp1"), b.scalar(2, "r", "loss", 0.5),
                          b.scalar(3, "r", "loss", 0.25), b.scalar(4, "r", "note", "text")])
    ingest.write([batch])
    ingest.write([batch])
    ingest.write([b.batch("s2", [b.scalar(1, "r", "m", 1.0), b.scalar(3, "r", "m", 1.0)])])
    text = scrape(collector)
    assert 'mltrail_run_metric{experiment="exp1",metric="loss",run="r"} 0.25' in text
    assert 'metric="note"' not in text  # text scalars are not gauges
    assert "mltrail_collector_batches_total 2.0" in text  # the replay is acknowledged too
    assert 'mltrail_collector_records_total{kind="metric"} 3.0' in text
    assert "mltrail_collector_duplicates_total 4.0" in text
    assert 'mltrail_collector_rejected_batches_total{reason="seq"} 1.0' in text
    assert "mltrail_collector_store_seconds_count" in text
    with urllib.request.urlopen(f"http://{collector.http}/healthz", timeout=10) as response:
        assert response.status == 200


def test_run_metric_series_are_capped(tmp_path: Path) -> None:
    svc = Service("collector", ["--store", f"sqlite:///{tmp_path / 's.db'}", "--grpc",
                                "127.0.0.1:0", "--http", "127.0.0.1:0", "--artifacts",
                                str(tmp_path / "a")], tmp_path,
                  env={"MLTRAIL_COLLECTOR_MAX_METRIC_SERIES": "2"})
    svc.start()
    try:
        with b.IngestClient(svc.grpc) as client:
            client.write([b.batch("s", [b.scalar(i, "r", f"m{i}", float(i))
                                        for i in range(1, 5)])])
        text = scrape(svc)
    finally:
        svc.stop()
    assert text.count("mltrail_run_metric{") == 2
    assert "mltrail_run_metric_series_dropped_total 2.0" in text


def test_runs_and_artifacts_are_read_in_pages_with_no_total_limit(
        ingest: b.IngestClient, collector: Service) -> None:
    from mltrail.query.client import QueryClient

    runs = [b.started(i + 1, f"run-{i:04d}") for i in range(1203)]
    ingest.write([b.batch("runs", runs)])
    files = [rec for i in range(1005)
             for rec in b.artifact(1 + i, "run-0000", f"f/{i:04d}.txt", str(i).encode())]
    ingest.write([b.batch("files", files)])
    with QueryClient(collector.grpc) as client:
        every = client.list_runs(limit=0)
        assert len({r.run_id for r in every}) == len(every) == 1203
        assert len(client.list_runs(limit=700)) == 700
        assert [r.run_id for r in client.list_runs(limit=3)] == [r.run_id for r in every[:3]]
        paths = [a.path for a in client.list_artifacts("run-0000")]
    assert paths == [f"f/{i:04d}.txt" for i in range(1005)]
