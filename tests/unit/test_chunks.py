"""The shared chunk encoding: every value kind, edge doubles and step orders round-trip."""

from __future__ import annotations

import base64
import math
import random
import struct
import sys
from array import array

import pytest

from mltrail.collector.store import chunks
from mltrail.collector.store.chunks import (
    KIND_FLAG,
    KIND_INTEGER,
    KIND_NUMBER,
    KIND_TEXT,
    ChunkError,
    Points,
)

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
EDGE_DOUBLES = [math.nan, math.inf, -math.inf, 0.0, -0.0, sys.float_info.max,
                -sys.float_info.max, sys.float_info.min, 5e-324, -5e-324, 1.0, -1.5]


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def _round_trip(points: Points) -> Points:
    back = chunks.decode(chunks.encode(points))
    assert back.steps == points.steps
    assert back.times == points.times
    assert back.kinds == points.kinds
    assert len(back.values) == len(points.values)
    for kind, got, want in zip(back.kinds, back.values, points.values, strict=True):
        if kind == KIND_NUMBER:
            assert _bits(got) == _bits(want)  # bit for bit: NaN, -0.0, subnormals
        else:
            assert type(got) is type(want) and got == want
    return back


def _numbers(values: list[float]) -> Points:
    n = len(values)
    return Points(list(range(n)), [1_700_000_000_000_000_000 + i for i in range(n)],
                  [KIND_NUMBER] * n, list(values))


def test_edge_doubles_round_trip_bit_for_bit() -> None:
    _round_trip(_numbers(EDGE_DOUBLES))
    nan_payload = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
    _round_trip(_numbers([nan_payload, 1.0, nan_payload]))


@pytest.mark.parametrize("count", [0, 1, 2, 3, 100, chunks.CHUNK_POINTS])
def test_any_count_round_trips(count: int) -> None:
    rng = random.Random(count)
    _round_trip(_numbers([rng.uniform(-1e9, 1e9) for _ in range(count)]))


def test_every_value_kind_alone_and_mixed() -> None:
    ints = [0, 1, -1, INT64_MAX, INT64_MIN, 7, 7, 7]
    texts = ["", "loss", "é ∑ 🎉", "a\nb", "x" * 70_000, "\ud800 lone surrogate"]
    flags = [True, False, False, True]
    for kind, values in ((KIND_INTEGER, ints), (KIND_TEXT, texts), (KIND_FLAG, flags),
                         (KIND_NUMBER, EDGE_DOUBLES)):
        n = len(values)
        _round_trip(Points([None] * n, list(range(n)), [kind] * n, list(values)))
    mixed_kinds = [KIND_NUMBER, KIND_TEXT, KIND_INTEGER, KIND_FLAG, KIND_NUMBER, KIND_TEXT]
    mixed_values: list[chunks.Value] = [math.nan, "a", INT64_MIN, True, -math.inf, "b"]
    _round_trip(Points([1, None, 3, None, 5, 6], [10, 10, 11, 9, 12, 13], mixed_kinds,
                       mixed_values))


def test_out_of_order_repeated_and_absent_steps_keep_logged_order() -> None:
    steps: list[int | None] = [5, 3, 3, 9, None, 0, INT64_MAX, INT64_MIN, 5, None]
    n = len(steps)
    times = [100, 90, 90, 200, 50, INT64_MAX, INT64_MIN, 0, 100, 100]
    _round_trip(Points(steps, times, [KIND_NUMBER] * n, [float(i) for i in range(n)]))


def test_extreme_int64_deltas_fall_back_to_raw_and_round_trip() -> None:
    values = [INT64_MAX, INT64_MIN, INT64_MAX, INT64_MIN, 0]
    n = len(values)
    _round_trip(Points(list(values), list(values), [KIND_INTEGER] * n, list(values)))
    assert chunks.decode_ints(chunks.encode_ints(values)) == values


def test_int_column_round_trips() -> None:
    for numbers in ([], [5], [5, 6], list(range(0, 10_000, 3)), [3, 1, 4, 1, 5, 9, 2, 6]):
        assert chunks.decode_ints(chunks.encode_ints(numbers)) == numbers


def test_regular_series_is_compact() -> None:
    n = chunks.CHUNK_POINTS
    points = Points(list(range(n)), [1_700_000_000_000_000_000 + 1_000_000 * i
                                     for i in range(n)], [KIND_NUMBER] * n,
                    [round(1 / (1 + i), 4) for i in range(n)])
    assert len(chunks.encode(points)) / n < 4


def test_damaged_or_foreign_bytes_raise_chunk_error() -> None:
    blob = chunks.encode(_numbers([1.0, 2.0, 3.0]))
    for bad in (b"", b"\x07" + blob[1:], blob[:5], blob[:-3] + b"xyz"):
        with pytest.raises(ChunkError):
            chunks.decode(bad)


