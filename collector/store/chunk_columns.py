"""The column encodings inside a chunk (chunks.py): integers and doubles as bytes.

Built from the standard library only: every pass over a column is a C loop
(array, map, accumulate, big-integer arithmetic), never Python work per value.

Integers (steps, times, text lengths; ``pack_ints``) are written in whichever
of two forms is narrower (as wide: the one of the smaller range, unless most
deltas of deltas are zero), with the first value and a second number in the
caller's header (zigzag varints) and a width code:

    delta of deltas  second = first delta; code 1, 2, 4 or 8: the deltas of
                     deltas as zigzag numbers of that many bytes (code 0: raw
                     int64, a delta of deltas past 64 bits)
    linear residual  second = stride; code 16 + width, then an offset: value i
                     is first + offset + i * stride + u[i], the u unsigned of
                     that width. Times on a grid with jitter (a step every 1 ms,
                     up to 50 us late) need the jitter's bits once here, where a
                     delta of deltas needs them three times over.

Either is byte-shuffled (all first bytes, then all second bytes...) so that
the compressor sees equal high bytes in a row; the packers return the lanes
(byte planes) apart, and chunks.py compresses each on its own.

From chunk version 3 on (``factor``) a common factor comes next: after the
first value (of two or more) the header holds g, the greatest common divisor
of the values less the first, and the column packs (value - first) / g as
above (g = 1: the values as they are; a raw int64 column holds the quotients).
Times on a microsecond grid (what the SDK stamps metrics with) have g = 1000:
their jitter's residuals fit one byte instead of two.

Doubles (``pack_floats``): a mode number in the header, then

    0  the IEEE doubles XOR-ed with the previous one (Gorilla: equal leading
       bits become zero bytes), 8 lanes shuffled
    1  every value is a float32 widened (what ``loss.item()`` of a float32
       tensor gives): the 4-byte floats, 4 lanes shuffled; half the bytes for
       the same doubles, bit for bit
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, repeat
from operator import add, and_, floordiv, lshift, mul, neg, rshift, sub, xor
from typing import Any

_WIDTHS = {1: "B", 2: "H", 4: "I", 8: "Q"}
_RAW = 0  # int column width code: raw int64 (a delta of deltas past 64 bits)
LINEAR = 16  # code 16 + width: linear residuals of that width
LINEAR_FROM = 16  # deltas of deltas in one byte below this: not worth a line's sums
NUMPY_FROM = 64  # columns of this many values are packed by chunk_numpy.py (same bytes)
FLOATS_XOR, FLOATS_32 = 0, 1
_LITTLE = sys.byteorder == "little"


class ColumnError(ValueError):
    """Column bytes that do not decode (the chunk is damaged or of a newer version)."""


def varint(out: bytearray, number: int) -> None:
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    number = shift = 0
    while True:
        if pos >= len(data):
            raise ColumnError("chunk ends inside a number")
        byte = data[pos]
        pos += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, pos
        shift += 7


def zigzag(number: int) -> int:
    return number * 2 if number >= 0 else -2 * number - 1


def unzigzag(number: int) -> int:
    return number >> 1 if not number & 1 else -((number + 1) >> 1)


def lanes(raw: bytes, width: int) -> list[bytes]:
    """The byte planes of ``raw``, values ``width`` bytes wide: all first bytes, then all
    second bytes..."""
    if width == 1:
        return [raw]
    return [raw[lane::width] for lane in range(width)]


def unshuffle(data: bytes, width: int, count: int) -> bytes:
    if width == 1:
        return data
    out = bytearray(count * width)
    for lane in range(width):
        out[lane::width] = data[lane * count:(lane + 1) * count]
    return bytes(out)


def _native(code: str, raw: bytes) -> array[Any]:
    out = array(code, raw)
    if not _LITTLE:
        out.byteswap()
    return out


def _wire(code: str, numbers: Sequence[int] | array[Any]) -> bytes:
    out = array(code, numbers)
    if not _LITTLE:
        out.byteswap()
    return out.tobytes()


def width_of(top: int) -> int | None:
    for width in _WIDTHS:
        if top < 1 << (8 * width):
            return width
    return None


# ---- integers -----------------------------------------------------------------


def pack_ints(numbers: Sequence[int], header: bytearray, factor: bool = False
              ) -> list[bytes]:
    """Header fields appended to ``header``, the column's byte planes returned (see
    module doc); ``factor``: with the common factor of version 3."""
    if len(numbers) >= NUMPY_FROM:
        from mltrail.collector.store import chunk_numpy  # not at import: a cycle

        planes = chunk_numpy.pack_ints(numbers, header, factor)
        if planes is not None:
            return planes
    return pack_ints_pure(_listed(numbers), header, factor)


def _listed(numbers: Sequence[Any]) -> Sequence[Any]:
    """A numpy or ``array`` column as a list of Python numbers (what the pure form
    computes with); anything else as it is."""
    tolist = getattr(numbers, "tolist", None)
    return numbers if tolist is None or isinstance(numbers, list) else tolist()


def pack_ints_pure(numbers: Sequence[int], header: bytearray, factor: bool = False
                   ) -> list[bytes]:
    """``pack_ints`` with Python's integers: any column (chunk_numpy.py takes the long
    columns it can, to the same bytes)."""
    count = len(numbers)
    if count == 0:
        return []
    first = numbers[0]
    varint(header, zigzag(first))
    if count == 1:
        return []
    deltas = list(map(sub, numbers[1:], numbers))
    if factor:
        common = math.gcd(*deltas) or 1  # that of the values less the first; all equal: 1
        varint(header, common)
        if common > 1:
            numbers = list(map(floordiv, map(sub, numbers, repeat(first)), repeat(common)))
            deltas = list(map(floordiv, deltas, repeat(common)))
    raw_dods = list(map(sub, deltas[1:], deltas))
    low, high = min(raw_dods, default=0), max(raw_dods, default=0)
    top = max(2 * high, -2 * low - 1)  # the largest zigzag number
    width = width_of(top) if low >= -(2 ** 63) and high < 2 ** 63 else None
    # as wide, residuals of a smaller range code better, unless the deltas of deltas
    # are mostly zero (a step function: log lines sharing their record's time)
    sparse = raw_dods.count(0) * 4 >= len(raw_dods)
    if width is not None and count > 2 and (width > 1 or (top >= LINEAR_FROM
                                                         and not sparse)):
        linear = linear_residuals(numbers, width, 0 if sparse else top)
        if linear is not None:
            stride, offset, lin_width, residuals = linear
            varint(header, zigzag(stride))
            varint(header, LINEAR + lin_width)
            varint(header, zigzag(offset))
            return lanes(_wire(_WIDTHS[lin_width], residuals), lin_width)
    varint(header, zigzag(deltas[0]))
    if width is None:
        varint(header, _RAW)
        return [_wire("q", numbers)]  # int64: a quotient by g > 1 is smaller in size
    varint(header, width)
    if sparse and raw_dods.count(0) == len(raw_dods):  # a constant stride (steps 0, 1, 2)
        return lanes(bytes(width * len(raw_dods)), width)
    # zigzag as C loops, exact for int64 values: (d << 1) ^ (d >> 63)
    dods = map(xor, map(lshift, raw_dods, repeat(1)), map(rshift, raw_dods, repeat(63)))
    return lanes(_wire(_WIDTHS[width], list(dods)), width)


def linear_residuals(numbers: Sequence[int], dod_width: int, dod_top: int
            ) -> tuple[int, int, int, list[int]] | None:
    """(stride, offset, width, residuals) about the least-squares line, when they are
    narrower than the deltas of deltas (``dod_width`` bytes, the largest ``dod_top``),
    or as wide with a smaller range (fewer bits for the compressor: jitter of J on a grid
    has residuals within J, zigzag deltas of deltas up to 4 J; ``dod_top`` 0: only
    narrower); None otherwise."""
    count = len(numbers)
    first = numbers[0]
    rel = numbers if first == 0 else list(map(sub, numbers, repeat(first, count)))
    sx, sxx = count * (count - 1) // 2, (count - 1) * count * (2 * count - 1) // 6
    num = count * sum(map(mul, range(count), rel)) - sx * sum(rel)
    den = count * sxx - sx * sx
    stride = (2 * num + den) // (2 * den)  # rounded to the nearest integer
    line = range(0, stride * count, stride) if stride else repeat(0, count)
    residuals = list(map(sub, rel, line))
    offset = min(residuals)
    span = max(residuals) - offset
    width = width_of(span)
    if width is None or width > dod_width or (width == dod_width and span >= dod_top):
        return None
    return stride, offset, width, list(map(sub, residuals, repeat(offset, count)))


def skip_ints(count: int, header: bytes | memoryview, pos: int, factor: bool = False
              ) -> int:
    """The header position after an int column's fields."""
    return int_column_size(count, header, pos, factor)[1]


