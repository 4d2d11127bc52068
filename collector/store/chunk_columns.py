"""The column encodings inside a chunk (chunks.py): integers and doubles as bytes.

Built from the standard library only: every pass over a column is a C loop
(array, map, accumulate, big-integer arithmetic), never Python work per value.

Integers (steps, times, text lengths; ``pack_ints``) are written in whichever
of two forms is narrower, with the first value and a second number in the
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
the compressor sees equal high bytes in a row.

Doubles (``pack_floats``): a mode number in the header, then

    0  the IEEE doubles XOR-ed with the previous one (Gorilla: equal leading
       bits become zero bytes), 8 lanes shuffled
    1  every value is a float32 widened (what ``loss.item()`` of a float32
       tensor gives): the 4-byte floats, 4 lanes shuffled; half the bytes for
       the same doubles, bit for bit
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, and_, mul, neg, rshift, sub, xor
from typing import Any

_WIDTHS = {1: "B", 2: "H", 4: "I", 8: "Q"}
_RAW = 0  # int column width code: raw int64 (a delta of deltas past 64 bits)
_LINEAR = 16  # code 16 + width: linear residuals of that width
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


def shuffle(raw: bytes, width: int) -> bytes:
    if width == 1:
        return raw
    return b"".join(raw[lane::width] for lane in range(width))


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


def _width(top: int) -> int | None:
    for width in _WIDTHS:
        if top < 1 << (8 * width):
            return width
    return None


# ---- integers -----------------------------------------------------------------


def pack_ints(numbers: Sequence[int], header: bytearray) -> bytes:
    """Header fields appended to ``header``, the column returned (see module doc)."""
    count = len(numbers)
    if count == 0:
        return b""
    varint(header, zigzag(numbers[0]))
    if count == 1:
        return b""
    deltas = list(map(sub, numbers[1:], numbers))
    raw_dods = list(map(sub, deltas[1:], deltas))
    low, high = min(raw_dods, default=0), max(raw_dods, default=0)
    width = (_width(max(2 * high, -2 * low - 1))  # the largest zigzag number
             if low >= -(2 ** 63) and high < 2 ** 63 else None)
    if width is not None and width > 1 and count > 2:
        linear = _linear(numbers, width)
        if linear is not None:
            stride, offset, lin_width, residuals = linear
            varint(header, zigzag(stride))
            varint(header, _LINEAR + lin_width)
            varint(header, zigzag(offset))
            return shuffle(_wire(_WIDTHS[lin_width], residuals), lin_width)
    varint(header, zigzag(deltas[0]))
    if width is None:
        varint(header, _RAW)
        return _wire("q", numbers)
    varint(header, width)
    dods = [(d << 1) ^ (d >> 63) for d in raw_dods]  # zigzag, exact for int64 values
    return shuffle(_wire(_WIDTHS[width], dods), width)


def _linear(numbers: Sequence[int], narrower_than: int
            ) -> tuple[int, int, int, list[int]] | None:
    """(stride, offset, width, residuals) about the least-squares line, when they fit in
    fewer than ``narrower_than`` bytes; None otherwise."""
    count = len(numbers)
    first = numbers[0]
    rel = list(map(sub, numbers, repeat(first, count)))
    sx, sxx = count * (count - 1) // 2, (count - 1) * count * (2 * count - 1) // 6
    num = count * sum(map(mul, range(count), rel)) - sx * sum(rel)
    den = count * sxx - sx * sx
    stride = (2 * num + den) // (2 * den)  # rounded to the nearest integer
    line = range(0, stride * count, stride) if stride else repeat(0, count)
    residuals = list(map(sub, rel, line))
    offset = min(residuals)
    width = _width(max(residuals) - offset)
    if width is None or width >= narrower_than:
        return None
    return stride, offset, width, list(map(sub, residuals, repeat(offset, count)))


def skip_ints(count: int, header: bytes | memoryview, pos: int) -> int:
    """The header position after an int column's fields."""
    return int_column_size(count, header, pos)[1]


