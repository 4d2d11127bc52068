"""``pack_ints`` and ``pack_floats`` of chunk_columns.py as numpy passes, for columns
of many values.

The pure form (chunk_columns.py) runs each pass over a column as a C loop of
Python integers, about 20 to 40 ns a value; a full chunk of times took some
15 of them, half of the store writer's time. Here a pass over int64s costs a
nanosecond or two. The bytes are the same as the pure form's, bit for bit
(tests/unit/test_chunk_numpy.py compares them): this is a faster way to the
same encoding, not another encoding.

numpy's int64 overflows where Python's integers do not, so a column is taken
here only when nothing can overflow: its values fit int64 and span less than
2**60 (deltas and deltas of deltas then fit with room), and the linear fit's
sums and line fit too. Anything else answers None, and the pure form packs it
(it also keeps the raw int64 form, which a span below 2**60 never needs).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mltrail.collector.store.chunk_columns import (
    FLOATS_32,
    FLOATS_XOR,
    LINEAR,
    LINEAR_FROM,
    linear_residuals,
    varint,
    width_of,
    zigzag,
)
from mltrail.collector.store.chunk_raw import raw_bytes, raw_layout
from mltrail.collector.store.chunks import KIND_NUMBER, ChunkSummary, Points, encode_numbers

_SPAN = 1 << 60  # values spanning less than this: deltas of deltas within 2**62
_SUMS = 1 << 62  # a bound kept below int64's for the linear fit's sum of i * value


def pack_ints(numbers: Sequence[int] | Any, header: bytearray, factor: bool
              ) -> list[bytes] | None:
    """chunk_columns.pack_ints for three or more values, or None (then nothing was
    written to ``header``)."""
    try:
        values = np.asarray(numbers, dtype=np.int64)
    except OverflowError:
        return None
    count = len(values)
    if count < 3 or int(values.max()) - int(values.min()) >= _SPAN:
        return None
    first = int(values[0])
    rel = values - values[0]
    deltas = np.diff(values)
    fields = [zigzag(first)]
    if factor:
        common = int(np.gcd.reduce(deltas)) or 1  # non-negative, as math.gcd
        fields.append(common)
        if common > 1:
            rel //= common  # exact: every value less the first is a multiple
            deltas //= common
    dods = np.diff(deltas)
    low, high = int(dods.min()), int(dods.max())
    top = max(2 * high, -2 * low - 1)
    width = width_of(top)
    assert width is not None  # within 2**62
    zeros = len(dods) - int(np.count_nonzero(dods))
    sparse = zeros * 4 >= len(dods)
    if width > 1 or (top >= LINEAR_FROM and not sparse):
        linear = _linear(rel, width, 0 if sparse else top)
        if linear is not None:
            stride, offset, lin_width, residuals = linear
            fields += [zigzag(stride), LINEAR + lin_width, zigzag(offset)]
            _varints(header, fields)
            return _lanes(residuals, lin_width)
    fields += [zigzag(int(deltas[0])), width]
    _varints(header, fields)
    if zeros == len(dods):  # a constant stride (steps 0, 1, 2)
        return _lanes(np.zeros(len(dods), dtype=np.uint64), width)
    return _lanes((dods << 1) ^ (dods >> 63), width)


def pack_floats(values: Sequence[float] | Any, header: bytearray) -> list[bytes]:
    """chunk_columns.pack_floats: float32 lanes when every value is a widened float32
    (bit for bit), else each double XOR-ed with the one before it."""
    doubles = np.asarray(values, dtype="<f8")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, a mismatch
        narrow = doubles.astype("<f4")
    bits = doubles.view("<u8")
    if np.array_equal(narrow.astype("<f8").view("<u8"), bits):
        varint(header, FLOATS_32)
        return _lanes(narrow.view("<u4"), 4)
    varint(header, FLOATS_XOR)
    xored = bits.copy()
    xored[1:] ^= bits[:-1]
    return _lanes(xored, 8)


@dataclass(frozen=True)
class Numbers:
    """Points of plain numbers as int64 and float64 arrays: every point with a step
    (``steps``) or none (None). The writer's form of an open chunk and the points that
    extend it: each point is converted once, never a Python object per point again."""

    steps: Any  # int64 array, or None
    times: Any  # int64 array
    values: Any  # float64 array

    def __len__(self) -> int:
        return len(self.times)

    def slice(self, start: int, stop: int) -> Numbers:
        return Numbers(None if self.steps is None else self.steps[start:stop],
                       self.times[start:stop], self.values[start:stop])

    def join(self, other: Numbers) -> Numbers:
        """These points, then ``other``'s (of the same step mode)."""
        return Numbers(None if self.steps is None else np.concatenate((self.steps, other.steps)),
                       np.concatenate((self.times, other.times)),
                       np.concatenate((self.values, other.values)))


