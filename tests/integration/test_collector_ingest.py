"""Ingest.Write against a real collector process (SQLite in tmp_path, and PostgreSQL),
checked through Query.

Each refusal gets its documented answer, the collector keeps serving, and
nothing partial is stored; replays and a kill -9 in mid-stream store every
record exactly once.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mltrail.common.lines import LINE_SPLIT_MARKER, MAX_LINE_BYTES
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from tests import builders as b
from tests.procs import Service

INVALID, OK = 3, 0


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


def metric_values(query: collector_pb2_grpc.QueryStub, run_id: str, name: str = "") -> list:
    response = query.GetMetrics(collector_pb2.GetMetricsRequest(run_id=run_id, name=name))
    values = [r.metric.scalar.value for r in response.records]
    return [getattr(v, v.WhichOneof("kind") or "number") for v in values]


def run_exists(query: collector_pb2_grpc.QueryStub, run_id: str) -> bool:
    try:
        query.GetRun(collector_pb2.GetRunRequest(run_id=run_id))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        assert f"run {run_id!r} not found" in (exc.details() or "")
        return False
    return True


def test_batch_sent_twice_is_stored_once(ingest: b.IngestClient, query) -> None:
    batch = b.batch("s1", [b.started(1, "r"), b.scalar(2, "r", "loss", 0.5),
                           b.scalar(3, "r", "loss", 0.25)])
    first = ingest.write([batch]).results[0]
    second = ingest.write([batch]).results[0]
    assert (first.code, first.acked_seq, first.stored) == (OK, 3, 3)
    assert (second.code, second.acked_seq, second.stored, second.duplicates) == (OK, 3, 0, 3)
    assert metric_values(query, "r") == [0.5, 0.25]


def test_replay_after_restart_is_stored_once(collector: Service, tmp_path) -> None:
    batches = list(b.scalar_batches("r", "s1", 3000, per_batch=1000))
    with b.IngestClient(collector.grpc) as client:
        assert all(r.code == OK for r in client.write(batches[:2]).results)
    collector.stop()
    collector.start()
    with b.IngestClient(collector.grpc) as client:
        results = client.write(batches).results
    assert [(r.stored, r.duplicates) for r in results] == [(0, 1000), (0, 1000), (1000, 0)]
    channel = grpc.insecure_channel(collector.grpc, options=[
        ("grpc.max_receive_message_length", b.MAX_MESSAGE)])
    steps = [r.metric.scalar.step for r in collector_pb2_grpc.QueryStub(channel).GetMetrics(
        collector_pb2.GetMetricsRequest(run_id="r")).records]
    channel.close()
    assert steps == list(range(1, 3001))


@pytest.mark.parametrize(("records", "expected"), [
    ([b.scalar(1, "bad", "m", 1.0), b.scalar(3, "bad", "m", 1.0)], "seq 3 where 2 was expected"),
    ([b.scalar(1, "bad", "m", 1.0), b.record(2, "bad", run_event=records_pb2.RunEvent())],
     "unknown run event"),
    ([b.scalar(1, "bad", "m", 1.0), b.record(2, "bad", metric=records_pb2.Metric(
        name="cm", json=records_pb2.JsonMetric(json='{"x": [1, NaN]}')))], "not strict JSON"),
])
def test_invalid_batch_is_refused_whole_and_others_are_stored(
        ingest: b.IngestClient, query, records, expected: str) -> None:
    good = b.batch("good", [b.scalar(1, "good-run", "loss", math.nan)])
    bad = b.batch("bad-stream", records)
    results = ingest.write([bad, good]).results
    assert results[0].code == INVALID
    assert expected in results[0].message
    assert "stream 'bad-stream'" in results[0].message
    assert "nothing of this batch was stored" in results[0].message
    assert results[1].code == OK and results[1].stored == 1
    assert not run_exists(query, "bad")  # nothing of the bad batch, not even its run
    assert math.isnan(metric_values(query, "good-run")[0])  # a NaN scalar is kept
    after = ingest.write([b.batch("bad-stream", [b.scalar(1, "bad", "m", 2.0)])]).results[0]
    assert (after.code, after.stored) == (OK, 1)  # the refusal left no high-water mark


def test_ten_megabyte_line_is_stored_split_with_marker(ingest: b.IngestClient, query) -> None:
    line = (b"0123456789abcdef" * (10 * 1024 * 1024 // 16))
    result = ingest.write([b.batch("s", [b.log(1, "r", b"before\n" + line + b"\nafter\n")])])
    assert result.results[0].code == OK
    lines = [ln for resp in query.TailLogs(collector_pb2.TailLogsRequest(run_id="r"))
             for ln in resp.lines]
    assert lines[0].text == "before" and lines[-1].text == "after"
    pieces = [ln.text for ln in lines[1:-1]]
    assert len(pieces) == math.ceil(len(line) / (MAX_LINE_BYTES - len(LINE_SPLIT_MARKER)))
    assert all(len(p.encode()) <= MAX_LINE_BYTES for p in pieces)  # marker included
    assert all(p.endswith(LINE_SPLIT_MARKER.decode()) for p in pieces[:-1])
    assert "".join(pieces).replace(LINE_SPLIT_MARKER.decode(), "").encode() == line
    assert [ln.line for ln in lines] == list(range(len(pieces) + 2))


def test_bytes_that_are_not_utf8_are_kept_with_replacement(ingest: b.IngestClient,
                                                            query) -> None:
    ingest.write([b.batch("s", [b.log(1, "r", b"caf\xe9 \xff\n\x80ok\n", stream="stderr")])])
    lines = [ln for resp in query.TailLogs(collector_pb2.TailLogsRequest(run_id="r"))
             for ln in resp.lines]
    assert [(ln.stream, ln.text) for ln in lines] == [
        ("stderr", "caf\ufffd \ufffd"), ("stderr", "\ufffdok")]


def test_random_bytes_on_the_wire_get_invalid_argument(collector: Service,
                                                       ingest: b.IngestClient) -> None:
    channel = grpc.insecure_channel(collector.grpc)
    write = channel.stream_stream("/mltrail.v1.Ingest/Write", request_serializer=None,
                                  response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        list(write(iter([b"\xff\xfe\xfd" + os.urandom(64)]), timeout=10))
    channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not an IngestRequest" in (info.value.details() or "")
    assert ingest.write([b.batch("s", [b.scalar(1, "r", "m", 1.0)])]).results[0].code == OK


def _send_until_killed(collector: Service, requests: list[collector_pb2.IngestRequest],
                       kill_after: int) -> int:
    """Pipelined sends; SIGKILL after ``kill_after`` responses. Returns the acked seq."""
    window = threading.Semaphore(8)

    def paced() -> Iterator[collector_pb2.IngestRequest]:
        for request in requests:
            window.acquire()
            yield request

    acked = 0
    client = b.IngestClient(collector.grpc)
    try:
        for n, response in enumerate(client.write_stream(paced(), timeout=120), 1):
            window.release()
            acked = response.results[0].acked_seq
            if n == kill_after:
                collector.kill()
                break
    except grpc.RpcError:
        pass
    finally:
        client.close()
    return acked


def test_kill_9_mid_stream_then_resend_stores_exactly_once(collector: Service) -> None:
    total, per_batch = 100_000, 1000
    requests = [collector_pb2.IngestRequest(request_id=i, batches=[batch]) for i, batch in
                enumerate(b.scalar_batches("r", "s", total, per_batch), 1)]
    acked = _send_until_killed(collector, requests, kill_after=30)
    assert 0 < acked < total
    collector.start()
    rest = [r for r in requests if r.batches[0].records[-1].seq > acked]
    with b.IngestClient(collector.grpc) as client:
        results = [res for resp in client.write_stream(iter(rest)) for res in resp.results]
    assert all(r.code == OK for r in results)
    assert results[-1].acked_seq == total
    channel = grpc.insecure_channel(collector.grpc, options=[
        ("grpc.max_receive_message_length", b.MAX_MESSAGE)])
    records = collector_pb2_grpc.QueryStub(channel).GetMetrics(
        collector_pb2.GetMetricsRequest(run_id="r", name="loss")).records
    channel.close()
    steps = [r.metric.scalar.step for r in records]
    assert len(steps) == total
    assert steps == list(range(1, total + 1))  # each once, in order


def test_a_failed_request_closes_the_stream_so_later_ones_cannot_overtake_it(
        tmp_path: Path) -> None:
    """Requests pipelined on one stream: when the store fails on the first, the second
    must not be committed before it (its high-water mark would make the resend of the
    first look like duplicates); the stream closes and an in-order resend stores all."""
    import sqlite3
    import time

    db = tmp_path / "busy.db"
    svc = Service("collector", ["--store", f"sqlite:///{db}?busy_timeout_ms=100",
                                "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
                                "--artifacts", str(tmp_path / "art")], tmp_path).start()
    first = b.batch("s", [b.scalar(seq, "run-busy", "m", float(seq)) for seq in (1, 2)])
    second = b.batch("s", [b.scalar(seq, "run-busy", "m", float(seq)) for seq in (3, 4)])
    requests = [collector_pb2.IngestRequest(request_id=i, batches=[batch])
                for i, batch in ((1, first), (2, second))]
    released = threading.Event()

    def send() -> Iterator[collector_pb2.IngestRequest]:
        yield requests[0]
        released.wait(10)  # the second request is sent once the store is free again
        yield requests[1]

    try:
        with b.IngestClient(svc.grpc) as client:
            client.write([b.batch("warm", [b.started(1, "run-busy")])])  # creates the schema
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            responses = client.write_stream(send(), timeout=30)
            answer = next(responses)
            blocker.execute("ROLLBACK")
            blocker.close()
            released.set()
            assert answer.results[0].code == 14
            with pytest.raises(grpc.RpcError) as closed:
                next(responses)
            assert closed.value.code() == grpc.StatusCode.UNAVAILABLE
            time.sleep(0.3)  # had the second request been read, it would be stored by now
            again = list(client.write_stream(iter(requests)))
        assert [r.results[0].stored for r in again] == [2, 2]
        with grpc.insecure_channel(svc.grpc) as channel:
            assert metric_values(collector_pb2_grpc.QueryStub(channel), "run-busy") == [
                1.0, 2.0, 3.0, 4.0]
    finally:
        svc.stop()


def test_seq_beyond_the_store_range_is_refused_and_the_stream_goes_on(
        ingest: b.IngestClient, query) -> None:
    """A seq of 2**63 once crashed the store write (OverflowError), the RPC failed with
    UNKNOWN, and the agent resent it forever (finding 1)."""
    huge = 2**63
    bad = b.batch("s", [b.scalar(huge, "r", "m", 1.0)])
    bad_artifact = b.batch("t", [b.record(1, "r", artifact=records_pb2.ArtifactChunk(
        path="f", offset=huge, data=b"x"))])
    results = ingest.write([bad, bad_artifact]).results
    assert [(r.code, "nothing of this batch was stored" in r.message) for r in results] == [
        (INVALID, True), (INVALID, True)]
    after = ingest.write([b.batch("s", [b.scalar(1, "r", "m", 2.0)])]).results[0]
    assert (after.code, after.stored) == (OK, 1)
    assert metric_values(query, "r") == [2.0]


def test_the_collector_refuses_a_name_a_terminal_would_act_on(collector: Service) -> None:
    with b.IngestClient(collector.grpc) as client:
        bad = client.write([b.batch(b.new_stream_id(),
                                    [b.scalar(1, "run\x1b]0;owned\x07", "loss", 1.0)])])
        good = client.write([b.batch(b.new_stream_id(), [b.scalar(1, "fine", "loss", 1.0)])])
    assert bad.results[0].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "run_id" in bad.results[0].message and "U+001B" in bad.results[0].message
    assert good.results[0].code == 0
