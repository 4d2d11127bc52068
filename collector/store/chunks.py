"""The chunk encoding of scalar series and of integer columns, shared by every store.

A chunk holds up to ``CHUNK_POINTS`` points of one (run, metric) series in
logged order: per point an optional step, a time (ns) and a value of one of
four kinds (number, integer, text, flag). The encoding is columnar, as in
Prometheus' TSDB and the Gorilla paper, built from C loops (the standard
library's, zlib and zstd), no per-bit Python work:

    chunk  = VERSION | varint header length | header (varints: count,
             step_mode, value_mode, each column's fields) | the columns' byte
             planes, each compressed on its own (chunk_planes.py) | CRC32 of
             all before it, 4 bytes little-endian
    ints   = a common factor g of the values less the first, then delta of
             deltas or linear residuals of them over g, whichever is narrower
             (chunk_columns.py), byte-shuffled
    floats = a mode in the header, then float32s when every value is one
             widened (as a float32 loss is), else IEEE doubles XOR-ed with the
             previous one (Gorilla), byte-shuffled (chunk_columns.py)
    texts  = lengths as ints, then the UTF-8 bytes
    flags  = one byte each

Versions 1 and 2 stay readable: the version byte says which, so a store
written before needs no migration. Both are ``zlib(column bytes)`` after the
header, all columns joined, and neither has the common factor; version 1 also
has ints as deltas of deltas only and floats always XOR-ed (no float mode).

Steps: all absent, all present, or a presence byte per point plus the
present ones. Values of one kind are one column; mixed kinds add a kind byte
per point and a column per kind (points of a kind keep their order). Every
double round-trips bit for bit (NaN payloads, -0.0, infinities).

A series' open chunk of plain numbers is kept in the raw form of
chunk_raw.py while it grows (series_tail.py, ``encode_open``), which every
decoder here reads too.

``summarize`` gives what a store keeps beside a chunk so that range queries,
latest/min/max and downsampling read only the chunks they need.
"""

from __future__ import annotations

import math
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from operator import le
from typing import cast

from mltrail.collector.store import chunk_columns as columns
from mltrail.collector.store import chunk_planes
from mltrail.collector.store.chunk_columns import read_varint, varint
from mltrail.collector.store.chunk_raw import RAW, decode_raw, encode_raw, raw_values

KIND_NUMBER, KIND_INTEGER, KIND_TEXT, KIND_FLAG = 1, 2, 3, 4
VALUE_KINDS = (KIND_NUMBER, KIND_INTEGER, KIND_TEXT, KIND_FLAG)
CHUNK_POINTS = 4096
# A series' open chunk (series_tail.py) takes points while it holds fewer than
# CHUNK_POINTS points and CHUNK_BYTES bytes. Numbers never reach the bytes (4,096
# random doubles with steps and times: about 110 KiB); long strings do, and keep
# chunks about that size.
CHUNK_BYTES = 256 * 1024
VERSION = 3  # written; 1, 2 and 3 are read
_VERSIONS = (1, 2, 3)
_PLANES = 3  # the first version with byte planes, a common factor and a CRC
_RAW = bytes([RAW])  # a series' open chunk in the raw form (chunk_raw.py)
ZLIB_LEVEL = 6

_STEPS_NONE, _STEPS_ALL, _STEPS_SOME = 0, 1, 2
_MIXED = 0  # value_mode: a kind byte per point; otherwise the one kind's number
_varint, _read_varint = varint, read_varint

Value = float | int | str | bool


class ChunkError(ValueError):
    """Bytes that are not a chunk of this encoding (damaged or of a newer version)."""