def numbers_of(points: Points) -> Numbers | None:
    """``points`` as Numbers, when they are plain numbers with a step each or none, and
    within int64 (None: another shape, for chunks.py)."""
    values, steps, times = points.values, points.steps, points.times
    if (isinstance(values, array) and isinstance(times, array)  # Points.packed: views
            and points.kinds.count(KIND_NUMBER) == len(points)
            and (isinstance(steps, array) or steps.count(None) == len(points))):
        return Numbers(np.frombuffer(steps, np.int64) if isinstance(steps, array) else None,
                       np.frombuffer(times, np.int64), np.frombuffer(values, np.float64))
    if points.kinds.count(KIND_NUMBER) != len(points):
        return None
    absent = points.steps.count(None)
    if absent not in (0, len(points)):
        return None
    try:
        steps = None if absent else np.asarray(points.steps, dtype=np.int64)
        times = np.asarray(points.times, dtype=np.int64)
    except OverflowError:
        return None
    return Numbers(steps, times, np.asarray(points.values, dtype=np.float64))


def raw_numbers(blob: bytes | memoryview) -> Numbers:
    """The points of a raw chunk (chunk_raw.py), as views of its bytes; ValueError if
    damaged."""
    count, pos, mode = raw_layout(blob)
    pos += 1
    steps = None
    if mode:
        steps = np.frombuffer(blob, "<i8", count, pos)
        pos += 8 * count
    return Numbers(steps, np.frombuffer(blob, "<i8", count, pos),
                   np.frombuffer(blob, "<f8", count, pos + 8 * count))


def encoded(numbers: Numbers, raw: bool) -> bytes:
    """The chunk bytes of ``numbers``: the raw form (``raw``), or compressed as
    ``chunks.encode`` compresses the same points."""
    if raw:
        steps = b"" if numbers.steps is None else numbers.steps.astype("<i8").tobytes()
        return raw_bytes(len(numbers), steps, numbers.times.astype("<i8").tobytes(),
                         numbers.values.astype("<f8").tobytes())
    return encode_numbers(numbers.steps, numbers.times, numbers.values)


def number_summary(numbers: Numbers) -> ChunkSummary:
    """chunks.summarize of these points: the same summary, min and max as Python's
    (of 0.0 and -0.0, the first logged)."""
    values, times = numbers.values, numbers.times
    nan = np.isnan(values)
    has_nan = bool(nan.any())
    ordered = values[~nan] if has_nan else values
    low = high = math.nan
    if len(ordered):
        low = _first_of_equals(ordered, ordered.min())
        high = _first_of_equals(ordered, ordered.max())
    steps = numbers.steps
    first_step = last_step = min_step = max_step = None
    if steps is not None:
        first_step, last_step = int(steps[0]), int(steps[-1])
        min_step, max_step = int(steps.min()), int(steps.max())
    return ChunkSummary(
        count=len(values), first_step=first_step, last_step=last_step, min_step=min_step,
        max_step=max_step, first_time=int(times[0]), last_time=int(times[-1]),
        min_time=int(times.min()), max_time=int(times.max()), first_value=float(values[0]),
        last_value=float(values[-1]), min_value=low, max_value=high,
        steps_sorted=steps is not None and bool(np.all(steps[1:] >= steps[:-1])),
        has_nan=has_nan, all_steps=steps is not None, all_numeric=True)


def _first_of_equals(values: Any, extreme: Any) -> float:
    """``extreme`` as Python's min or max gives it: of 0.0 and -0.0, the first logged."""
    if extreme == 0:
        return float(values[int(np.argmax(values == 0))])
    return float(extreme)


def _linear(rel: Any, dod_width: int, dod_top: int) -> tuple[int, int, int, Any] | None:
    """chunk_columns.linear_residuals; it keeps its rules (see there)."""
    count = len(rel)
    biggest = max(abs(int(rel.min())), abs(int(rel.max())))
    if biggest * count * count >= _SUMS:
        return _exact_linear(rel, dod_width, dod_top)
    sx, sxx = count * (count - 1) // 2, (count - 1) * count * (2 * count - 1) // 6
    index = np.arange(count, dtype=np.int64)
    num = count * int(np.dot(index, rel)) - sx * int(rel.sum())
    den = count * sxx - sx * sx
    stride = (2 * num + den) // (2 * den)  # rounded to the nearest integer
    if abs(stride) * count >= _SUMS:
        return None
    residuals = rel - index * stride
    offset = int(residuals.min())
    span = int(residuals.max()) - offset
    width = width_of(span)
    if width is None or width > dod_width or (width == dod_width and span >= dod_top):
        return None
    return stride, offset, width, residuals - offset


def _exact_linear(rel: Any, dod_width: int, dod_top: int) -> tuple[int, int, int, Any] | None:
    """The fit with Python's integers where int64 sums could overflow (rare: a few
    values spread wide)."""
    found = linear_residuals(rel.tolist(), dod_width, dod_top)
    if found is None:
        return None
    stride, offset, width, residuals = found
    return stride, offset, width, np.asarray(residuals, dtype=np.int64)


def _varints(out: bytearray, numbers: list[int]) -> None:
    for number in numbers:
        varint(out, number)


def _lanes(numbers: Any, width: int) -> list[bytes]:
    """The byte planes of non-negative numbers below 256**width, little-endian."""
    raw = numbers.astype(f"<u{width}")
    if width == 1:
        return [raw.tobytes()]
    planes = raw.view(np.uint8).reshape(-1, width)
    return [planes[:, lane].tobytes() for lane in range(width)]
