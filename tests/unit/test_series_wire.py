"""ScalarSeries records (the SDK's packed run.log of floats) at the collector's edge:
series_wire reads them from their bytes to the same ValidBatch as the general path
(validate_batch); every malformed series is refused with a message naming it, and
a batch the fast path does not take still gets the general path's answer."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from mltrail.collector.prepare import _scalar_batch, prepare_request
from mltrail.collector.store.base import ValidBatch
from mltrail.collector.validate import MAX_STORABLE, BatchRejected, validate_batch
from mltrail.proto import collector_pb2, records_pb2
from tests import builders as b

SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308,
           -1.7976931348623157e308, 2.2250738585072014e-308]


def shape(valid: ValidBatch) -> Any:
    """Everything of a ValidBatch, lists for arrays and NaN made comparable."""
    return (valid.stream_id, valid.first_seq, valid.last_seq, valid.workspace,
            [(r.run_id, r.name, list(r.seqs), list(r.points.steps), list(r.points.times),
              list(r.points.kinds), [struct.pack("<d", v) for v in r.points.values])
             for r in valid.scalars],
            [rec.SerializeToString() for rec in valid.others])


def points(valid: ValidBatch) -> list[tuple[str, str, int, int | None, int, bytes]]:
    """(run, name, seq, step, time, value bits) of every point, by seq."""
    out = []
    for run in valid.scalars:
        p = run.points
        out += [(run.run_id, run.name, seq, step, t, struct.pack("<d", v)) for seq, step, t, v
                in zip(run.seqs, p.steps, p.times, p.values, strict=True)]
    return sorted(out, key=lambda point: point[2])


T = 1_700_000_000_000_000_000
CASES = {
    "one series": [b.series(1, "run-1", "loss", [s * 0.5 for s in range(5000)],
                            steps=list(range(5000)))],
    "no steps": [b.series(3, "run-1", "loss", [1.0 / s for s in range(1, 200)])],
    "two series interleaved": [b.series(1, "r", "loss", [1.0, 2.0, 3.0], steps=[1, 2, 3]),
                               b.series(4, "r", "acc", [0.5, 0.6]),
                               b.series(6, "r", "loss", [4.0], steps=[4])],
    "two runs": [b.series(1, "r1", "m", [1.0] * 100), b.series(101, "r2", "m", [2.0] * 100)],
    "special doubles": [b.series(1, "r", "m", SPECIAL * 10)],
    "extreme steps and times": [b.series(1, "r", "m", [1.0, 2.0, 3.0],
                                         steps=[-2**63, 0, 2**63 - 1],
                                         times=[-2**63, 0, 2**63 - 1])],
    "times out of order, repeated steps": [b.series(1, "r", "m", [1.0, 2.0, 3.0, 4.0],
                                                    steps=[5, 5, 3, 9],
                                                    times=[T + 9, T, T, T - 7])],
    "large seqs": [b.series(2**40, "r", "m", [1.0] * 70)],
    "the last storable seq": [b.series(MAX_STORABLE - 2, "r", "m", [1.0, 2.0, 3.0])],
    "long names": [b.series(1, "r" * 255, "n" * 255, [1.0])],
    "unicode names": [b.series(1, "rün", "verlust/λ", [1.0, 2.0])],
}
# Batches the fast path leaves to the general path, which stores them all the same.
GENERAL = {
    "a scalar before": [b.scalar(1, "r", "m", 1.0), b.series(2, "r", "m", [2.0, 3.0])],
    "a run event after": [b.series(1, "r", "m", [2.0, 3.0]), b.ended(3, "r")],
    "a list between": [b.series(1, "r", "m", [1.0]), b.record(2, "r", metric=records_pb2.Metric(
        name="m", list=records_pb2.ValueList(values=[b.value(1.0)]))),
        b.series(3, "r", "m", [2.0])],
    "steps on one record of a series only": [b.series(1, "r", "m", [1.0], steps=[1]),
                                             b.series(2, "r", "m", [2.0])],
}


@pytest.mark.parametrize("name", [*CASES, *GENERAL])
def test_the_fast_path_reads_what_the_general_path_reads(name: str) -> None:
    batch = b.batch("stream-1", {**CASES, **GENERAL}[name])
    fast = _scalar_batch(batch.SerializeToString())
    general = validate_batch(batch)
    if name in CASES:
        assert fast is not None, "the fast path should take it"
        assert shape(fast) == shape(general)
    else:
        assert fast is None
    raw = collector_pb2.IngestRequest(request_id=9, batches=[batch]).SerializeToString()
    prepared = prepare_request(raw)
    assert prepared.request_id == 9 and not prepared.refused
    assert shape(prepared.valid[0][1]) == shape(general)


def test_every_point_of_a_series_has_its_own_seq_time_step_and_value() -> None:
    records = CASES["two series interleaved"]
    valid = validate_batch(b.batch("s", records))
    assert (valid.first_seq, valid.last_seq) == (1, 6)
    got = points(valid)
    expected = []
    for record in records:
        series = record.metric.series
        steps = list(series.steps) or [None] * len(series.values)
        expected += [(record.run_id, record.metric.name, record.seq + i, step, t,
                      struct.pack("<d", v)) for i, (step, t, v) in enumerate(
                          zip(steps, series.times_unix_nano, series.values, strict=True))]
    assert got == expected
    # a name keeps its logged order: loss 1, 2, 3 then 4, after acc's two points
    loss = [p for p in got if p[1] == "loss"]
    assert [p[2] for p in loss] == [1, 2, 3, 6]


def _series(**fields: Any) -> records_pb2.Record:
    record = b.series(1, "r", "m", [1.0, 2.0], steps=[1, 2])
    series = record.metric.series
    for field, value in fields.items():
        if field == "description":
            record.metric.description = value
        else:
            series.ClearField(field)
            getattr(series, field).extend(value)
    return record


@pytest.mark.parametrize(("record", "words"), [
    (_series(description="d"), "has a description"),
    (_series(values=[]), "has no values"),
    (_series(times_unix_nano=[1]), "2 values, 1 times and 2 steps"),
    (_series(steps=[1]), "2 values, 2 times and 1 steps"),
    (_series(steps=[1, 2, 3]), "2 values, 2 times and 3 steps"),
    (b.series(1, "r", "", [1.0]), "metric name is empty"),
    (b.series(1, "", "m", [1.0]), "run_id is empty"),
    (b.series(1, "r", "bad\x1bname", [1.0]), "control character U+001B"),
    (b.series(1, "r", "m" * 256, [1.0]), "256 characters long"),
    (b.series(0, "r", "m", [1.0]), "seqs start at 1"),
    (b.series(MAX_STORABLE, "r", "m", [1.0, 2.0]), "beyond the largest storable seq"),
])
def test_a_malformed_series_is_refused_with_a_message_naming_it(
        record: records_pb2.Record, words: str) -> None:
    batch = b.batch("stream-1", [record])
    with pytest.raises(BatchRejected) as caught:
        validate_batch(batch)
    message = str(caught.value)
    assert words in message and "stream-1" in message and "nothing of this batch" in message
    assert _scalar_batch(batch.SerializeToString()) is None
    raw = collector_pb2.IngestRequest(request_id=1, batches=[batch]).SerializeToString()
    refused = prepare_request(raw).refused
    assert len(refused) == 1 and words in refused[0].message


def test_a_series_after_another_record_must_follow_its_seq() -> None:
    batch = b.batch("s", [b.series(1, "r", "m", [1.0, 2.0, 3.0]), b.scalar(3, "r", "m", 4.0)])
    with pytest.raises(BatchRejected, match="seq 3 where 4 was expected"):
        validate_batch(batch)


def test_bytes_the_walker_does_not_know_go_to_the_general_path() -> None:
    data = b.batch("s", [b.series(1, "r", "m", [1.0, 2.0])]).SerializeToString()
    unknown_field = data + b"\x18\x01"  # Batch field 3: not one protobuf refuses
    assert _scalar_batch(unknown_field) is None
    assert validate_batch(records_pb2.Batch.FromString(unknown_field)).last_seq == 2
    # values written unpacked (wire type 1 each): legal protobuf, read by the general path
    record = records_pb2.Record(seq=1, run_id="r", time_unix_nano=5)
    head = record.SerializeToString()
    name = b"\x0a\x01m"
    unpacked = b"\x09" + struct.pack("<d", 1.5) + b"\x12\x08" + struct.pack("<q", 5)
    metric = name + b"\x82\x01" + bytes([len(unpacked)]) + unpacked
    body = head + b"\x5a" + bytes([len(metric)]) + metric
    batch = b"\x0a\x01s\x12" + bytes([len(body)]) + body
    assert _scalar_batch(batch) is None
    valid = validate_batch(records_pb2.Batch.FromString(batch))
    assert points(valid) == [("r", "m", 1, None, 5, struct.pack("<d", 1.5))]
    # a cut inside the series: protobuf refuses the request, as it did before
    raw = collector_pb2.IngestRequest(request_id=1).SerializeToString() + b"\x12" + bytes(
        [len(data)]) + data[:-3]
    with pytest.raises(DecodeError):
        prepare_request(raw)
