"""The background sender against an in-memory sink and a real spool for overflow."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mltrail.agent.spool import Spool
from mltrail.common.errors import RetryableError
from mltrail.pipeline.offline import SpoolOverflow, read_records
from mltrail.pipeline.sender import MAX_BATCH_BYTES, MAX_ITEM_BYTES, MemorySink, Sender
from mltrail.pipeline.values import LOG, SCALAR
from mltrail.proto import agent_pb2, records_pb2


def scalar(i: int) -> tuple[object, ...]:
    return (SCALAR, "run-1", time.time_ns(), "loss", "", float(i), i)


def seqs(sink: MemorySink) -> list[int]:
    return [r.seq for r in sink.records()]


def test_records_arrive_in_order_gap_free_on_one_stream() -> None:
    sink = MemorySink()
    sender = Sender(sink, interval=0.01)
    for i in range(12_000):
        sender.enqueue(scalar(i))
    assert sender.flush(10) == 0
    records = sink.records()
    assert [r.seq for r in records] == list(range(1, 12_001))
    assert [r.metric.scalar.step for r in records] == list(range(12_000))
    assert {q.stream_id for q in sink.received} == {sender.stream_id}
    spans = [(q.first_seq, q.last_seq) for q in sink.received]
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(spans))
    assert max(last - first + 1 for first, last in spans) <= 5000  # batches are cut
    sender.close(1)


def test_unreachable_sink_never_blocks_and_everything_is_resent_later() -> None:
    sink = MemorySink()
    sink.down = True
    sender = Sender(sink, interval=0.01)
    for i in range(1000):
        sender.enqueue(scalar(i))  # returns with the sink down (its cost: bench/sdk_log.py)
    assert sender.flush(0.3) == 1000  # nothing acknowledged while it is down
    assert sink.calls >= 1
    sink.down = False
    assert sender.flush(10) == 0
    assert seqs(sink) == list(range(1, 1001))  # re-sent once, in order, no gaps
    assert sender.stats.records_acked == 1000
    sender.close(1)


def test_a_refused_batch_is_counted_and_later_batches_still_go() -> None:
    sink = MemorySink()
    sink.refuse = {1}
    sender = Sender(sink, interval=0.01)
    sender.enqueue(scalar(0))
    assert sender.flush(5) == 0
    sender.enqueue(scalar(1))
    assert sender.flush(5) == 0
    assert sender.stats.records_refused == 1
    assert seqs(sink) == [2]
    sender.close(1)


def test_overflow_bounds_memory_and_keeps_the_stream_order(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    sink.down = True
    overflow = SpoolOverflow(tmp_path / "spill")
    sender = Sender(sink, overflow=overflow, memory_limit=20_000, interval=0.01)
    for i in range(3000):
        sender.enqueue(scalar(i))
        if i % 500 == 0:
            time.sleep(0.05)  # let the thread build batches between bursts
    deadline = time.monotonic() + 5
    while sender.stats.records_spilled == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sender.stats.records_spilled > 0
    while sender.stats.records_spilled < 2000 and time.monotonic() < deadline:
        time.sleep(0.02)  # several spills
    spills = [r for r in caplog.records if "moved from memory" in r.getMessage()]
    assert len(spills) == 1  # said once, not once per spill
    assert (tmp_path / "spill" / "segments").is_dir()
    assert sender._unacked_bytes < 20_000 + 4 * 1024 * 1024
    sink.down = False
    assert sender.flush(10) == 0
    assert seqs(sink) == list(range(1, 3001))  # disk first, then memory: order holds
    assert not overflow.has_pending()
    sender.close(1)
    assert not (tmp_path / "spill").exists()  # delivered: nothing left for `mltrail sync`


def test_close_moves_what_is_left_to_disk_for_sync(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    sender = Sender(sink, overflow=SpoolOverflow(tmp_path / "spill"), interval=0.01)
    for i in range(100):
        sender.enqueue(scalar(i))
    assert sender.close(0.2) == 100
    with Spool(tmp_path / "spill") as spool:
        assert [r.seq for r in read_records(spool)] == list(range(1, 101))


def test_flush_waits_only_for_what_was_queued_before_it() -> None:
    sink = MemorySink()
    sender = Sender(sink, interval=0.01)
    sender.enqueue(scalar(0))
    assert sender.flush(5) == 0
    assert sender.acked_seq == 1
    sender.close(1)


def test_an_item_that_cannot_be_encoded_is_refused_alone(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    sink = MemorySink()
    sender = Sender(sink, interval=0.01)
    sender.enqueue(scalar(0))
    sender.enqueue((SCALAR, "run-1", time.time_ns(), "bad\udc80", "", 1.0, None))  # unchecked
    sender.enqueue(scalar(2))
    assert sender.flush(5) == 0
    assert [r.metric.scalar.step for r in sink.records()] == [0, 2]  # its neighbours go
    assert seqs(sink) == [1, 2]  # no gap where it was
    assert sender.stats.records_refused == 1
    assert "unexpected error" not in caplog.text
    assert "could not be sent" in caplog.text
    sender.close(1)


def test_batches_are_cut_by_their_real_size_and_an_oversized_item_is_refused_alone() -> None:
    sink = MemorySink()
    sender = Sender(sink, interval=0.01)
    for i in range(100):  # strings count: 100 x 64 KiB do not fit one 4 MiB batch
        sender.enqueue((SCALAR, "run-1", time.time_ns(), "text", "", "x" * 65_536, i))
    huge = records_pb2.LogChunk(stream="stdout", data=b"x" * (MAX_ITEM_BYTES + 1))
    sender.enqueue((LOG, "run-1", time.time_ns(), huge))  # only a bug could queue this
    sender.enqueue(scalar(100))
    assert sender.flush(10) == 0
    assert max(len(q.batch) for q in sink.received) <= MAX_BATCH_BYTES + 70_000
    assert [r.metric.scalar.step for r in sink.records()] == list(range(101))
    assert seqs(sink) == list(range(1, 102))
    assert sender.stats.records_refused == 1
    sender.close(1)


class SlowSink(MemorySink):
    """An agent whose Append blocks (its spool full under `block`) until closed or released;
    closing cancels the call, as closing a gRPC channel does."""

    description = "a slow sink"

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def append(self, requests: Sequence[agent_pb2.AppendRequest]
               ) -> Iterator[agent_pb2.AppendAck]:
        self.entered.set()
        self.release.wait(30)
        if self.closed:
            raise RetryableError("CANCELLED: the channel was closed")
        yield from super().append(requests)

    def close(self) -> None:
        self.closed = True
        self.release.set()


def test_close_cancels_a_blocked_send_before_spilling(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    sink = SlowSink()
    sender = Sender(sink, overflow=SpoolOverflow(tmp_path / "spill"), interval=0.01)
    for i in range(100):
        sender.enqueue(scalar(i))
    assert sink.entered.wait(5)
    threading.Timer(6.0, sink.release.set).start()  # the agent answers after close gave up
    assert sender.close(0.2) == 100  # had it waited for the sink's answer, none would be left
    assert not sender._thread.is_alive()  # nothing runs on after close returned
    with Spool(tmp_path / "spill") as spool:
        assert [r.seq for r in read_records(spool)] == list(range(1, 101))
    assert sink.received == []  # spilled, not also delivered
    assert "unexpected error" not in caplog.text


class GatedSink(MemorySink):
    """Takes nothing until ``gate`` is set, as a busy agent would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def append(self, requests: Sequence[agent_pb2.AppendRequest]
               ) -> Iterator[agent_pb2.AppendAck]:
        self.gate.wait()
        yield from super().append(requests)


