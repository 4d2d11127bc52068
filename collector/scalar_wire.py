"""Plain scalar batches read straight from their wire bytes, with C loops, not a
protobuf object per record.

Reading a record through the protobuf API costs about ten Python objects (the
record, its metric, scalar and value, each field), which made decoding the
largest part of ingest's CPU. A batch from the SDK is mostly records of one
shape, laid out as every protobuf serializer writes them (fields in number
order, nothing unknown):

    Record  12 L  08 seq  [10 time]  1a len run_id  5a len Metric
    Metric  0a len name  52 len Scalar
    Scalar  0a 09 (Value: 09 <8-byte double>)  [10 step]

``scalar_batch`` matches every record of a batch against that layout with one
regular expression, checks every length byte against what the match holds (so
the match is the parse a protobuf decoder makes) and that the matches tile the
batch, decodes the seqs, times and steps in bulk through protobuf's own
packed-varint decoder, and the values as one array of doubles. Anything else
(another kind, a description, a record of 128 bytes or more, a name that does
not pass validation, seqs that are not contiguous) answers None, and the caller
takes the general path (``validate.validate_batch``), which gives every
refusal its message. A batch read here gives the same ``ValidBatch`` as the
general path (tests/unit/test_scalar_wire.py compares them).
"""

from __future__ import annotations

import re
import sys
from array import array
from collections.abc import Sequence
from operator import add
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from mltrail.collector.store.base import ScalarRun, ValidBatch
from mltrail.collector.store.chunks import KIND_NUMBER, Points
from mltrail.collector.validate import MAX_STORABLE, compact, name_problem

_VARINT = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
_TAIL = rb"([\x00-\x7f])\x0a\x09\x09(.{8})((?:\x10" + _VARINT + rb")?)"  # scalar, value, step
# Fields are captured with their tags where they may be absent (an empty capture):
# seq (tag 08) and time or step (tag 10) joined are then the bytes of a repeated
# int64 field 1 or 2, which protobuf decodes in C (``_Varints``).
_RECORD = re.compile(
    rb"\x12([\x00-\x7f])(\x08" + _VARINT + rb")((?:\x10" + _VARINT + rb")?)"  # length, seq, time
    rb"\x1a([\x01-\x7f])(.{1,127}?)"                                 # run_id
    rb"\x5a([\x00-\x7f])\x0a([\x01-\x7f])(.{1,127}?)\x52" + _TAIL,  # metric, name
    re.DOTALL)
_GROUPS = 11


def _series_pattern(run: bytes, name: bytes) -> re.Pattern[bytes]:
    """``_RECORD`` for one run_id and name, as literals: much faster to match."""
    return re.compile(
        rb"\x12([\x00-\x7f])(\x08" + _VARINT + rb")((?:\x10" + _VARINT + rb")?)"
        + re.escape(b"\x1a" + bytes([len(run)]) + run + b"\x5a") + rb"([\x00-\x7f])"
        + re.escape(b"\x0a" + bytes([len(name)]) + name + b"\x52") + _TAIL, re.DOTALL)


def _plus(number: int) -> bytes:
    """A translation table adding ``number`` to a byte (past 255: 255, never a length)."""
    return bytes(min(n + number, 255) for n in range(256))


_SCALAR_LEN = _plus(11)  # a Scalar's length by its step's (with the tag; 0: no step)
_PLUS_4 = _plus(4)  # the tag and length bytes of two fields