@dataclass
class Points:
    """Points in logged order, as parallel lists (a chunk decoded, or one to encode),
    or arrays (``packed``)."""

    steps: list[int | None]
    times: list[int]
    kinds: list[int]
    values: list[Value]

    def __len__(self) -> int:
        return len(self.times)

    def extend(self, other: Points) -> None:
        self.steps.extend(other.steps)
        self.times.extend(other.times)
        self.kinds.extend(other.kinds)
        self.values.extend(other.values)

    def slice(self, start: int, stop: int) -> Points:
        return Points(self.steps[start:stop], self.times[start:stop],
                      self.kinds[start:stop], self.values[start:stop])

    @classmethod
    def empty(cls) -> Points:
        return cls([], [], [], [])

    def packed(self) -> Points:
        """These points with arrays for columns (int64 steps and times, float64 values, a
        byte a kind) when they are plain numbers with a step each or none, else as they
        are. Packed points move between processes as bytes (a list of numbers pickles
        at some 150 ns a number each way) and chunk_numpy.py reads them without a
        Python object per point. Nothing extends packed points: a writer merging two
        runs of a series copies them into lists first."""
        count = len(self.times)
        if (count < columns.NUMPY_FROM or isinstance(self.values, array)
                or self.kinds.count(KIND_NUMBER) != count):
            return self
        absent = self.steps.count(None)
        if absent not in (0, count):
            return self
        try:
            steps = self.steps if absent else array("q", cast(list[int], self.steps))
            return Points(cast(list[int | None], steps), cast(list[int], array("q", self.times)),
                          cast(list[int], bytearray(self.kinds)),
                          cast(list[Value], array("d", cast(list[float], self.values))))
        except OverflowError:  # beyond int64: stays as it is (and is refused later)
            return self


@dataclass(slots=True)  # not frozen: a downsample builds thousands per answer
class ChunkSummary:
    """What a store keeps beside a chunk. Steps and values are None when the chunk has
    none (no step, no numeric value); the value fields cover numbers and integers
    only, NaN left out of min/max (all NaN: min and max are NaN)."""

    count: int
    first_step: int | None
    last_step: int | None
    min_step: int | None
    max_step: int | None
    first_time: int
    last_time: int
    min_time: int
    max_time: int
    first_value: float | None
    last_value: float | None
    min_value: float | None
    max_value: float | None
    steps_sorted: bool  # every point has a step and they never decrease
    has_nan: bool
    all_steps: bool     # every point has a step
    all_numeric: bool   # every value is a number or an integer

    @property
    def flags(self) -> int:
        """The four booleans as one integer, for a store's column (see ``from_flags``)."""
        return (self.steps_sorted | self.has_nan << 1 | self.all_steps << 2
                | self.all_numeric << 3)


FLAG_STEPS_SORTED, FLAG_HAS_NAN, FLAG_ALL_STEPS, FLAG_ALL_NUMERIC = 1, 2, 4, 8


# ---- integer columns (chunk_columns.py) ------------------------------------------


def pack_ints(numbers: Sequence[int], header: bytearray, factor: bool = True
              ) -> list[bytes]:
    """Delta-of-delta or linear pack: header fields appended to ``header``, the column's
    byte planes returned (chunk_columns.py); ``factor`` False: without the common
    factor (before version 3)."""
    return columns.pack_ints(numbers, header, factor)


def unpack_ints(count: int, header: bytes | memoryview, pos: int, column: bytes,
                factor: bool = True) -> tuple[list[int], int, bytes]:
    """The numbers, the header position after them, and the rest of the column bytes."""
    return columns.unpack_ints(count, header, pos, column, factor)


def encode_ints(numbers: Sequence[int]) -> bytes:
    """A standalone compressed int column (log line times): count, header, zlib. Its
    form has no version byte to change by, so it stays that of version 2."""
    header = bytearray()
    _varint(header, len(numbers))
    column = b"".join(pack_ints(numbers, header, factor=False))
    return _frame(header, column)


def decode_ints(blob: bytes) -> list[int]:
    try:
        header, column = _unframe(blob)
        count, pos = _read_varint(header, 0)
        return unpack_ints(count, header, pos, column, factor=False)[0]
    except (IndexError, ValueError) as exc:
        raise ChunkError(f"int column is damaged ({exc})") from None


def _frame(header: bytearray, column: bytes) -> bytes:
    """varint header length | header | zlib(column)."""
    out = bytearray()
    _varint(out, len(header))
    return bytes(out + header) + zlib.compress(column, ZLIB_LEVEL)


