"""The sender packs run.log of floats into ScalarSeries records (values.SeriesPacker):
what arrives is every point once, with its own seq, time, step and value, in the
order it was logged, and every other record keeps its place among the points."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Sequence
from typing import Any

import pytest

from mltrail.collector.validate import validate_batch
from mltrail.common.errors import MltrailError
from mltrail.pipeline.delivery import FlushMarker
from mltrail.pipeline.link import pack_series
from mltrail.pipeline.sender import MemorySink, Sender
from mltrail.pipeline.values import LIST, RUN_EVENT, SCALAR, point_records
from mltrail.proto import records_pb2


def logged(items: Sequence[tuple[Any, ...]]) -> tuple[MemorySink, Sender]:
    sink = MemorySink()
    sender = Sender(sink, interval=0.01)
    for item in items:
        sender.enqueue(item)
    assert sender.flush(10) == 0
    return sink, sender


def scalar(name: str, value: Any, step: int | None = None, run: str = "run-1",
           description: str = "") -> tuple[Any, ...]:
    return (SCALAR, run, time.time_ns(), name, description, value, step)


def wire(sink: MemorySink) -> list[records_pb2.Record]:
    return [r for q in sink.received for r in records_pb2.Batch.FromString(q.batch).records]


def point(record: records_pb2.Record) -> tuple[Any, ...]:
    scalar = record.metric.scalar
    value = getattr(scalar.value, scalar.value.WhichOneof("kind"))
    return (record.seq, record.run_id, record.metric.name,
            struct.pack("<d", value) if isinstance(value, float) else value,
            scalar.step if scalar.HasField("step") else None)


def test_floats_of_a_series_travel_packed_and_arrive_as_every_point_in_order() -> None:
    items = [scalar(name, i * 0.5, i) for i in range(3000) for name in ("loss", "acc")]
    sink, sender = logged(items)
    packed = wire(sink)
    assert all(r.metric.WhichOneof("data") == "series" for r in packed)
    assert len(packed) < 10  # a record per series per batch, not one per call
    points = sink.records()
    assert [r.seq for r in points] == list(range(1, 6001))
    by_name: dict[str, list[tuple[float, int]]] = {}
    for r in points:
        by_name.setdefault(r.metric.name, []).append((r.metric.scalar.value.number,
                                                      r.metric.scalar.step))
    assert by_name == {name: [(i * 0.5, i) for i in range(3000)] for name in ("loss", "acc")}
    assert sender.stats.records_built == 6000
    # the collector reads the same points from the packed records
    stored = [validate_batch(records_pb2.Batch.FromString(q.batch)) for q in sink.received]
    assert sum(len(run.seqs) for v in stored for run in v.scalars) == 6000
    sender.close(1)


def test_times_are_the_calls_own_to_the_microsecond() -> None:
    before = time.time_ns()
    sink, sender = logged([scalar("loss", 1.0), scalar("loss", 2.0)])
    series = wire(sink)[0].metric.series
    assert all(t % 1000 == 0 and before // 1000 * 1000 <= t <= time.time_ns()
               for t in series.times_unix_nano)
    assert list(series.times_unix_nano) == sorted(series.times_unix_nano)
    sender.close(1)


def test_special_doubles_arrive_bit_for_bit() -> None:
    values = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    sink, sender = logged([scalar("m", v) for v in values])
    assert [point(r)[3] for r in sink.records()] == [struct.pack("<d", v) for v in values]
    sender.close(1)


def test_what_is_not_packed_keeps_its_place_among_the_points() -> None:
    event = records_pb2.RunEvent(tags=records_pb2.TagsSet(tags={"k": "v"}))
    items = [
        scalar("m", 1.0, 1),
        scalar("m", 2.0),  # no step after a step: a record of its own
        scalar("m", 3.0),
        scalar("m", 4, 4),  # an integer: a Scalar record, as v1 logs it
        scalar("m", 5.0, 5, description="described"),
        (LIST, "run-1", time.time_ns(), "m", "", [1.0, 2.0]),
        scalar("m", 6.0, 6),
        scalar("other", 7.0, 7),
        (RUN_EVENT, "run-1", time.time_ns(), event),
        scalar("m", 8.0, 8),
        scalar("m", True, 9),
        scalar("m", "text", 10),
        scalar("m", 9.0, 2**63),  # beyond int64: refused alone, as before
        scalar("m", 10.0, 11),
    ]
    sink, sender = logged(items)
    records = sink.records()
    kinds = [r.WhichOneof("body") if r.WhichOneof("body") != "metric"
             else r.metric.WhichOneof("data") for r in records]
    assert kinds == ["scalar"] * 5 + ["list", "scalar", "scalar", "run_event"] + ["scalar"] * 4
    assert [r.seq for r in records] == list(range(1, 14))
    values = [point(r)[3] for r in records if r.metric.WhichOneof("data") == "scalar"]
    f = [struct.pack("<d", v) for v in (1.0, 2.0, 3.0)]
    assert values == [*f, 4, struct.pack("<d", 5.0), struct.pack("<d", 6.0),
                      struct.pack("<d", 7.0), struct.pack("<d", 8.0), True, "text",
                      struct.pack("<d", 10.0)]
    assert records[4].metric.description == "described"
    assert sender.stats.records_refused == 1
    sender.close(1)


def test_a_name_protobuf_cannot_encode_is_refused_alone() -> None:
    sink, sender = logged([scalar("m", 1.0), scalar("bad\udc80", 2.0), scalar("m", 3.0)])
    assert [(r.metric.name, r.metric.scalar.value.number) for r in sink.records()] == [
        ("m", 1.0), ("m", 3.0)]
    assert sender.stats.records_refused == 1
    sender.close(1)


def test_a_flush_waits_for_the_points_held_when_it_was_asked() -> None:
    sink = MemorySink()
    sender = Sender(sink, interval=0.01)
    for i in range(10):
        sender.enqueue(scalar("m", float(i), i))
    assert sender.flush(10) == 0
    assert [r.seq for r in sink.records()] == list(range(1, 11))
    assert sender.acked_seq == 10
    sender.close(1)


def test_point_records_of_any_other_record_is_the_record() -> None:
    record = records_pb2.Record(seq=4, run_id="r")
    record.metric.name = "m"
    record.metric.scalar.value.number = 1.0
    assert point_records(record) == [record]
    series = records_pb2.Record(seq=7, run_id="r", time_unix_nano=10)
    series.metric.name = "m"
    series.metric.series.values.extend([1.0, 2.0])
    series.metric.series.times_unix_nano.extend([10, 20])
    assert [(*point(p), p.time_unix_nano) for p in point_records(series)] == [
        (7, "r", "m", struct.pack("<d", 1.0), None, 10),
        (8, "r", "m", struct.pack("<d", 2.0), None, 20)]


def test_packing_can_be_turned_off_for_an_older_collector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sink = MemorySink()
    sender = Sender(sink, interval=0.01, pack_series=False)
    for i in range(5):
        sender.enqueue(scalar("m", float(i), i))
    assert sender.flush(10) == 0
    assert [r.metric.WhichOneof("data") for r in wire(sink)] == ["scalar"] * 5
    sender.close(1)
    for text, expected in (("0", False), ("1", True), (" 1 ", True)):
        monkeypatch.setenv("MLTRAIL_PACK_SERIES", text)
        assert pack_series() is expected
    monkeypatch.setenv("MLTRAIL_PACK_SERIES", "yes")
    with pytest.raises(MltrailError, match=r"MLTRAIL_PACK_SERIES must be 1 .* or 0 .*'yes'"):
        pack_series()


def test_a_flush_marker_covers_every_point_logged_before_it() -> None:
    """loss, acc, flush, loss: loss's points take seqs 1 and 2 together, so acc (logged
    before the flush) gets 3; the marker must wait for 3, not 2."""
    sink = MemorySink()
    sink.down = True  # nothing leaves: the builder alone decides the seqs
    sender = Sender(sink, interval=60)
    marker = FlushMarker()
    with sender._lock:  # the sender thread builds nothing meanwhile
        for item in (scalar("loss", 1.0), scalar("acc", 0.5)):
            sender.queue.append((0, item))
        sender.queue.append((0, marker))
        sender.queue.append((0, scalar("loss", 2.0)))
        sender._build_batch()
    assert marker.event.is_set()
    batch = records_pb2.Batch.FromString(sender._unacked[0].batch)
    seqs = {p.metric.name: p.seq for r in batch.records for p in point_records(r)}
    assert seqs["acc"] == 3 and marker.target_seq >= seqs["acc"]
    sender.close(0.1)