def int_column_size(count: int, header: bytes | memoryview, pos: int, factor: bool = False
                    ) -> tuple[int, int]:
    """An int column's size in the column bytes, and the header position after it."""
    if count == 0:
        return 0, pos
    _, pos = read_varint(header, pos)
    if count == 1:
        return 0, pos
    if factor:
        _, pos = read_varint(header, pos)
    _, pos = read_varint(header, pos)
    code, pos = read_varint(header, pos)
    if code > LINEAR:
        _, pos = read_varint(header, pos)
        return (code - LINEAR) * count, pos
    return (8 * count if code == _RAW else code * (count - 2)), pos


def unpack_ints(count: int, header: bytes | memoryview, pos: int, column: bytes,
                factor: bool = False) -> tuple[list[int], int, bytes]:
    """The numbers, the header position after them, and the rest of the column bytes."""
    numbers, pos, column = _unpack(count, header, pos, column, factor)
    return (numbers if isinstance(numbers, list) else numbers.tolist()), pos, column


def int_array(count: int, header: bytes | memoryview, pos: int, column: bytes,
              factor: bool = False) -> tuple[array[int], int, bytes]:
    """``unpack_ints`` into an int64 array."""
    numbers, pos, column = _unpack(count, header, pos, column, factor)
    if isinstance(numbers, array) and numbers.typecode == "q":
        return numbers, pos, column
    return array("q", numbers), pos, column  # from a list: array() of an iterator is slow


