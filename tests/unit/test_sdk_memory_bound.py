"""The sender's one memory bound: what it counts, and what it does past it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mltrail.agent.spool import Spool
from mltrail.common.errors import MltrailError
from mltrail.pipeline.link import memory_limit
from mltrail.pipeline.offline import SpoolOverflow, SpoolSink, read_records
from mltrail.pipeline.sender import DEFAULT_MEMORY_LIMIT, MemorySink, Sender
from mltrail.pipeline.values import CONSOLE, LIST, ROW, SCALAR, TABLE, QueueItem, held_size
from mltrail.proto import agent_pb2, records_pb2

MIB = 1 << 20
TEXT = "x" * (64 * 1024 - 16)


def text(i: int) -> QueueItem:
    return (SCALAR, "run-1", time.time_ns(), "text", "", f"{i:016d}{TEXT}", i)


def deep_size(value: Any) -> int:
    """What Python objects take (sys.getsizeof, followed into containers)."""
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        return size + sum(deep_size(k) + deep_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return size + sum(deep_size(v) for v in value)
    return size


@pytest.mark.parametrize("item", [
    (SCALAR, "run-1", 1, "loss", "", 0.5, 3),
    (SCALAR, "run-1", 1, "note", "a description", "é" * 5000, None),
    (LIST, "run-1", 1, "sizes", "", [float(i) for i in range(10_000)]),
    (LIST, "run-1", 1, "names", "", [f"name-{i}" for i in range(5_000)]),
    (ROW, "run-1", 1, "row", "", {f"col{i}": float(i) for i in range(2_000)}),
    (TABLE, "run-1", 1, "table", "", {f"c{j}": [i * 1.5 for i in range(3_000)]
                                      for j in range(4)}),
], ids=["float", "text", "floats", "strings", "row", "table"])
def test_a_queued_metric_is_counted_at_least_at_what_its_objects_take(item: QueueItem) -> None:
    # per call: the tuple, its time and its values (kind, run id and name are shared)
    own = sys.getsizeof(item) + sys.getsizeof(item[2]) + sum(deep_size(v) for v in item[5:])
    assert held_size(item) >= own


def test_console_lines_count_their_bytes_and_their_times() -> None:
    chunk = records_pb2.LogChunk(stream="stdout", data=b"x\n" * 50_000,
                                 line_times_unix_nano=list(range(50_000)))
    assert held_size((CONSOLE, "run-1", 1, chunk)) >= len(chunk.data) + 8 * 50_000


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def seqs(sink: MemorySink) -> list[int]:
    return [r.seq for r in sink.records()]


def test_past_the_bound_log_calls_spill_in_order_and_everything_arrives_once(
        tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    limit = 4 * MIB
    sender = Sender(sink, overflow=SpoolOverflow(tmp_path / "spill"), memory_limit=limit,
                    interval=0.01)
    most = 0
    for i in range(640):  # 40 MiB
        sender.enqueue(text(i))
        most = max(most, sender.held_bytes())
    # a log call leaves at most the bound (the sender's thread may count a batch it
    # is encoding twice for a moment: 1/64 of the bound, at least 256 KiB)
    assert most <= limit + 256 * 1024 + held_size(text(0))
    assert sender.stats.records_spilled >= 500
    sink.down = False
    assert sender.flush(60) == 0
    assert seqs(sink) == list(range(1, 641))
    assert sender.close(5) == 0


class GatedSink(MemorySink):
    """A sink whose send hangs until ``gate`` is set, as a stopped agent's would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hung = 0

    def append(self, requests: Sequence[agent_pb2.AppendRequest]
               ) -> Iterator[agent_pb2.AppendAck]:
        if not self.gate.is_set():
            self.hung = sum(r.last_seq - r.first_seq + 1 for r in requests)
            self.entered.set()
            self.gate.wait(60)
        yield from super().append(requests)


def test_a_hung_send_keeps_no_log_call_waiting_and_what_it_delivers_is_not_sent_again(
        tmp_path: Path) -> None:
    sink = GatedSink()
    limit = 4 * MIB
    sender = Sender(sink, overflow=SpoolOverflow(tmp_path / "spill"), memory_limit=limit,
                    interval=0.01)
    for i in range(40):
        sender.enqueue(text(i))
    wait_for(sink.entered.is_set, "the sender never sent")
    for i in range(40, 640):  # 37.5 MiB more while the send hangs: no call waits for it
        sender.enqueue(text(i))
    assert sender.held_bytes() <= limit + 256 * 1024 + held_size(text(0))
    assert sender.stats.records_spilled > 0  # the batches the send holds among them
    assert sink.received == []
    sink.gate.set()
    assert sender.flush(60) == 0
    assert sink.hung > 0
    assert seqs(sink) == list(range(1, 641))  # each once: the spilled copies were skipped
    assert sender.close(5) == 0
    assert not (tmp_path / "spill").exists()


def test_an_offline_run_past_the_bound_waits_for_its_local_spool(tmp_path: Path) -> None:
    limit = 2 * MIB
    sender = Sender(SpoolSink(tmp_path / "offline"), memory_limit=limit, interval=0.01)
    most = 0
    for i in range(320):  # 20 MiB
        sender.enqueue(text(i))
        most = max(most, sender.held_bytes())
    assert most <= limit + 256 * 1024 + held_size(text(0))
    assert sender.close(30) == 0
    with Spool(tmp_path / "offline") as spool:
        assert [r.seq for r in read_records(spool)] == list(range(1, 321))


