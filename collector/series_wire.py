"""Batches of ScalarSeries records (what the SDK sends for ``run.log`` of floats) read
straight from their wire bytes: a series' values, times and steps are packed
little-endian 8-byte numbers on the wire, so they become arrays with one copy,
never a Python object per point.

``series_batch`` walks the batch's fields (any order, as protobuf allows) and
accepts only records of exactly this shape::

    Record        seq (1), time (2), run_id (3), metric (11)
    Metric        name (1), series (16)            (an empty description: absent)
    ScalarSeries  values (1), times_unix_nano (2), steps (3), each packed

Anything else (another kind, a field it does not know, an element written
unpacked, steps on some of a series' records only, a name that does not
pass validation, seqs that do not follow each other) answers None, and the
caller takes the general path (``validate.validate_batch``), which gives every
refusal its message. A batch read here gives the same ``ValidBatch`` as the
general path (tests/unit/test_series_wire.py compares them).
"""

from __future__ import annotations

import sys
from array import array
from itertools import chain
from typing import cast

from mltrail.collector.store.base import ScalarRun, ValidBatch
from mltrail.collector.store.chunks import KIND_NUMBER, Points, Value
from mltrail.collector.validate import MAX_STORABLE, compact, name_problem

_LEN = 2  # wire type of a length-delimited field
_VARINT = 0


class _NotOurs(Exception):
    """The bytes are not of the shape this module reads: the general path reads them."""


def series_batch(data: bytes, stream_start: int, stream_end: int) -> ValidBatch | None:
    """The batch of ``data`` (a Batch's bytes; its stream_id at
    ``data[stream_start:stream_end]``, the records after it) when every record is a
    ScalarSeries of the shape above; None otherwise."""
    if sys.byteorder != "little" or stream_end >= len(data):
        return None
    try:
        stream_id = data[stream_start:stream_end].decode()
        records = _records(memoryview(data), stream_end)
    except (_NotOurs, UnicodeDecodeError):
        return None
    if name_problem(stream_id) is not None or not stream_id:
        return None
    first = expected = records[0][0]
    if first < 1:
        return None
    gathered: dict[tuple[str, str], _Series] = {}
    for seq, run_id, name, values, times, steps in records:
        count = len(values) // 8
        if (seq != expected or not count or len(values) % 8 or len(times) != len(values)
                or len(steps) not in (0, len(values))):
            return None
        series = gathered.get((run_id, name))
        if series is None:
            series = gathered[(run_id, name)] = _Series(bool(steps))
        elif series.with_steps is not bool(steps):
            return None  # steps on some records of a series only: a list with None
        series.add(range(seq, seq + count), values, times, steps)
        expected += count
    if expected - 1 > MAX_STORABLE:
        return None
    for run_id, name in gathered:
        if not run_id or not name or name_problem(run_id) or name_problem(name):
            return None
    runs = [compact(series.run(run_id, name)) for (run_id, name), series in gathered.items()]
    return ValidBatch(stream_id, first, expected - 1, runs, ())


class _Series:
    """One series' records of the batch, gathered as their bytes."""

    def __init__(self, with_steps: bool) -> None:
        self.with_steps = with_steps
        self.seqs: list[range] = []
        self.values: list[memoryview] = []
        self.times: list[memoryview] = []
        self.steps: list[memoryview] = []

    def add(self, seqs: range, values: memoryview, times: memoryview,
            steps: memoryview) -> None:
        self.seqs.append(seqs)
        self.values.append(values)
        self.times.append(times)
        self.steps.append(steps)

    def run(self, run_id: str, name: str) -> ScalarRun:
        count = sum(map(len, self.seqs))
        seqs = self.seqs[0] if len(self.seqs) == 1 else list(chain.from_iterable(self.seqs))
        steps = (array("q", b"".join(self.steps)) if self.with_steps
                 else [None] * count)
        return ScalarRun(run_id, name, seqs, Points(  # arrays, as Points.packed makes them
            cast(list[int | None], steps), cast(list[int], array("q", b"".join(self.times))),
            cast(list[int], bytearray([KIND_NUMBER]) * count),
            cast(list[Value], array("d", b"".join(self.values)))))


_Record = tuple[int, str, str, memoryview, memoryview, memoryview]


def _records(data: memoryview, pos: int) -> list[_Record]:
    """The batch's records after its stream_id (field 2 each); _NotOurs otherwise."""
    out = []
    end = len(data)
    while pos < end:
        if data[pos] != 0x12:  # Batch.records; a second stream_id or an unknown field
            raise _NotOurs
        size, pos = _varint(data, pos + 1)
        out.append(_record(data[pos:pos + size]))
        pos += size
    if pos != end or not out:
        raise _NotOurs
    return out


def _record(data: memoryview) -> _Record:
    seq = 0
    run_id = ""
    metric: memoryview | None = None
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            seq = value
        elif number == 2 and isinstance(value, int):
            pass  # the first point's time: every point carries its own
        elif number == 3 and isinstance(value, memoryview):
            run_id = bytes(value).decode()
        elif number == 11 and isinstance(value, memoryview) and metric is None:
            metric = value
        else:
            raise _NotOurs
    if metric is None:
        raise _NotOurs
    name = ""
    series: memoryview | None = None
    for number, value in _fields(metric):
        if number == 1 and isinstance(value, memoryview):
            name = bytes(value).decode()
        elif number == 16 and isinstance(value, memoryview) and series is None:
            series = value
        else:
            raise _NotOurs  # a description, another kind, an unknown field
    if series is None:
        raise _NotOurs
    columns: dict[int, memoryview] = {}
    for number, value in _fields(series):
        if number not in (1, 2, 3) or not isinstance(value, memoryview) or number in columns:
            raise _NotOurs  # unpacked elements, a repeated packed field, unknown fields
        columns[number] = value
    empty = memoryview(b"")
    return (seq, run_id, name, columns.get(1, empty), columns.get(2, empty),
            columns.get(3, empty))


def _fields(data: memoryview) -> list[tuple[int, int | memoryview]]:
    """(field number, varint or bytes) of a message's varint and length-delimited
    fields; _NotOurs at any other wire type or a cut."""
    out: list[tuple[int, int | memoryview]] = []
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        kind, number = key & 7, key >> 3
        if kind == _VARINT:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif kind == _LEN:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise _NotOurs
            out.append((number, data[pos:pos + size]))
            pos += size
        else:
            raise _NotOurs
    return out


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    number = shift = 0
    for index in range(pos, min(pos + 10, len(data))):
        byte = data[index]
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            if number >= 1 << 64:
                raise _NotOurs
            return number, index + 1
        shift += 7
    raise _NotOurs