def _unpack(count: int, header: bytes | memoryview, pos: int, column: bytes, factor: bool
            ) -> tuple[list[int] | array[int], int, bytes]:
    if count == 0:
        return [], pos, column
    first, pos = read_varint(header, pos)
    start = unzigzag(first)
    if count == 1:
        return [start], pos, column
    common = 1
    if factor:
        common, pos = read_varint(header, pos)
        if common == 0:
            raise ColumnError("chunk has an integer column with a common factor of 0")
    second, pos = read_varint(header, pos)
    code, pos = read_varint(header, pos)
    if code == _RAW:
        size = 8 * count
        if len(column) < size:
            raise ColumnError("chunk column is shorter than its count")
        wide: list[int] | array[int] = _native("q", column[:size])
        if common > 1:  # the quotients (value - first) / g
            wide = list(map(add, repeat(start, count), map(mul, wide, repeat(common))))
        return wide, pos, column[size:]
    if code > LINEAR:
        return _unpack_linear(count, unzigzag(second), code - LINEAR, header, pos, column,
                              start, common)
    typecode = _WIDTHS.get(code)
    if typecode is None:
        raise ColumnError(f"chunk has an integer column of unknown width {code}")
    size = code * (count - 2)
    if len(column) < size:
        raise ColumnError("chunk column is shorter than its count")
    raw, step = column[:size], unzigzag(second) * common
    if raw.count(0) == size:  # a constant stride (steps 0, 1, 2...): no sums needed
        return (list(range(start, start + step * count, step)) if step
                else [start] * count), pos, column[size:]
    dods = _native(typecode, unshuffle(raw, code, count - 2))
    # unzigzag as C loops: (z >> 1) ^ -(z & 1)
    signed = map(xor, map(rshift, dods, repeat(1)), map(neg, map(and_, dods, repeat(1))))
    if common > 1:
        signed = map(mul, signed, repeat(common))
    deltas = accumulate(signed, initial=step)
    return list(accumulate(deltas, initial=start)), pos, column[size:]