def test_summary_of_a_chunk() -> None:
    points = Points([4, 2, None, 8], [30, 10, 20, 40],
                    [KIND_NUMBER, KIND_TEXT, KIND_INTEGER, KIND_NUMBER],
                    [math.nan, "x", -3, 2.5])
    summary = chunks.summarize(points)
    assert (summary.count, summary.first_step, summary.last_step) == (4, 4, 8)
    assert (summary.min_step, summary.max_step) == (2, 8)
    assert (summary.first_time, summary.last_time, summary.min_time, summary.max_time) == (
        30, 40, 10, 40)
    assert math.isnan(summary.first_value)
    assert (summary.last_value, summary.min_value, summary.max_value) == (2.5, -3.0, 2.5)
    assert summary.has_nan and not summary.steps_sorted
    assert not summary.all_steps and not summary.all_numeric
    assert summary.flags == chunks.FLAG_HAS_NAN
    only_nan = chunks.summarize(_numbers([math.nan, math.nan]))
    assert math.isnan(only_nan.min_value) and math.isnan(only_nan.max_value)
    assert only_nan.steps_sorted and only_nan.all_steps and only_nan.all_numeric
    text = chunks.summarize(Points([None], [1], [KIND_TEXT], ["a"]))
    assert text.min_value is None and text.last_value is None and text.min_step is None


def test_number_chunks_decode_to_columns_too() -> None:
    rng = random.Random(5)
    for steps in ([None] * 50, list(range(50)), [rng.randint(-9, 9) for _ in range(50)]):
        points = Points(list(steps), [rng.randint(0, 10 ** 18) for _ in range(50)],
                        [KIND_NUMBER] * 50, [rng.uniform(-1, 1) for _ in range(49)] + [math.nan])
        columns = chunks.decode_columns(chunks.encode(points))
        assert columns is not None and columns.count == 50
        assert (None if columns.steps is None else columns.steps.tolist()) == (
            None if steps[0] is None else steps)
        assert columns.times.tolist() == points.times
        assert [_bits(v) for v in columns.numbers] == [_bits(v) for v in points.values]
    for count in (0, 1, 2):
        one = chunks.decode_columns(chunks.encode(_numbers([1.5] * count)))
        assert one is not None and one.numbers.tolist() == [1.5] * count
    mixed = Points([1, None], [1, 2], [KIND_NUMBER, KIND_TEXT], [1.0, "a"])
    assert chunks.decode_columns(chunks.encode(mixed)) is None
    assert chunks.decode_columns(chunks.encode(Points([1, None], [1, 2], [KIND_NUMBER] * 2,
                                                      [1.0, 2.0]))) is None


# ---- version 2: float32 values, linear time residuals; version 1 still read -------

# Written by the version-1 encoder (mltrail before float32 values and linear residuals):
# a store keeps such chunks, unmigrated, and they must decode to these points.
V1_CHUNKS = {
    "numbers": "ARQMAQwAAgGAgIDLmqvj7DDehHsEAXicY2BAAfMXwFhtbTAWIyMDBvjP8J+RgRHORhYnlv2Dg+EDw3"
               "uG/wIMHzjqGRr+gyBDw/4GAHeFGeU=",
    "mixed": "ARgGAgQCBAEUAAEA////////////AQIAAQB4nGNkYGRgBCImVi5mRmYmFkZmBiTwg6O+ITGJEQARgQLr",
    "no_steps": "ARwFAAAKAQEC/v//////////Af3//////////wMAeJxjYGD4DwH1DBDQAKUZ2NFoAB++CAc=",
}
V1_POINTS = {
    "numbers": Points(list(range(12)), [1_760_000_000_000_000_000 + i * 1_000_000
                                        + (i * 7919) % 50_000 for i in range(12)],
                      [KIND_NUMBER] * 12, list(EDGE_DOUBLES)),
    "mixed": Points([1, None, 3, None, 5, 6], [10, 10, 11, 9, 12, 13],
                    [KIND_NUMBER, KIND_TEXT, KIND_INTEGER, KIND_FLAG, KIND_NUMBER, KIND_TEXT],
                    [math.nan, "a", INT64_MIN, True, -math.inf, "b"]),
    "no_steps": Points([None] * 5, [5, 4, 3, 2, 1], [KIND_INTEGER] * 5,
                       [INT64_MAX, INT64_MIN, 0, 7, 7]),
}


def _same(got: Points, want: Points) -> None:
    assert (got.steps, got.times, got.kinds) == (want.steps, want.times, want.kinds)
    for kind, a, b in zip(got.kinds, got.values, want.values, strict=True):
        assert _bits(a) == _bits(b) if kind == KIND_NUMBER else (type(a), a) == (type(b), b)


@pytest.mark.parametrize("name", sorted(V1_CHUNKS))
def test_version_1_chunks_still_decode(name: str) -> None:
    blob = base64.b64decode(V1_CHUNKS[name])
    assert blob[0] == 1 and chunks.VERSION == 3
    _same(chunks.decode(blob), V1_POINTS[name])
    columns = chunks.decode_columns(blob)
    if name == "numbers":
        assert columns is not None
        assert columns.times.tolist() == V1_POINTS[name].times
        assert [_bits(v) for v in columns.numbers] == [_bits(v) for v in EDGE_DOUBLES]
    else:
        assert columns is None  # not all numbers: the reader decodes it as points


