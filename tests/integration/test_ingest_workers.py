"""Ingest prepared in worker processes (collector/prepare_pool.py), on both stores.

Refusals read as they did when the writer thread validated; a worker killed
by SIGKILL while requests flow costs nothing acknowledged and stores nothing
twice; several streams at once each land once and in order.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from mltrail.collector.prepare_pool import INLINE_BYTES
from mltrail.collector.validate import BatchRejected, validate_batch
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from tests import builders as b
from tests.procs import Service, children

INVALID = 3


@pytest.fixture
def collector(collector_on_each_store: Service) -> Service:
    return collector_on_each_store


def scalar_values(collector: Service, run_id: str) -> list[float]:
    channel = grpc.insecure_channel(collector.grpc, options=[
        ("grpc.max_receive_message_length", b.MAX_MESSAGE)])
    try:
        response = collector_pb2_grpc.QueryStub(channel).GetMetrics(
            collector_pb2.GetMetricsRequest(run_id=run_id, name="loss"), timeout=120)
    finally:
        channel.close()
    return [r.metric.scalar.value.number for r in response.records]


def metric(collector: Service, name: str) -> float:
    with urllib.request.urlopen(f"http://{collector.http}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def workers(collector: Service) -> list[int]:
    """The ingest worker processes: the children of the collector's forkserver."""
    return [p for child in children(collector.info["pid"]) for p in children(child)]


def requests(run_id: str, stream_id: str, count: int, per_batch: int
             ) -> list[collector_pb2.IngestRequest]:
    return [collector_pb2.IngestRequest(request_id=n + 1, batches=[batch]) for n, batch in
            enumerate(b.scalar_batches(run_id, stream_id, count, per_batch))]


def push(collector: Service, stream: list[collector_pb2.IngestRequest],
         answers: list[collector_pb2.BatchResult]) -> None:
    """Every request on one stream, pipelined; every batch result into ``answers``."""
    with b.IngestClient(collector.grpc) as client:
        for response in client.write_stream(stream):
            answers.extend(response.results)


def test_a_batch_refused_in_a_worker_reads_as_before(collector: Service) -> None:
    bad = [
        b.batch("", [b.scalar(1, "r", "loss", 1.0)]),
        b.batch("s2", [b.scalar(1, "r", "loss", 1.0), b.scalar(3, "r", "loss", 1.0)]),
        b.batch("s3", [b.scalar(1, "r", "lo\x1bss", 1.0)]),
        b.batch("s4", [b.record(1, "r", metric=records_pb2.Metric(
            name="cm", json=records_pb2.JsonMetric(json='{"v": NaN}')))]),
        b.batch("s5", [b.record(1, "r")]),
    ]
    expected = []
    for batch in bad:
        with pytest.raises(BatchRejected) as info:
            validate_batch(batch)
        expected.append(str(info.value))
    # enough good records that the request goes to a worker (past INLINE_BYTES)
    good = b.batch("s6", [b.scalar(seq, "r", "loss", seq + 0.5) for seq in range(1, 501)])
    request = collector_pb2.IngestRequest(request_id=1, batches=[bad[0], good, *bad[1:]])
    assert request.ByteSize() > INLINE_BYTES
    with b.IngestClient(collector.grpc) as client:
        response = client.write([bad[0], good, *bad[1:]])
    results = list(response.results)
    assert [(r.code, r.message) for r in results[:1] + results[2:]] == [
        (INVALID, message) for message in expected]
    assert (results[1].code, results[1].stored) == (0, 500)
    assert scalar_values(collector, "r") == [seq + 0.5 for seq in range(1, 501)]


def test_a_worker_killed_mid_stream_loses_and_doubles_nothing(collector: Service) -> None:
    run_id, stream_id = b.new_stream_id(), b.new_stream_id()
    total, per_batch = 300_000, 5_000
    answers: list[collector_pb2.BatchResult] = []
    sender = threading.Thread(target=push, args=(
        collector, requests(run_id, stream_id, total, per_batch), answers))
    sender.start()
    killed = 0
    try:
        # Kill while many requests are still to be prepared, so that some preparation
        # is cut short or refused by the broken pool and must be done again.
        while killed < 3 and len(answers) < total // per_batch - 20:
            wait_for("ingest workers", lambda: bool(workers(collector)), timeout=300)
            acked = len(answers)

            def progressed(acked: int = acked) -> bool:
                return len(answers) > acked or not sender.is_alive()

            wait_for("a request acknowledged since the last kill", progressed, timeout=300)
            victims = workers(collector)
            if victims and len(answers) < total // per_batch - 20:
                os.kill(victims[0], signal.SIGKILL)
                killed += 1
    finally:
        sender.join(timeout=600)
    assert killed >= 1 and metric(collector, "mltrail_collector_prepare_retries_total") >= 1
    assert all(r.code == 0 for r in answers), [r.message for r in answers if r.code]
    assert sum(r.stored for r in answers) == total
    assert [r.acked_seq for r in answers] == list(range(per_batch, total + 1, per_batch))
    assert scalar_values(collector, run_id) == [s * 0.5 for s in range(1, total + 1)]
    after = b.batch(stream_id, [b.scalar(total + 1, run_id, "loss", 1.0)])
    with b.IngestClient(collector.grpc) as client:  # the collector goes on
        assert client.write([after]).results[0].stored == 1


def test_several_writers_at_once_each_land_once_in_order(collector: Service) -> None:
    streams = [(b.new_stream_id(), b.new_stream_id()) for _ in range(4)]
    per_stream, per_batch = 40_000, 2_000
    answers: list[list[collector_pb2.BatchResult]] = [[] for _ in streams]
    senders = [threading.Thread(target=push, args=(
        collector, requests(run_id, stream_id, per_stream, per_batch), answers[i]))
        for i, (run_id, stream_id) in enumerate(streams)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=600)
    for (run_id, _), results in zip(streams, answers, strict=True):
        assert [(r.code, r.stored, r.duplicates) for r in results] == [
            (0, per_batch, 0)] * (per_stream // per_batch)
        assert scalar_values(collector, run_id) == [s * 0.5 for s in range(1, per_stream + 1)]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_the_workers_start_with_a_large_request_and_end_when_the_collector_is_killed(
        collector: Service) -> None:
    run_id, answers = b.new_stream_id(), []
    small = requests(run_id, b.new_stream_id(), 100, 100)
    assert small[0].ByteSize() < INLINE_BYTES
    push(collector, small, answers)  # prepared on the writer thread: no worker started
    assert workers(collector) == []
    push(collector, requests(run_id, b.new_stream_id(), 20_000, 5_000), answers)
    wait_for("ingest workers", lambda: len(workers(collector)) == 2)
    assert [(r.code, r.stored) for r in answers] == [(0, 100)] + [(0, 5_000)] * 4
    below = children(collector.info["pid"]) + workers(collector)
    collector.kill()  # SIGKILL: no shutdown runs
    wait_for("every process the collector started to end", lambda: all(map(gone, below)))
