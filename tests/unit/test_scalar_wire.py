"""scalar_wire reads plain scalar batches from their bytes: the same ValidBatch as the
general path (validate_batch), and None for anything else."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from mltrail.collector.prepare import prepare_request
from mltrail.collector.store.base import ValidBatch
from mltrail.collector.validate import validate_batch
from mltrail.proto import collector_pb2, records_pb2
from tests import builders as b


def fast_path(batch: records_pb2.Batch) -> ValidBatch | None:
    from mltrail.collector.prepare import _scalar_batch

    return _scalar_batch(batch.SerializeToString())


def shape(valid: ValidBatch) -> Any:
    """Everything of a ValidBatch, NaN made comparable."""
    return (valid.stream_id, valid.first_seq, valid.last_seq, valid.workspace,
            [(r.run_id, r.name, list(r.seqs), r.points.steps, r.points.times, r.points.kinds,
              [struct.pack("<d", v) for v in r.points.values]) for r in valid.scalars],
            [rec.SerializeToString() for rec in valid.others])


CASES = {
    "one series": [b.scalar(s, "run-1", "loss", s * 0.5, step=s) for s in range(1, 300)],
    "no steps": [b.scalar(s, "run-1", "loss", 1.0 / s) for s in range(5, 50)],
    "some steps": [b.scalar(s, "r", "loss", 2.0, step=s if s % 3 else None)
                   for s in range(1, 40)],
    "interleaved series": [b.scalar(s, "r" if s % 5 else "other", ("loss", "acc", "lr")[s % 3],
                                    float(s), step=s // 3) for s in range(1, 90)],
    "time zero and negative": [b.scalar(1, "r", "m", 1.0, t=0), b.scalar(2, "r", "m", 2.0, t=-5),
                               b.scalar(3, "r", "m", 3.0, t=2**62)],
    "special doubles": [b.scalar(s, "r", "m", v) for s, v in enumerate(
        [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308], start=1)],
    "large seqs and steps": [b.scalar(s, "r", "m", 1.0, step=-s) for s in
                             range(2**40, 2**40 + 5)],
    "bytes of the layout in names": [b.scalar(s, "ZZRZ", "RZR", 1.0, step=0x52)
                                     for s in range(1, 10)],
    "long names": [b.scalar(1, "r" * 120, "n" * 100, 1.0)],
    "integers": [b.scalar(1, "r", "m", 3), b.scalar(2, "r", "m", 4.0)],
    "a description": [b.record(1, "r", metric=records_pb2.Metric(
        name="m", description="d", scalar=records_pb2.Scalar(value=b.value(1.0))))],
    "a log among scalars": [b.scalar(1, "r", "m", 1.0), b.log(2, "r", b"x\n"),
                            b.scalar(3, "r", "m", 1.0)],
}


@pytest.mark.parametrize("name", CASES)
def test_the_fast_path_reads_what_the_general_path_reads(name: str) -> None:
    batch = b.batch("stream-1", CASES[name])
    fast = fast_path(batch)
    general = validate_batch(batch)
    if fast is not None:
        assert shape(fast) == shape(general)
    raw = collector_pb2.IngestRequest(request_id=9, batches=[batch]).SerializeToString()
    prepared = prepare_request(raw)
    assert prepared.request_id == 9 and not prepared.refused
    assert shape(prepared.valid[0][1]) == shape(general)


def test_plain_scalar_batches_take_the_fast_path() -> None:
    for name in ("one series", "no steps", "some steps", "interleaved series",
                 "time zero and negative", "special doubles", "large seqs and steps",
                 "bytes of the layout in names"):
        assert fast_path(b.batch("s", CASES[name])) is not None, name
    for name in ("long names", "integers", "a description", "a log among scalars"):
        assert fast_path(b.batch("s", CASES[name])) is None, name


@pytest.mark.parametrize("records", [
    [b.scalar(2, "r", "m", 1.0), b.scalar(4, "r", "m", 1.0)],  # a hole
    [b.scalar(0, "r", "m", 1.0)],  # seq 0
    [b.scalar(2**63, "r", "m", 1.0)],  # beyond the store's range
    [b.scalar(1, "r", "m\x1b[2J", 1.0)],  # a control character in a name
])
def test_what_validation_refuses_goes_to_the_general_path(records: list) -> None:
    batch = b.batch("s", records)
    assert fast_path(batch) is None
    raw = collector_pb2.IngestRequest(batches=[batch]).SerializeToString()
    refused = prepare_request(raw).refused
    assert len(refused) == 1 and "nothing of this batch was stored" in refused[0].message


def test_damaged_bytes_fail_as_protobuf_fails() -> None:
    raw = collector_pb2.IngestRequest(
        batches=[b.batch("s", [b.scalar(1, "r", "m", 1.0)])]).SerializeToString()
    with pytest.raises(Exception) as info:
        prepare_request(raw[:-3])
    assert type(info.value).__name__ == "DecodeError"
    bad_utf8 = raw.replace(b"\x1a\x01r", b"\x1a\x01\xff")
    with pytest.raises(Exception) as info:
        prepare_request(bad_utf8)
    assert type(info.value).__name__ == "DecodeError"
