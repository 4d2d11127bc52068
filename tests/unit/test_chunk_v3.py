"""Chunk version 3: a common factor in integer columns, byte planes compressed apart, a
CRC over the chunk; version 2 chunks (and version-2 int columns) still decode."""

from __future__ import annotations

import base64
import math
import random
import zlib
from array import array

import pytest
import zstandard

from mltrail.collector.store import chunk_planes, chunks
from mltrail.collector.store.chunk_columns import read_varint, varint
from mltrail.collector.store.chunks import KIND_INTEGER, KIND_NUMBER, KIND_TEXT, ChunkError, Points
from tests.unit.test_chunks import EDGE_DOUBLES, INT64_MAX, INT64_MIN, _bits, _same

T0 = 1_760_000_000_000_000_000


def _round_trip(points: Points) -> bytes:
    blob = chunks.encode(points)
    assert blob[0] == chunks.VERSION == 3
    _same(chunks.decode(blob), points)
    return blob


# ---- version 2 chunks, written by the encoder before version 3 -----------------------

def _v2_loss() -> list[float]:
    rng = random.Random(2)
    return array("f", (2.0 * math.exp(-i / 20) + rng.gauss(0, 0.02) for i in range(24))).tolist()


V2_CHUNKS = {
    "loss": "AhcYARgAAgGAgIDLmqvj7DC8i3oS2ScBAXicY2DABt7a9T8wbLp8RbXsuERm1m6e2HX/GQIXfXbh1HBLaV6"
            "4X8oyvHTKJl5tr4y2JQxyNlGVOrHGSStn5X+7PO0Ax5bYM7OkqidtFbKXC/93cdn23SemVd4U+vpdZ2dRl"
            "fqV6KSOAj5Jpo8v7lw+vGfTioUzJ3W1VSfmRPi42xqrKTvYYwcA+ls/Ag==",
    "doubles": "AhUMAQwAAgGAgIDLmqvj7DCAiXoBAQB4nGNgwAH+M/xnZGCEs5HFiWX/4GD4wPCe4b8AwweOeoaG/yDI"
               "0LC/AQBVuBeY",
    "mixed": "AhkGAgQCBAEUAAEAAf///////////wECAAEAeJxjZGBkYAQiJlYuZkZmJhZGZgYgONBQ/z8xiREAE4UD"
             "qg==",
    "ints": "Ai4GAAD+//////////8B/f//////////AwAC/v//////////Af3//////////wMAeJz7/x8M6hkgoOE/"
            "Kp+BFY1Gk2+AqYuQRqVXPIEoBACuDx/f",
}
V2_POINTS = {
    "loss": Points(list(range(24)), [T0 + i * 1_000_000 + (i * 7919) % 50_000 for i in range(24)],
                   [KIND_NUMBER] * 24, _v2_loss()),
    "doubles": Points(list(range(12)), [T0 + i * 1_000_000 for i in range(12)],
                      [KIND_NUMBER] * 12, list(EDGE_DOUBLES)),
    "mixed": Points([1, None, 3, None, 5, 6], [10, 10, 11, 9, 12, 13],
                    [KIND_NUMBER, KIND_TEXT, KIND_INTEGER, chunks.KIND_FLAG, KIND_NUMBER,
                     KIND_TEXT],
                    [math.nan, "a", INT64_MIN, True, -math.inf, "b"]),
    "ints": Points([None] * 6, [INT64_MAX, INT64_MIN, INT64_MAX, 0, 5, 5], [KIND_INTEGER] * 6,
                   [INT64_MAX, INT64_MIN, 0, 7000, 7000, -7000]),
}


def _line_times() -> list[int]:
    """Log line times as a store joins pieces: 100 lines a record share its time."""
    rng = random.Random(9)
    times, at = [], T0
    for record in range(40):
        at += rng.randrange(2_000, 300_000) if record % 10 else rng.randrange(10 ** 8, 10 ** 9)
        times += [at] * 100
    return times