def _loss_curve(count: int, seed: int) -> Points:
    """What training logs: float32 losses with noise, times 1 ms apart with jitter."""
    rng = random.Random(seed)
    losses = array("f", (2.0 * math.exp(-i / 20_000) + rng.gauss(0, 0.02) for i in range(count)))
    return Points(list(range(count)), [1_760_000_000_000_000_000 + i * 1_000_000
                                       + rng.randrange(50_000) for i in range(count)],
                  [KIND_NUMBER] * count, losses.tolist())


def test_float32_values_and_jittered_times_are_stored_compactly() -> None:
    points = _loss_curve(chunks.CHUNK_POINTS, 3)
    blob = chunks.encode(points)
    assert blob[0] == 3
    _round_trip(points)
    # float32 noise: about 20 random bits a value; 50 us jitter to the ns: 15.6 bits a time
    assert len(blob) / len(points) < 5.0
    assert len(chunks.encode_ints(points.times)) / len(points) < 2.1
    widened = Points(points.steps, points.times, points.kinds,
                     [v + 1e-12 for v in points.values])  # no longer float32: XOR doubles
    _round_trip(widened)
    assert (chunks.decode_values(chunks.encode(widened)) or (0, b"", 0))[2] == 8
    assert (chunks.decode_values(blob) or (0, b"", 0))[2] == 4


def test_float32_detection_is_bit_exact() -> None:
    nan32 = struct.unpack("<d", struct.pack("<d", float(array("f", [math.nan])[0])))[0]
    payload = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]  # not a float32
    for values in ([0.5, -0.0, 0.0, math.inf, -math.inf, nan32, 3.4028234663852886e38],
                   [0.5, 3.5e38], [0.5, 1e-46], [0.5, payload], [0.5, 0.1],
                   [1.401298464324817e-45, -1.401298464324817e-45]):
        _round_trip(_numbers(values))
        columns = chunks.decode_columns(chunks.encode(_numbers(values)))
        assert columns is not None
        assert [_bits(v) for v in columns.numbers] == [_bits(v) for v in values]


@pytest.mark.parametrize("seed", range(6))
def test_int_columns_of_every_shape_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([3, 4, 17, 1000, chunks.CHUNK_POINTS])
    base, stride = rng.randint(-(2 ** 62), 2 ** 62), rng.choice([0, 1, -7, 1_000_000, 2 ** 40])
    shapes = [
        [base + i * stride + rng.randrange(50_000) for i in range(n)],   # grid with jitter
        [base - i * stride + rng.randrange(300) for i in range(n)],      # falling grid
        [rng.randint(INT64_MIN, INT64_MAX) for _ in range(n)],           # no order at all
        [base + i * stride + (rng.randrange(2 ** 40) if i % 97 == 0 else 0) for i in range(n)],
        [INT64_MAX - rng.randrange(10 ** 6) for _ in range(n)],
    ]
    for numbers in shapes:
        numbers = [min(max(v, INT64_MIN), INT64_MAX) for v in numbers]
        assert chunks.decode_ints(chunks.encode_ints(numbers)) == numbers
        points = Points(list(numbers), list(numbers), [KIND_INTEGER] * n, list(numbers))
        _round_trip(points)
        columns = chunks.decode_columns(chunks.encode(Points(
            list(numbers), list(numbers), [KIND_NUMBER] * n, [float(i) for i in range(n)])))
        assert columns is not None and columns.steps is not None
        assert columns.steps.tolist() == numbers and columns.times.tolist() == numbers


def test_values_alone_skip_steps_and_times_of_every_shape() -> None:
    rng = random.Random(8)
    loss = _loss_curve(500, 1)
    shapes = [loss, _numbers(EDGE_DOUBLES),
              Points([None] * 50, [rng.randint(0, 10 ** 18) for _ in range(50)],
                     [KIND_NUMBER] * 50, [rng.random() for _ in range(50)]),
              Points([1, None, 3], [5, 6, 7], [KIND_NUMBER] * 3, [0.5, -0.0, math.inf]),
              V1_POINTS["numbers"]]
    blobs = [chunks.encode(p) for p in shapes] + [base64.b64decode(V1_CHUNKS["numbers"])]
    for points, blob in zip([*shapes, V1_POINTS["numbers"]], blobs, strict=True):
        got = chunks.decode_values(blob)
        assert got is not None
        count, data, width = got
        values = array("f" if width == 4 else "d", data).tolist()
        assert count == len(points) and [_bits(v) for v in values] == [
            _bits(v) for v in points.values]
    assert (chunks.decode_values(chunks.encode(loss)) or (0, b"", 0))[2] == 4
    mixed = chunks.encode(Points([1, 2], [1, 2], [KIND_NUMBER, KIND_INTEGER], [1.0, 2]))
    assert chunks.decode_values(mixed) is None
    assert chunks.decode_values(base64.b64decode(V1_CHUNKS["mixed"])) is None
