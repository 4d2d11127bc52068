"""chunk_numpy.py is a faster way to the same chunk bytes: every column, chunk, raw
chunk and summary it makes equals, bit for bit, what the pure form makes of the same
points, at every edge where int64 could overflow (where it hands the column back)."""

from __future__ import annotations

import dataclasses
import math
import random
import struct
from array import array
from collections.abc import Iterator
from typing import Any

import pytest

from mltrail.collector.store import chunk_columns, chunk_numpy, chunks, series_tail
from mltrail.collector.store.chunk_raw import encode_raw
from mltrail.collector.store.chunks import KIND_NUMBER, Points

T0 = 1_700_000_000_000_000_000


def int_columns() -> Iterator[list[int]]:
    rng = random.Random(7)
    for n in (64, 65, 100, 4096, 5000):
        yield list(range(n))
        yield list(range(5, 5 + 3 * n, 3))
        yield [7] * n
        yield [T0 + i * 1_000_000 + rng.randrange(50_000) for i in range(n)]
        yield [(T0 + i * 1_000_000 + rng.randrange(50_000)) // 1000 * 1000 for i in range(n)]
        yield [T0 + (i // 10) * 1000 for i in range(n)]  # log lines sharing a time
        yield [rng.randrange(-2**63, 2**63) for _ in range(n)]  # past the span: pure form
        yield [rng.randrange(-1000, 1000) for _ in range(n)]
        yield [rng.choice([0, 1, 2**40]) for _ in range(n)]
        yield sorted(rng.randrange(0, 2**59) for _ in range(n))  # linear sums past int64
        yield [rng.randrange(0, 2**58) for _ in range(n)]
        yield [-2**63] + [2**63 - 1] * (n - 1)
        yield [i * i for i in range(n)]
        yield [i * 997 + rng.randrange(3) for i in range(n)]
        yield [(-1) ** i * 2**59 for i in range(n)]


def float_columns() -> Iterator[list[float]]:
    rng = random.Random(8)
    for n in (64, 100, 4096):
        yield [i * 0.5 for i in range(n)]
        yield [rng.random() for _ in range(n)]
        yield [struct.unpack("f", struct.pack("f", rng.random()))[0] for _ in range(n)]
        yield [math.nan, -0.0, math.inf, -math.inf, 1e308, 5e-324, 2.2e-308] * (n // 7 + 1)
        yield [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
               for _ in range(n)]  # every bit pattern, NaN payloads among them
        yield [3.4e39] + [1.0] * (n - 1)  # beyond float32
        yield [0.0, -0.0] * (n // 2)


@pytest.mark.parametrize("factor", [False, True])
def test_int_columns_pack_to_the_same_bytes(factor: bool) -> None:
    taken = 0
    for numbers in int_columns():
        pure, fast = bytearray(), bytearray()
        expected = chunk_columns.pack_ints_pure(numbers, pure, factor)
        got = chunk_numpy.pack_ints(numbers, fast, factor)
        if got is None:  # handed back: nothing written
            assert fast == b""
            continue
        taken += 1
        assert (got, fast) == (expected, pure), numbers[:4]
        assert chunk_columns.pack_ints(numbers, bytearray(), factor) == expected
    assert taken >= 60


def test_float_columns_pack_to_the_same_bytes() -> None:
    for values in float_columns():
        pure, fast = bytearray(), bytearray()
        assert (chunk_numpy.pack_floats(values, fast), fast) == (
            chunk_columns.pack_floats_pure(values, pure), pure)


def bits(summary: chunks.ChunkSummary) -> tuple[Any, ...]:
    return tuple(struct.pack("<d", v) if isinstance(v, float) else v
                 for v in dataclasses.astuple(summary))


def number_points() -> Iterator[Points]:
    rng = random.Random(9)
    for values in float_columns():
        n = len(values)
        times = [T0 + 1000 * i + rng.randrange(3) * 1000 for i in range(n)]
        for steps in (list(range(n)), [rng.randrange(-5, 5) for _ in range(n)], [None] * n):
            yield Points(list(steps), list(times), [KIND_NUMBER] * n, list(values))


def pure_summary(points: Points) -> chunks.ChunkSummary:
    return chunks.summarize(points)  # the pure form: chunks.py has no numpy path


def test_chunks_raw_chunks_and_summaries_are_the_same() -> None:
    for points in number_points():
        numbers = chunk_numpy.numbers_of(points)
        assert numbers is not None
        assert chunk_numpy.encoded(numbers, False) == chunks.encode(points)
        assert chunk_numpy.encoded(numbers, True) == encode_raw(points.steps, points.times,
                                                                points.values)
        assert bits(chunk_numpy.number_summary(numbers)) == bits(pure_summary(points))
        packed = points.packed()
        assert isinstance(packed.values, array)
        again = chunk_numpy.numbers_of(packed)
        assert again is not None and chunk_numpy.encoded(again, False) == chunks.encode(points)
        raw = chunk_numpy.encoded(numbers, True)
        assert chunk_numpy.encoded(chunk_numpy.raw_numbers(raw), False) == chunks.encode(points)


def test_min_and_max_keep_the_first_of_equal_zeros_as_python_does() -> None:
    for values in ([0.0, -0.0, 1.0] * 30, [-0.0, 0.0, -1.0, 1.0] * 30, [-0.0, 0.0] * 40,
                   [math.nan] * 70, [math.nan, -0.0, 0.0] * 30):
        points = Points(list(range(len(values))), list(range(len(values))),
                        [KIND_NUMBER] * len(values), values)
        numbers = chunk_numpy.numbers_of(points)
        assert numbers is not None
        assert bits(chunk_numpy.number_summary(numbers)) == bits(pure_summary(points))


def test_other_shapes_are_left_to_the_pure_form() -> None:
    n = 100
    some_steps = Points([1 if i % 2 else None for i in range(n)], list(range(n)),
                        [KIND_NUMBER] * n, [1.0] * n)
    integers = Points(list(range(n)), list(range(n)), [chunks.KIND_INTEGER] * n, list(range(n)))
    huge_step = Points([2**64] + [1] * (n - 1), list(range(n)), [KIND_NUMBER] * n, [1.0] * n)
    for points in (some_steps, integers, huge_step):
        assert chunk_numpy.numbers_of(points) is None
        assert points.packed() is points


@pytest.mark.parametrize("count", [1, 63, 64, 100, 4095, 4096, 4097, 9000])
def test_series_rows_are_those_of_the_pure_form(count: int) -> None:
    """series_tail's rows from numpy equal encode/summarize of the same points, open or
    full, and extending a raw head gives the chunk of the joined points."""
    rng = random.Random(count)
    steps = list(range(count))
    times = [T0 + 1000 * i for i in range(count)]
    values = [rng.random() for _ in range(count)]
    points = Points(steps, times, [KIND_NUMBER] * count, values)
    for source in (points, points.packed()):
        rows = series_tail.rows_of(source, True)
        for index, row in enumerate(rows):
            part = points.slice(index * chunks.CHUNK_POINTS, (index + 1) * chunks.CHUNK_POINTS)
            last = index == len(rows) - 1
            assert row.raw == (last and len(part) < chunks.CHUNK_POINTS)
            assert row.data == (chunks.encode_open(part) if row.raw else chunks.encode(part))
            assert bits(row.summary) == bits(pure_summary(part))
    head = chunks.encode_open(points.slice(0, min(count, 10)))
    if head[:1] == b"\x80" and count > 10:
        row, rest = series_tail.extend(head, points.slice(10, count).packed())
        joined = points.slice(0, min(count, chunks.CHUNK_POINTS))
        assert chunks.decode(row.data) == joined
        assert len(rest) == count - len(joined)