def _frame_planes(header: bytearray, planes: Sequence[bytes]) -> bytes:
    """VERSION | varint header length | header | planes (chunk_planes.py) | CRC32."""
    out = bytearray([VERSION])
    _varint(out, len(header))
    out += header
    chunk_planes.pack_planes(planes, out)
    return bytes(out + zlib.crc32(out).to_bytes(4, "little"))


def _unframe(blob: bytes | memoryview, version: int = 2) -> tuple[memoryview, bytes]:
    """The header and the column bytes of a chunk after its version byte (``version``
    3: of ``blob`` with it) or of an int column."""
    view = memoryview(blob)
    start = 1 if version >= _PLANES else 0
    if start and (len(view) < 5 or zlib.crc32(view[:-4]) != int.from_bytes(view[-4:],
                                                                            "little")):
        raise ChunkError("chunk is damaged (its CRC32 does not match)")
    size, pos = _read_varint(view, start)
    if pos + size > len(view):
        raise ChunkError("chunk ends inside its header")
    if start:
        return view[pos:pos + size], chunk_planes.unpack_planes(view[pos + size:-4])
    return view[pos:pos + size], _inflate(bytes(view[pos + size:]))


def _inflate(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error as exc:
        raise ChunkError(f"chunk does not decompress ({exc})") from None


# ---- values ---------------------------------------------------------------------


def _pack_values(kind: int, values: Sequence[Value], header: bytearray) -> list[bytes]:
    if kind == KIND_NUMBER:
        return columns.pack_floats(values, header)
    if kind == KIND_INTEGER:
        return pack_ints(values, header)  # type: ignore[arg-type]
    if kind == KIND_FLAG:
        return [bytes(1 if v else 0 for v in values)]
    if kind == KIND_TEXT:
        encoded = [str(v).encode("utf-8", "surrogatepass") for v in values]
        lengths = pack_ints([len(e) for e in encoded], header)
        _varint(header, sum(map(len, lengths)))
        return [*lengths, b"".join(encoded)]
    raise ValueError(f"unknown value kind {kind}")


def _unpack_values(kind: int, count: int, header: bytes | memoryview, pos: int,
                   column: bytes, version: int) -> tuple[list[Value], int, bytes]:
    factor = version >= _PLANES
    if kind == KIND_NUMBER:
        floats, pos, column = columns.unpack_floats(count, header, pos, column, version > 1)
        return list(floats.tolist()), pos, column
    if kind == KIND_INTEGER:
        numbers, pos, column = unpack_ints(count, header, pos, column, factor)
        return list(numbers), pos, column
    if kind == KIND_FLAG:
        return [b != 0 for b in column[:count]], pos, column[count:]
    if kind == KIND_TEXT:
        lengths_at = pos
        pos = columns.skip_ints(count, header, pos, factor)
        size, pos = _read_varint(header, pos)
        lengths = unpack_ints(count, header, lengths_at, column[:size], factor)[0]
        texts: list[Value] = []
        offset = size
        for length in lengths:
            texts.append(column[offset:offset + length].decode("utf-8", "surrogatepass"))
            offset += length
        return texts, pos, column[offset:]
    raise ChunkError(f"chunk has a value column of unknown kind {kind}")


# ---- chunks ---------------------------------------------------------------------


def encode(points: Points) -> bytes:
    """The chunk bytes of ``points`` (any count; stores cut at CHUNK_POINTS)."""
    count = len(points)
    header = bytearray()
    _varint(header, count)
    parts: list[bytes] = []  # byte planes
    present = [s for s in points.steps if s is not None]
    step_mode = (_STEPS_NONE if not present else
                 _STEPS_ALL if len(present) == count else _STEPS_SOME)
    _varint(header, step_mode)
    if step_mode == _STEPS_SOME:
        parts.append(bytes(0 if s is None else 1 for s in points.steps))
    _varint(header, len(present))
    parts += pack_ints(present, header)
    parts += pack_ints(points.times, header)
    kinds = set(points.kinds)
    if len(kinds) <= 1:
        kind = kinds.pop() if kinds else KIND_NUMBER
        _varint(header, kind)
        parts += _pack_values(kind, points.values, header)
    else:
        _varint(header, _MIXED)
        parts.append(bytes(points.kinds))
        for kind in VALUE_KINDS:
            if kind in kinds:
                part = [v for k, v in zip(points.kinds, points.values, strict=True)
                        if k == kind]
                parts += _pack_values(kind, part, header)
    return _frame_planes(header, parts)


def encode_numbers(steps: Sequence[int] | None, times: Sequence[int],
                   values: Sequence[float]) -> bytes:
    """``encode`` of plain numbers whose points all have a step (``steps``) or none
    (None): the same bytes, from lists or from numpy arrays (chunk_numpy.py)."""
    header = bytearray()
    _varint(header, len(times))
    _varint(header, _STEPS_NONE if steps is None else _STEPS_ALL)
    _varint(header, 0 if steps is None else len(steps))
    parts = [] if steps is None else pack_ints(steps, header)
    parts += pack_ints(times, header)
    _varint(header, KIND_NUMBER)
    parts += columns.pack_floats(values, header)
    return _frame_planes(header, parts)


def encode_open(points: Points) -> bytes:
    """The bytes of a series' open chunk (``series_tail.py``): the raw form for plain
    numbers (chunk_raw.py, no transform or compression), ``encode`` otherwise."""
    if points.kinds.count(KIND_NUMBER) == len(points):
        raw = encode_raw(points.steps, points.times, points.values)
        if raw is not None:
            return raw
    return encode(points)


def _version(blob: bytes) -> int:
    if not blob or blob[0] not in _VERSIONS:
        raise ChunkError(f"chunk of unknown version {blob[0] if blob else 'empty'}; "
                         "written by a newer mltrail?")
    return blob[0]


def decode(blob: bytes) -> Points:
    """The points of a chunk, in logged order; ChunkError for bytes that are not one."""
    try:
        if blob[:1] == _RAW:
            count, steps, times, values = decode_raw(blob)
            return Points(steps.tolist() if steps is not None else [None] * count,
                          times.tolist(), [KIND_NUMBER] * count, values.tolist())
        version = _version(blob)
        return _decode(*_opened_frame(blob, version), version)
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ChunkError):
            raise
        raise ChunkError(f"chunk is damaged ({exc})") from None