def _unpack_linear(count: int, stride: int, width: int, header: bytes | memoryview,
                   pos: int, column: bytes, start: int, common: int
                   ) -> tuple[list[int], int, bytes]:
    typecode = _WIDTHS.get(width)
    if typecode is None:
        raise ColumnError(f"chunk has a linear column of unknown width {width}")
    offset, pos = read_varint(header, pos)
    size = width * count
    if len(column) < size:
        raise ColumnError("chunk column is shorter than its count")
    residuals: Iterable[int] = _native(typecode, unshuffle(column[:size], width, count))
    base, stride = start + unzigzag(offset) * common, stride * common
    if common > 1:
        residuals = map(mul, residuals, repeat(common))
    line = range(base, base + stride * count, stride) if stride else repeat(base, count)
    return list(map(add, line, residuals)), pos, column[size:]


# ---- doubles --------------------------------------------------------------------


def pack_floats(values: Sequence[float], header: bytearray) -> list[bytes]:
    """The float mode appended to ``header``, the column's byte planes returned (see
    module doc)."""
    if len(values) >= NUMPY_FROM:
        from mltrail.collector.store import chunk_numpy

        return chunk_numpy.pack_floats(values, header)
    return pack_floats_pure(_listed(values), header)


def pack_floats_pure(values: Sequence[float], header: bytearray) -> list[bytes]:
    """``pack_floats`` as array and big-integer passes (chunk_numpy.py: the same bytes)."""
    doubles = array("d", values)
    narrow = array("f", values)  # out of float32 range: inf, caught below
    if array("d", narrow.tolist()).tobytes() == doubles.tobytes():
        varint(header, FLOATS_32)
        return lanes(_wire("f", narrow), 4)
    varint(header, FLOATS_XOR)
    return lanes(_xor_floats(_wire("d", doubles)), 8)


def unpack_floats(count: int, header: bytes | memoryview, pos: int, column: bytes,
                  with_mode: bool = True) -> tuple[array[float], int, bytes]:
    """The doubles as an array; ``with_mode`` False reads a version-1 column (XOR, no
    mode number)."""
    raw, width, pos, column = float_bytes(count, header, pos, column, with_mode)
    if width == 4:
        return array("d", _native("f", raw).tolist()), pos, column
    return _native("d", raw), pos, column


def float_bytes(count: int, header: bytes | memoryview, pos: int, column: bytes,
                with_mode: bool = True) -> tuple[bytes, int, int, bytes]:
    """The values as little-endian floats of the column's width (4: float32, 8: doubles),
    the width, the header position after them and the rest of the column bytes."""
    mode = FLOATS_XOR
    if with_mode:
        mode, pos = read_varint(header, pos)
    if mode not in (FLOATS_XOR, FLOATS_32):
        raise ColumnError(f"chunk has a float column of unknown mode {mode}")
    width = 4 if mode == FLOATS_32 else 8
    size = width * count
    if len(column) < size:
        raise ColumnError("chunk column is shorter than its count")
    raw = unshuffle(column[:size], width, count)
    if mode == FLOATS_XOR and count:
        raw = _unxor_floats(raw)
    return raw, width, pos, column[size:]


def _xor_floats(raw: bytes) -> bytes:
    size = len(raw)
    if size <= 8:
        return raw
    current = int.from_bytes(raw, "little")
    return (current ^ (current << 64)).to_bytes(size + 8, "little")[:size]


def _unxor_floats(data: bytes) -> bytes:
    """Prefix XOR in log2(n) big-integer steps (C loops, not a Python loop per value)."""
    size = len(data)
    current = int.from_bytes(data, "little")
    mask = (1 << (8 * size)) - 1
    shift = 64
    while shift < 8 * size:
        current ^= (current << shift) & mask
        shift *= 2
    return current.to_bytes(size, "little")