# version-2 int columns (log line times): no version byte, so their form stays
V2_INTS = [
    ("EQiAgIDLmqvj7DDQw3oSvcUCeJyLX/bWpPoQJ0NgYmHTpEWbGQA9uwb5",
     [T0 + i * 1_000_000 + (i * 7919) % 50_000 for i in range(8)]),
    ("BAgGAwF4nOPi5mMQFQMAAPEATw==", [3, 1, 4, 1, 5, 9, 2, 6]),
    (  # a step function: deltas of deltas, mostly zero (linear residuals: 6 times the size)
     "DaAftqq+hJ+r4+wwAAR4nO3ZPUtCURzHcZ81hx60grLBHpYaXARnNynb0iRrV3CoSRCRgoLoARx8CYWbICTk"
     "qINjCQ4uhQ61FPgCauottHx/F+T83sDnnHvu+d/zv8dmo9N6wgnb6wtvLAZ5I7DAG78/vJHP8YbLyRseN288"
     "PvDG2SlvfH/xxsY6bywv8cbtDW+srvCGYh6Had64OOeNq0ve8M/wxvwcbyjmsZ/kDYedN9ZCvKFY871d3tja"
     "5I2TY95Q1HbFt/bzgzd2tnkjdcAb72+8kT3iDUUtub/jDUVfy8fn44204ASXSPCG388b24JqVSrxRkhwKimX"
     "eSOb5Y3ZWd6YTHjj+Zk3wmHe6PV4IynoPgYD3qjVeKPb5Y3RiDfGY94YDnkjEuENxXcwKPijH43yRrPJG+02"
     "b2QyvFGv80arxRv9Pm8Ui7yRSvFGocAbOcGNV7XKG9fXvNHp8EY8zht8PB7ecLl4w+HgDafgPlgRt+DOWfHX"
     "x+vlDbvgfqXR4A3FeiiiqFeKWqJ4d6flWU1Lba9UeENRrxTroahXimel2IOKeSjOcIo9qDAUnbN5r/4fxZpP"
    "Sx+l6A0UmZZezcTExMrEYlaPwMTEhE4gYPUITExM6OTzVo/AxMSEzh/PYEUW",
     _line_times()),
]


@pytest.mark.parametrize("name", sorted(V2_CHUNKS))
def test_version_2_chunks_still_decode(name: str) -> None:
    blob, want = base64.b64decode(V2_CHUNKS[name]), V2_POINTS[name]
    assert blob[0] == 2
    _same(chunks.decode(blob), want)
    columns, values = chunks.decode_columns(blob), chunks.decode_values(blob)
    if name in ("loss", "doubles"):
        assert columns is not None and values is not None
        assert columns.steps is not None and columns.steps.tolist() == want.steps
        assert columns.times.tolist() == want.times
        assert [_bits(v) for v in columns.numbers] == [_bits(v) for v in want.values]
        count, data, width = values
        assert (count, width) == (len(want), 4 if name == "loss" else 8)
        assert [_bits(v) for v in array("f" if width == 4 else "d", data)] == [
            _bits(v) for v in want.values]
    else:
        assert columns is None and values is None  # not all numbers: decoded as points
    _round_trip(want)  # and the same points in version 3


def test_version_2_int_columns_still_decode_and_keep_their_form() -> None:
    for blob, numbers in V2_INTS:
        assert chunks.decode_ints(base64.b64decode(blob)) == numbers
        assert chunks.decode_ints(chunks.encode_ints(numbers)) == numbers
    for blob, numbers in (V2_INTS[0], V2_INTS[2]):
        assert base64.b64encode(chunks.encode_ints(numbers)).decode() == blob


# ---- the common factor -------------------------------------------------------------

