"""IngestPipeline on a real SqliteStore: answers per batch, busy store, counters."""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.ingest import IngestPipeline, IngestService
from mltrail.collector.metrics import CollectorMetrics
from mltrail.collector.notify import LogNotifier
from mltrail.collector.store import Store, ValidBatch, WriteSummary, open_store
from mltrail.collector.store.sqlite import SqliteStore
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from tests import builders as b
from tests.procs import collector_service


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}?busy_timeout_ms=50",
                   ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def handle(pipeline: IngestPipeline, *batches: records_pb2.Batch) -> collector_pb2.IngestResponse:
    raw = collector_pb2.IngestRequest(request_id=7, batches=batches).SerializeToString()
    encoded, _, _ = pipeline.write(raw)
    return collector_pb2.IngestResponse.FromString(encoded)


def sample(metrics: CollectorMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_results_in_request_order(store: Store) -> None:
    metrics = CollectorMetrics()
    response = handle(IngestPipeline(store, metrics),
                      b.batch("a", [b.scalar(1, "r", "m", 1.0)]),
                      b.batch("", [b.scalar(1, "r", "m", 1.0)]),
                      b.batch("c", [b.log(1, "r", b"x\n")]))
    assert response.request_id == 7
    assert [(r.stream_id, r.code) for r in response.results] == [("a", 0), ("", 3), ("c", 0)]
    assert sample(metrics, "mltrail_collector_rejected_batches_total", reason="no_stream") == 1
    assert sample(metrics, "mltrail_collector_records_total", kind="log") == 1


def test_busy_store_answers_unavailable_with_retry_delay(tmp_path: Path) -> None:
    """A real collector whose SQLite file another connection holds in a write transaction."""
    db = tmp_path / "store.db"
    collector = collector_service(tmp_path, store=f"sqlite:///{db}?busy_timeout_ms=50").start()
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        with b.IngestClient(collector.grpc) as ingest:
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            request = collector_pb2.IngestRequest(
                request_id=1, batches=[b.batch("s", [b.scalar(1, "r", "m", 1.0)])])
            answers = ingest.write_stream([request])
            try:
                busy = next(answers).results[0]
                # then the stream ends: what came after it on the stream was not processed
                with pytest.raises(grpc.RpcError) as ended:
                    next(answers)
            finally:
                blocker.execute("ROLLBACK")
            again = ingest.write([b.batch("s", [b.scalar(1, "r", "m", 1.0)])]).results[0]
        with urllib.request.urlopen(f"http://{collector.http}/metrics", timeout=30) as page:
            metrics = page.read().decode()
    finally:
        blocker.close()
        collector.stop()
    assert busy.code == 14 and busy.retry_after_ms == 500
    assert "nothing of this batch was stored" in busy.message
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "mltrail_collector_retryable_failures_total 1.0" in metrics
    assert (again.code, again.stored) == (0, 1)


def test_undecodable_request_raises_decode_error(store: Store) -> None:
    with pytest.raises(DecodeError):
        IngestPipeline(store, CollectorMetrics()).write(b"\xff\xff\xff\xff")


def test_latest_values_follow_the_experiment_and_cap_series() -> None:
    metrics = CollectorMetrics(max_series=2)
    metrics.latest.update({("r", "a"): ("", 1.0), ("r", "b"): ("", 2.0)})
    metrics.latest.update({("r", "a"): ("exp", 3.0), ("r", "c"): ("exp", 4.0)})
    text = {(s.labels["experiment"], s.labels["metric"]): s.value
            for family in metrics.latest.collect() for s in family.samples}
    assert text == {("exp", "a"): 3.0, ("exp", "b"): 2.0}
    assert sample(metrics, "mltrail_run_metric_series_dropped_total") == 1


async def test_notifier_does_not_miss_a_commit_between_read_and_wait() -> None:
    notifier = LogNotifier()
    seen = notifier.version("r")
    notifier.notify(["r"])  # lands after the follower read, before it waits
    await asyncio.wait_for(notifier.wait("r", seen, timeout=30), timeout=1)
    waiter = asyncio.ensure_future(notifier.wait("r", notifier.version("r"), timeout=30))
    await asyncio.sleep(0.01)
    notifier.notify(["r"])
    await asyncio.wait_for(waiter, timeout=1)


class _CrashingStore(SqliteStore):
    """A store whose write raises what no store should: an error of neither kind.

    A fake on purpose: the real collector validates every field before its store sees
    it (seqs, gap bounds, artifact offsets and sizes beyond SQLite's INTEGER are refused
    as INVALID_ARGUMENT naming the field), so no input makes the real store raise this;
    what is tested is the answer to a bug."""

    def write_batch(self, batches: Sequence[ValidBatch]) -> WriteSummary:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")


async def test_unexpected_store_error_aborts_with_invalid_argument(tmp_path: Path) -> None:
    """An unexpected exception used to fail the RPC with UNKNOWN, which the agent retries
    forever; INVALID_ARGUMENT makes it isolate and set the batch aside (finding 1)."""
    metrics = CollectorMetrics()
    store = _CrashingStore(tmp_path / "store.db", ArtifactStore(tmp_path / "art"))
    writer = ThreadPoolExecutor(1)
    service = IngestService(IngestPipeline(store, metrics), writer, LogNotifier(),
                            asyncio.Event())
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    request = collector_pb2.IngestRequest(
        request_id=1, batches=[b.batch("s", [b.scalar(1, "r", "m", 1.0)])])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = collector_pb2_grpc.IngestStub(channel).Write(iter([request]))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                _ = [response async for response in call]
    finally:
        await server.stop(None)
        writer.shutdown()
        store.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "OverflowError" in (info.value.details() or "")
    assert sample(metrics, "mltrail_collector_rejected_batches_total", reason="internal") == 1