def _opened_frame(blob: bytes, version: int) -> tuple[memoryview, bytes]:
    view = memoryview(blob)
    return _unframe(view, version) if version >= _PLANES else _unframe(view[1:])


def _decode(header: memoryview, column: bytes, version: int) -> Points:
    factor = version >= _PLANES
    count, pos = _read_varint(header, 0)
    step_mode, pos = _read_varint(header, pos)
    presence = None
    if step_mode == _STEPS_SOME:
        presence, column = column[:count], column[count:]
    present_count, pos = _read_varint(header, pos)
    present, pos, column = unpack_ints(present_count, header, pos, column, factor)
    times, pos, column = unpack_ints(count, header, pos, column, factor)
    steps: list[int | None]
    if step_mode == _STEPS_NONE:
        steps = [None] * count
    elif presence is None:
        steps = list(present)
    else:
        it = iter(present)
        steps = [next(it) if flag else None for flag in presence]
    value_mode, pos = _read_varint(header, pos)
    if value_mode != _MIXED:
        values, pos, column = _unpack_values(value_mode, count, header, pos, column, version)
        return Points(steps, times, [value_mode] * count, values)
    kinds, column = list(column[:count]), column[count:]
    iters = {}
    for kind in VALUE_KINDS:
        wanted = kinds.count(kind)
        if wanted:
            values, pos, column = _unpack_values(kind, wanted, header, pos, column, version)
            iters[kind] = iter(values)
    return Points(steps, times, kinds, [next(iters[k]) for k in kinds])