FACTOR_SHAPES = {
    "microseconds": [T0 + i * 1_000_000 + (i * 7919) % 50 * 1000 for i in range(500)],
    "milliseconds": [T0 + i * 10 ** 6 * (1 + i % 3) for i in range(300)],
    "negative": [-7 * 10 ** 6 - 3000 * i + (i * i % 11) * 1000 for i in range(200)],
    "falling_grid": [5000 - 1000 * i for i in range(100)],
    "one_point": [T0 + 123_000],
    "two_points": [T0, T0 + 1000],
    "all_equal": [T0 + 5000] * 50,
    "zero_and_minus": [0, -1000, 0, -1000, 0],
    "int64_ends": [INT64_MIN, INT64_MAX - 1, INT64_MIN, INT64_MAX - 1],  # deltas past int64
    "int64_span": [INT64_MIN, INT64_MAX, INT64_MIN],
    "raw_quotients": [INT64_MIN, INT64_MAX - 1, INT64_MIN + 2, 0, INT64_MAX - 3, -2],
    "big_multiples": [INT64_MAX // 10 ** 6 * 10 ** 6 - 10 ** 6 * i * i for i in range(40)],
}


@pytest.mark.parametrize("name", sorted(FACTOR_SHAPES))
def test_common_factors_round_trip_in_every_int_column(name: str) -> None:
    numbers = FACTOR_SHAPES[name]
    n = len(numbers)
    for points in (
        Points(list(numbers), list(numbers), [KIND_INTEGER] * n, list(numbers)),
        Points([None] * n, list(numbers), [KIND_NUMBER] * n, [float(i) for i in range(n)]),
        Points([i if i % 2 else None for i in numbers], list(numbers), [KIND_TEXT] * n,
               ["x" * (1000 * (i % 3)) for i in range(n)]),  # lengths with a factor too
    ):
        blob = _round_trip(points)
        columns = chunks.decode_columns(blob)
        if points.kinds[0] == KIND_NUMBER:
            assert columns is not None and columns.times.tolist() == numbers
            assert (chunks.decode_values(blob) or (0, b"", 0))[0] == n
        else:
            assert columns is None
    assert chunks.decode_ints(chunks.encode_ints(numbers)) == numbers


def _loss_curve(count: int, times: list[int]) -> Points:
    rng = random.Random(7)
    losses = array("f", (2.0 * math.exp(-i / 20_000) + rng.gauss(0, 0.02) for i in range(count)))
    return Points(list(range(count)), times, [KIND_NUMBER] * count, losses.tolist())


def test_times_on_a_microsecond_grid_take_under_a_byte_a_point() -> None:
    n = chunks.CHUNK_POINTS
    rng = random.Random(3)
    jitter_ns = [rng.randrange(50_000) for _ in range(n)]
    grid = [T0 + i * 1_000_000 for i in range(n)]
    ns = [t + j for t, j in zip(grid, jitter_ns, strict=True)]
    us = [t // 1000 * 1000 for t in ns]  # what the SDK stamps
    base = len(_round_trip(_loss_curve(n, grid)))  # a constant stride costs next to nothing
    us_cost = (len(_round_trip(_loss_curve(n, us))) - base) / n
    ns_cost = (len(_round_trip(_loss_curve(n, ns))) - base) / n
    # 50 values of jitter: log2(50) = 5.6 bits; to the ns: 15.6 bits
    assert 0.65 < us_cost < 0.8 and 1.85 < ns_cost < 2.1, (us_cost, ns_cost)


# ---- byte planes -------------------------------------------------------------------

def test_a_small_alphabet_costs_its_entropy_and_random_bytes_stay_raw() -> None:
    n = chunks.CHUNK_POINTS
    rng = random.Random(4)
    uniform = [rng.randrange(50) for _ in range(n)]
    blob = _round_trip(Points([None] * n, [T0] * n, [KIND_INTEGER] * n, list(uniform)))
    assert len(blob) / n < 0.74  # log2(50) / 8 = 0.705; zlib's default level: about 0.91
    noise = [rng.uniform(-1, 1) for _ in range(n)]  # XOR-ed doubles: mostly random planes
    blob = _round_trip(Points([None] * n, [T0] * n, [KIND_NUMBER] * n, noise))
    assert len(blob) < 8 * n  # nothing grows: random planes are stored as they are


def test_planes_of_every_kind_round_trip() -> None:
    rng = random.Random(5)
    planes = [b"", b"x", bytes(31), bytes(4096), rng.randbytes(4096),
              bytes(rng.randrange(50) for _ in range(4096)), b"ab" * 30_000,
              bytes(rng.choice(b"\x3f\x40") for _ in range(1000))]
    out = bytearray()
    chunk_planes.pack_planes(planes, out)
    assert chunk_planes.unpack_planes(memoryview(bytes(out))) == b"".join(planes)
    assert len(out) < sum(map(len, planes)) // 2


def test_a_plane_that_huffman_codes_best_is_deflated() -> None:
    # the top bytes (sign, exponent) of float32 noise about 0.037: a few values, no long
    # repeats; zstd's matches cost more here than zlib's Huffman-only coding
    rng = random.Random(6)
    noise = array("f", (0.037 + rng.gauss(0, 0.02) for _ in range(4096))).tobytes()
    top = noise[3::4]
    out = bytearray()
    chunk_planes.pack_planes([top], out)
    entry, pos = read_varint(out, 0)
    size, pos = read_varint(out, pos)
    assert (entry & 3, size) == (chunk_planes.DEFLATE, len(top))
    params = zstandard.ZstdCompressionParameters.from_level(
        1, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_checksum=0, write_content_size=0,
        write_dict_id=0)
    assert entry >> 2 < 0.9 * len(zstandard.ZstdCompressor(compression_params=params)
                                  .compress(top))
    assert chunk_planes.unpack_planes(memoryview(bytes(out))) == top


# ---- damage ---------------------------------------------------------------------------

def _reframed(blob: bytes, body: bytes) -> bytes:
    """``body`` (what follows the header) in place of ``blob``'s, with a valid CRC."""
    size, pos = read_varint(blob, 1)
    out = blob[:pos + size] + body
    return out + zlib.crc32(out).to_bytes(4, "little")


def test_damaged_version_3_chunks_raise_chunk_error() -> None:
    points = _loss_curve(300, [T0 + i * 1_000_000 + i % 7 * 1000 for i in range(300)])
    blob = _round_trip(points)
    for at in range(len(blob)):
        bad = bytearray(blob)
        bad[at] ^= 1 << (at % 8)
        with pytest.raises(ChunkError):
            chunks.decode(bytes(bad))
        assert chunks.decode_columns(bytes(bad)) is None
        assert chunks.decode_values(bytes(bad)) is None
    for cut in range(len(blob)):
        with pytest.raises(ChunkError):
            chunks.decode(blob[:cut])
    unknown, short = bytearray(), bytearray()
    varint(unknown, 4 << 2 | 3)  # a plane of an unknown method
    unknown += b"abcd"
    varint(short, 4 << 2 | chunk_planes.ZSTD)  # says 4 bytes of zstd, holds 2
    short += b"ab"
    for body in (bytes(unknown), bytes(short), b"\x80"):
        with pytest.raises(ChunkError):
            chunks.decode(_reframed(blob, body))
    zero_factor = Points([None] * 3, [10, 20, 30], [KIND_NUMBER] * 3, [1.0, 2.0, 3.0])
    good = chunks.encode(zero_factor)
    size, pos = read_varint(good, 1)
    header = bytearray(good[pos:pos + size])
    # count, step mode, no steps, the first time (zigzag), then the times' factor
    assert bytes(header[:5]) == bytes([3, 0, 0, 20, 10])
    header[4] = 0
    out = good[:1] + bytes([size]) + bytes(header) + good[pos + size:-4]
    with pytest.raises(ChunkError, match="common factor"):
        chunks.decode(out + zlib.crc32(out).to_bytes(4, "little"))