def _varints_class() -> Any:
    """Repeated int64 fields 1 and 2 (built here: no .proto file needed for it)."""
    proto = descriptor_pb2.FileDescriptorProto(name="mltrail_scalar_wire.proto",
                                               package="mltrail.internal", syntax="proto3")
    message = proto.message_type.add(name="Varints")
    for number, name in ((1, "one"), (2, "two")):
        message.field.add(name=name, number=number,
                          type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                          label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mltrail.internal.Varints"))


_Varints = _varints_class()


def _ints(tagged: Sequence[bytes]) -> list[int]:
    """The numbers of varint fields 1 or 2 (tag included), decoded by protobuf."""
    message = _Varints.FromString(b"".join(tagged))
    return list(message.one) + list(message.two)


def scalar_batch(data: bytes, stream_start: int, stream_end: int) -> ValidBatch | None:
    """The batch of ``data`` (a Batch's bytes; its stream_id at
    ``data[stream_start:stream_end]``, the records after it) when every record is a
    plain scalar number in the layout above; None otherwise."""
    if sys.byteorder != "little":
        return None
    first = _RECORD.match(data, stream_end)
    if first is None:
        return None  # another kind first: not worth a scan
    records = data[stream_end:]
    stream = data[stream_start:stream_end]
    # The common batch is of one series: matched with its run_id and name as literals.
    run, name = first.group(5), first.group(8)
    parts = _series_pattern(run, name).split(records)
    count = len(parts) // 8
    if _tiled(parts, 8) and _agree(parts[1::8], parts[2::8], parts[3::8], parts[4::8],
                                   parts[5::8], parts[7::8], bytes([len(run)]) * count,
                                   bytes([len(name)]) * count):
        return _valid(stream, parts[2::8], parts[3::8], [run] * count, [name] * count,
                      parts[6::8], parts[7::8])
    parts = _RECORD.split(records)
    if not _tiled(parts, _GROUPS + 1):
        return None
    runs, names = parts[5::12], parts[8::12]
    run_lengths, name_lengths = b"".join(parts[4::12]), b"".join(parts[7::12])
    if (bytes(map(len, runs)) != run_lengths or bytes(map(len, names)) != name_lengths
            or not _agree(parts[1::12], parts[2::12], parts[3::12], parts[6::12],
                          parts[9::12], parts[11::12], run_lengths, name_lengths)):
        return None
    return _valid(stream, parts[2::12], parts[3::12], runs, names, parts[10::12],
                  parts[11::12])


def _tiled(parts: list[bytes], stride: int) -> bool:
    """Whether a split matched record after record, nothing between or after them."""
    return len(parts) > 1 and not any(parts[::stride])


def _agree(lengths: list[bytes], seqs: list[bytes], times: list[bytes],
           metrics: list[bytes], scalars: list[bytes], steps: list[bytes],
           run_lengths: bytes, name_lengths: bytes) -> bool:
    """Whether every length byte of the matched records (record, run_id, metric, name,
    scalar) is the length of what the match holds: then each match is the parse a
    protobuf decoder makes of those bytes."""
    scalar_bytes, metric_bytes = b"".join(scalars), b"".join(metrics)
    try:
        if bytes(map(len, steps)).translate(_SCALAR_LEN) != scalar_bytes:
            return False
        if bytes(map(add, name_lengths, scalar_bytes)).translate(_PLUS_4) != metric_bytes:
            return False
        record = map(add, map(add, map(len, seqs), map(len, times)),
                     map(add, run_lengths, metric_bytes))
        return bytes(record).translate(_PLUS_4) == b"".join(lengths)
    except ValueError:  # a sum past 255: no record of one length byte
        return False


def _valid(stream: bytes, seqs: Sequence[bytes], times: Sequence[bytes],
           runs: Sequence[bytes], names: Sequence[bytes], values: Sequence[bytes],
           steps: Sequence[bytes]) -> ValidBatch | None:
    try:
        return _columns(stream, seqs, times, runs, names, values, steps)
    except DecodeError:  # a varint protobuf will not take: it says so on the general path
        return None


def _columns(stream: bytes, seqs: Sequence[bytes], times: Sequence[bytes],
             runs: Sequence[bytes], names: Sequence[bytes], values: Sequence[bytes],
             steps: Sequence[bytes]) -> ValidBatch | None:
    count = len(seqs)
    numbers = _ints(seqs)
    first = numbers[0]
    if first < 1 or first + count - 1 > MAX_STORABLE or numbers != list(
            range(first, first + count)):
        return None
    try:
        stream_id = stream.decode()
        texts = {raw: raw.decode() for raw in {*runs, *names}}
    except UnicodeDecodeError:
        return None  # the general path refuses the request as protobuf does
    if any(name_problem(text) for text in (stream_id, *texts.values())):
        return None
    stamps = _ints(times) if all(times) else _sparse(times, 0)
    step_list: list[int | None]
    if all(steps):
        step_list = list(_ints(steps))
    elif not any(steps):
        step_list = [None] * count
    else:
        step_list = _sparse(steps, None)
    floats = array("d", b"".join(values)).tolist()
    if len(texts) <= 2 and len({*runs}) == 1 and len({*names}) == 1:
        series = [ScalarRun(texts[runs[0]], texts[names[0]], range(first, first + count),
                            Points(step_list, stamps, [KIND_NUMBER] * count, floats).packed())]
    else:
        series = _runs(list(zip(runs, names, strict=True)), texts, first, step_list, stamps,
                       floats)
    return ValidBatch(stream_id, first, first + count - 1, series, ())


def _sparse(tagged: Sequence[bytes], absent: int | None) -> list[Any]:
    """Varints where present, ``absent`` where the field was left out."""
    decoded = iter(_ints(tagged))
    return [next(decoded) if e else absent for e in tagged]


def _runs(keys: list[tuple[bytes, bytes]], texts: dict[bytes, str], first: int,
          steps: list[int | None], times: Sequence[int | None], values: list[float]
          ) -> list[ScalarRun]:
    """One run of points per series, in order of their first point."""
    series: dict[tuple[bytes, bytes], ScalarRun] = {}
    for index, key in enumerate(keys):
        run = series.get(key)
        if run is None:
            run = series[key] = ScalarRun(texts[key[0]], texts[key[1]], [], Points.empty())
        run.seqs.append(first + index)
        points = run.points
        points.steps.append(steps[index])
        points.times.append(times[index])
        points.kinds.append(KIND_NUMBER)
        points.values.append(values[index])
    return [compact(run) for run in series.values()]