def summarize(points: Points) -> ChunkSummary:
    """The summary a store keeps beside the chunk of ``points`` (at least one point)."""
    steps, times = points.steps, points.times
    present = [s for s in steps if s is not None]
    numbers: list[float]
    if points.kinds.count(KIND_NUMBER) == len(points.kinds):
        numbers = cast(list[float], points.values)
    else:
        numbers = [float(v) for k, v in zip(points.kinds, points.values, strict=True)
                   if k in (KIND_NUMBER, KIND_INTEGER)]
    has_nan = any(map(math.isnan, numbers))
    ordered = [v for v in numbers if not math.isnan(v)] if has_nan else numbers
    nan = math.nan
    return ChunkSummary(
        count=len(points),
        first_step=steps[0], last_step=steps[-1],
        min_step=min(present, default=None), max_step=max(present, default=None),
        first_time=times[0], last_time=times[-1], min_time=min(times), max_time=max(times),
        first_value=float(numbers[0]) if numbers else None,
        last_value=float(numbers[-1]) if numbers else None,
        min_value=float(min(ordered)) if ordered else (nan if numbers else None),
        max_value=float(max(ordered)) if ordered else (nan if numbers else None),
        steps_sorted=len(present) == len(steps) and all(map(le, present, present[1:])),
        has_nan=has_nan, all_steps=len(present) == len(steps),
        all_numeric=len(numbers) == len(points))


@dataclass(frozen=True)
class Columns:
    """A chunk of numbers as native-order arrays (the read fast path: no Python object
    per point). ``steps`` is None when no point has a step."""

    count: int
    steps: array[int] | None
    times: array[int]
    numbers: array[float]


def _opened(blob: bytes) -> tuple[memoryview, bytes, int, int, int]:
    """A chunk's header, column bytes, count, step mode and the header position after."""
    header, column = _opened_frame(blob, blob[0])
    count, pos = _read_varint(header, 0)
    step_mode, pos = _read_varint(header, pos)
    return header, column, count, step_mode, pos


def decode_columns(blob: bytes) -> Columns | None:
    """The chunk as arrays when every value is a number and every point or none has a
    step (the common case); None otherwise (use ``decode``)."""
    if blob[:1] == _RAW:
        try:
            count, steps, times, numbers = decode_raw(blob)
        except ValueError:
            return None  # decode() says what is wrong
        return Columns(count, steps, times, numbers)
    if not blob or blob[0] not in _VERSIONS:
        return None
    try:
        header, column, count, step_mode, pos = _opened(blob)
        if step_mode == _STEPS_SOME:
            return None
        present_count, pos = _read_varint(header, pos)
        factor = blob[0] >= _PLANES
        steps, pos, column = columns.int_array(present_count, header, pos, column, factor)
        times, pos, column = columns.int_array(count, header, pos, column, factor)
        value_mode, pos = _read_varint(header, pos)
        if value_mode != KIND_NUMBER:
            return None
        numbers = columns.unpack_floats(count, header, pos, column, blob[0] > 1)[0]
    except (IndexError, ValueError):
        return None  # decode() says what is wrong
    return Columns(count, steps if step_mode == _STEPS_ALL else None, times, numbers)


def decode_values(blob: bytes) -> tuple[int, bytes, int] | None:
    """A chunk of numbers' values alone, undecoded: (count, little-endian floats, their
    width: 4 for float32, 8 for doubles), steps and times skipped unread (get_metrics
    wants values only). None when not every value is a number (use ``decode``)."""
    if blob[:1] == _RAW:
        try:
            return raw_values(blob)
        except ValueError:
            return None
    if not blob or blob[0] not in _VERSIONS:
        return None
    try:
        header, column, count, step_mode, pos = _opened(blob)
        skip = count if step_mode == _STEPS_SOME else 0
        factor = blob[0] >= _PLANES
        present_count, pos = _read_varint(header, pos)
        size, pos = columns.int_column_size(present_count, header, pos, factor)
        skip += size
        size, pos = columns.int_column_size(count, header, pos, factor)
        value_mode, pos = _read_varint(header, pos)
        if value_mode != KIND_NUMBER:
            return None
        raw, width, _, _ = columns.float_bytes(count, header, pos, column[skip + size:],
                                               blob[0] > 1)
    except (IndexError, ValueError):
        return None
    return count, raw, width