def int_column_size(count: int, header: bytes | memoryview, pos: int) -> tuple[int, int]:
    """An int column's size in the column bytes, and the header position after it."""
    if count == 0:
        return 0, pos
    _, pos = read_varint(header, pos)
    if count == 1:
        return 0, pos
    _, pos = read_varint(header, pos)
    code, pos = read_varint(header, pos)
    if code > _LINEAR:
        _, pos = read_varint(header, pos)
        return (code - _LINEAR) * count, pos
    return (8 * count if code == _RAW else code * (count - 2)), pos


def unpack_ints(count: int, header: bytes | memoryview, pos: int, column: bytes
                ) -> tuple[list[int], int, bytes]:
    """The numbers, the header position after them, and the rest of the column bytes."""
    numbers, pos, column = _unpack(count, header, pos, column)
    return (numbers if isinstance(numbers, list) else numbers.tolist()), pos, column


def int_array(count: int, header: bytes | memoryview, pos: int, column: bytes
              ) -> tuple[array[int], int, bytes]:
    """``unpack_ints`` into an int64 array."""
    numbers, pos, column = _unpack(count, header, pos, column)
    if isinstance(numbers, array) and numbers.typecode == "q":
        return numbers, pos, column
    return array("q", numbers), pos, column  # from a list: array() of an iterator is slow


def _unpack(count: int, header: bytes | memoryview, pos: int, column: bytes
            ) -> tuple[list[int] | array[int], int, bytes]:
    if count == 0:
        return [], pos, column
    first, pos = read_varint(header, pos)
    start = unzigzag(first)
    if count == 1:
        return [start], pos, column
    second, pos = read_varint(header, pos)
    code, pos = read_varint(header, pos)
    if code == _RAW:
        size = 8 * count
        if len(column) < size:
            raise ColumnError("chunk column is shorter than its count")
        return _native("q", column[:size]), pos, column[size:]
    if code > _LINEAR:
        return _unpack_linear(count, unzigzag(second), code - _LINEAR, header, pos, column,
                              start)
    typecode = _WIDTHS.get(code)
    if typecode is None:
        raise ColumnError(f"chunk has an integer column of unknown width {code}")
    size = code * (count - 2)
    if len(column) < size:
        raise ColumnError("chunk column is shorter than its count")
    raw, step = column[:size], unzigzag(second)
    if raw.count(0) == size:  # a constant stride (steps 0, 1, 2...): no sums needed
        return (list(range(start, start + step * count, step)) if step
                else [start] * count), pos, column[size:]
    dods = _native(typecode, unshuffle(raw, code, count - 2))
    # unzigzag as C loops: (z >> 1) ^ -(z & 1)
    signed = map(xor, map(rshift, dods, repeat(1)), map(neg, map(and_, dods, repeat(1))))
    deltas = accumulate(signed, initial=step)
    return list(accumulate(deltas, initial=start)), pos, column[size:]


def _unpack_linear(count: int, stride: int, width: int, header: bytes | memoryview,
                   pos: int, column: bytes, start: int
                   ) -> tuple[list[int], int, bytes]:
    typecode = _WIDTHS.get(width)
    if typecode is None:
        raise ColumnError(f"chunk has a linear column of unknown width {width}")
    offset, pos = read_varint(header, pos)
    size = width * count
    if len(column) < size:
        raise ColumnError("chunk column is shorter than its count")
    residuals = _native(typecode, unshuffle(column[:size], width, count))
    base = start + unzigzag(offset)
    line = range(base, base + stride * count, stride) if stride else repeat(base, count)
    return list(map(add, line, residuals)), pos, column[size:]


# ---- doubles --------------------------------------------------------------------


def pack_floats(values: Sequence[float], header: bytearray) -> bytes:
    """The float mode appended to ``header``, the column returned (see module doc)."""
    doubles = array("d", values)
    narrow = array("f", values)  # out of float32 range: inf, caught below
    if array("d", narrow.tolist()).tobytes() == doubles.tobytes():
        varint(header, FLOATS_32)
        return shuffle(_wire("f", narrow), 4)
    varint(header, FLOATS_XOR)
    return shuffle(_xor_floats(_wire("d", doubles)), 8)


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