def test_the_bound_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLTRAIL_MEMORY_MIB", raising=False)
    assert memory_limit() == DEFAULT_MEMORY_LIMIT == 64 * MIB
    monkeypatch.setenv("MLTRAIL_MEMORY_MIB", "16")
    assert memory_limit() == 16 * MIB
    for bad in ("lots", "0", "-3", "nan"):
        monkeypatch.setenv("MLTRAIL_MEMORY_MIB", bad)
        with pytest.raises(MltrailError, match=f"MLTRAIL_MEMORY_MIB .*{bad!r}"):
            memory_limit()


def test_the_log_call_counts_a_number_as_held_size_does() -> None:
    sender = Sender(MemorySink(), interval=10)
    items = [(SCALAR, "run-1", 1, "loss", "", 0.5, 3), (SCALAR, "run-1", 1, "é-loss", "", 2, None),
             (SCALAR, "run-1", 1, "loss", "said", 0.5, 3), (SCALAR, "run-1", 1, "t", "", "a", 1)]
    for item in items:
        sender.enqueue(item)
    assert sender.held_bytes() >= sum(held_size(i) for i in items)
    assert sender.close(5) == 0
    assert sender.held_bytes() == 0


class LoggingSink(MemorySink):
    """A local sink whose sends log a record, as a logging handler on the sender's own
    warnings would: the sender's thread enqueues while the bound is passed."""

    local = True

    def __init__(self, sender_box: list[Sender]) -> None:
        super().__init__()
        self.box = sender_box
        self.logged = 0

    def append(self, requests: Sequence[agent_pb2.AppendRequest]
               ) -> Iterator[agent_pb2.AppendAck]:
        if self.logged < 20:
            self.logged += 1
            for i in range(40):  # 2.5 MiB: past the bound, from the sender's thread
                self.box[0].enqueue(text(10_000 + self.logged * 100 + i))
        yield from super().append(requests)


def test_records_logged_by_the_senders_own_thread_past_the_bound_do_not_stall_it() -> None:
    box: list[Sender] = []
    sink = LoggingSink(box)
    sender = Sender(sink, memory_limit=1 * MIB, interval=0.01)
    box.append(sender)
    sender.enqueue(text(0))
    wait_for(lambda: sink.logged == 20, "the sender's thread stalled")
    assert sender.flush(60) == 0
    assert len(sink.records()) == 1 + 20 * 40
    assert sender.close(5) == 0


def test_a_number_under_a_known_name_is_counted_at_a_fixed_size_that_covers_it() -> None:
    from mltrail import validation as v
    from mltrail.pipeline.values import SCALAR_HELD

    name = v.check_name("fixed-size-loss")
    item = (SCALAR, "run-1", time.time_ns(), v._valid_names["fixed-size-loss"], "", 0.5,
            123_456)
    assert item[3] is name  # the records share the name validation keeps
    # its own objects (the name is shared) and the (size, item) tuple the queue keeps
    own = (sys.getsizeof(item) + sum(sys.getsizeof(item[i]) for i in (2, 5, 6))
           + sys.getsizeof((SCALAR_HELD, item)) + 8)
    assert own <= SCALAR_HELD


def test_numbers_counted_at_a_fixed_size_spill_past_the_bound_and_arrive_once(
        tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    sender = Sender(sink, overflow=SpoolOverflow(tmp_path / "spill"), memory_limit=1 * MIB,
                    interval=0.01)
    count = 20_000  # 6 MiB at the fixed size
    for i in range(count):
        sender.enqueue_scalar((SCALAR, "run-1", i, "loss", "", float(i), i))
        assert sender.held_bytes() <= 1 * MIB
    assert sender.stats.records_spilled > 0
    sink.down = False
    assert sender.flush(60) == 0
    assert [r.metric.scalar.value.number for r in sink.records()] == [
        float(i) for i in range(count)]
    assert sender.close(5) == 0


def test_a_raised_bound_moves_where_log_calls_spill(tmp_path: Path) -> None:
    """`mltrail run` raises its own bound (LAUNCHER_MEMORY_SHARE): what it holds
    back then stays in memory, as it would past the old bound go to disk."""
    sink = MemorySink()
    sink.down = True
    sender = Sender(sink, overflow=SpoolOverflow(tmp_path / "spill"), memory_limit=1 * MIB,
                    interval=0.01)
    sender.set_memory_limit(8 * MIB)
    for i in range(64):  # 4 MiB: past the first bound, within the second
        sender.enqueue(text(i))
    sender.count_held(2 * MIB)  # console lines held by the launcher count too
    assert sender.stats.records_spilled == 0
    sender.count_held(4 * MIB)  # 10 MiB held: the queue goes to disk
    assert sender.stats.records_spilled > 0 and sender.held_bytes() <= 8 * MIB
    sender.count_held(-6 * MIB)
    sink.down = False
    assert sender.flush(60) == 0
    assert seqs(sink) == list(range(1, 65))
    assert sender.close(5) == 0