def test_console_output_waits_for_room_instead_of_filling_memory() -> None:
    sink = GatedSink()
    # Building stops at 1 MiB unacknowledged; console items may queue up to 1 MiB more.
    sender = Sender(sink, memory_limit=1 << 20, interval=0.01)
    piece = 256 * 1024
    sent = []

    def console() -> None:
        for i in range(32):  # 8 MiB: far more than fits
            chunk = records_pb2.LogChunk(stream="stdout", data=b"%07d\n" % i * (piece // 8))
            sender.enqueue_waiting((LOG, "run-1", time.time_ns(), chunk), piece, 1 << 20)
            sent.append(i)

    writer = threading.Thread(target=console)
    writer.start()
    # both bounds reached: building stopped and the console queue is full, so the writer
    # waits (had it not, it would be done with all 32 pieces)
    deadline = time.monotonic() + 60
    while not (sender._unacked_bytes >= 1 << 20 and sender._waiting_bytes >= 1 << 20):
        assert time.monotonic() < deadline and writer.is_alive(), "the console never waited"
        time.sleep(0.01)
    assert writer.is_alive(), "the console never waited"
    assert len(sent) <= 16  # about 1 MiB built and 1 MiB queued, in 256 KiB pieces
    sender.enqueue(scalar(1))  # other records never wait
    sink.gate.set()
    writer.join(timeout=20)
    assert not writer.is_alive() and len(sent) == 32
    assert sender.close(20) == 0
    logs = [r.log.data for r in sink.records() if r.WhichOneof("body") == "log"]
    assert logs == [b"%07d\n" % i * (piece // 8) for i in range(32)]
