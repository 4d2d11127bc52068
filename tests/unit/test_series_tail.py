"""A series' tail of pieces (series_tail.py) on both stores, and the raw piece form.

Every batch adds one piece at the cost of its own points; pieces merge into full
chunks, into one piece at MAX_PIECES, and into a chunk when the run ends or a record
of another kind follows. Whatever the batch sizes: every point once, in order.
"""

from __future__ import annotations

import math
import random
import sqlite3
import string
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import Store, open_store
from mltrail.collector.store import series_tail as tail_module
from mltrail.collector.store.chunk_raw import RAW
from mltrail.collector.store.chunks import (
    CHUNK_POINTS,
    KIND_NUMBER,
    ChunkError,
    Points,
    decode,
    decode_columns,
    decode_values,
    encode_piece,
)
from mltrail.collector.store.series_tail import FLAG_PIECE, MAX_PIECES
from mltrail.collector.validate import validate_batch
from mltrail.proto import records_pb2
from tests import builders as b


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url, ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def rows(store_url: str) -> list[tuple[int, bool]]:
    """(count, whether a piece) of every metric row of the store, in logged order."""
    sql = "SELECT count, flags FROM metric_chunks ORDER BY {}"
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            got = conn.execute(sql.format("rowid")).fetchall()
    else:
        with psycopg.connect(store_url) as conn:
            got = conn.execute(sql.format("id")).fetchall()
    return [(count, bool(flags & FLAG_PIECE)) for count, flags in got]


def write(store: Store, *batches: records_pb2.Batch) -> Any:
    return store.write_batch([validate_batch(batch) for batch in batches])


def numbers(store: Store, name: str = "loss") -> list[tuple[int | None, float]]:
    return [(r.metric.scalar.step if r.metric.scalar.HasField("step") else None,
             r.metric.scalar.value.number) for r in store.get_metrics("r", name)]


@pytest.mark.parametrize("per_batch", [1, 100, CHUNK_POINTS - 1, CHUNK_POINTS + 1])
def test_batches_of_any_size_fill_full_chunks_and_keep_a_short_tail(
        store: Store, store_url: str, per_batch: int) -> None:
    total = 2 * CHUNK_POINTS + 333 if per_batch > 1 else 600
    batches = list(b.scalar_batches("r", "s", total, per_batch))
    for batch in batches:
        write(store, batch)
    assert [o.stored for o in write(store, *batches[-2:]).outcomes] == [0] * min(
        2, len(batches))  # a replay adds nothing to the tail
    got = rows(store_url)
    closed = [count for count, piece in got if not piece]
    assert closed == [CHUNK_POINTS] * (total // CHUNK_POINTS)
    tail = got[len(closed):]
    assert all(piece for _, piece in tail) and len(tail) <= MAX_PIECES
    assert sum(count for count, _ in tail) == total % CHUNK_POINTS
    assert numbers(store) == [(s, s * 0.5) for s in range(1, total + 1)]


def test_the_runs_end_closes_its_tails_and_later_points_start_a_new_one(
        store: Store, store_url: str) -> None:
    seq = 0

    def batch(*records: records_pb2.Record) -> records_pb2.Batch:
        return b.batch("s", list(records))

    def scalars(name: str, count: int) -> list[records_pb2.Record]:
        nonlocal seq
        out = []
        for _ in range(count):
            seq += 1
            out.append(b.scalar(seq, "r", name, float(seq), step=seq))
        return out

    write(store, batch(*scalars("loss", 30)))
    write(store, batch(*scalars("loss", 20), *scalars("acc", 5)))
    assert {piece for _, piece in rows(store_url)} == {True}
    points = scalars("loss", 3)
    seq += 1
    write(store, batch(*points, b.ended(seq, "r")))  # points that come with the end
    assert rows(store_url) == [(53, False), (5, False)]
    write(store, batch(*scalars("loss", 2)))  # a late point after the end
    assert rows(store_url) == [(53, False), (5, False), (2, True)]
    loss = [v for _, v in numbers(store)]
    assert loss == [float(s) for s in [*range(1, 51), *range(56, 59), 60, 61]]
    assert [v for _, v in numbers(store, "acc")] == [float(s) for s in range(51, 56)]


def test_a_record_of_another_kind_closes_the_tail_before_it(
        store: Store, store_url: str) -> None:
    listed = records_pb2.Metric(name="loss", list=records_pb2.ValueList(
        values=[b.value(1), b.value(2)]))
    write(store, b.batch("s", [b.scalar(1, "r", "loss", 1.0), b.scalar(2, "r", "loss", 2.0)]))
    write(store, b.batch("s", [b.scalar(3, "r", "loss", 3.0), b.record(4, "r", metric=listed),
                               b.scalar(5, "r", "loss", 5.0)]))
    assert rows(store_url) == [(3, False), (1, False), (1, True)]
    kinds = [r.metric.WhichOneof("data") for r in store.get_metrics("r", "loss")]
    assert kinds == ["scalar"] * 3 + ["list", "scalar"]


def test_long_strings_close_the_tail_by_its_bytes() -> None:
    rng = random.Random(5)
    texts = ["".join(rng.choices(string.ascii_letters, k=tail_module.CHUNK_BYTES // 3))
             for _ in range(5)]
    points = Points([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], [3] * 5, texts)
    first = tail_module.piece(points)  # texts: the compressed encoding, still over the cap
    assert first.piece and len(first.data) >= tail_module.CHUNK_BYTES
    assert not tail_module.fits([tail_module.TailRow(1, 5, len(first.data))], 1)
    merged = tail_module.merged([first.data], points.slice(0, 1))
    assert [row.piece for row in merged] == [False]
    assert decode(merged[0].data).values == [*texts, texts[0]]


# ---- the raw form of a piece of numbers ------------------------------------------


def numbers_points(steps: list[int | None], values: list[float]) -> Points:
    count = len(values)
    return Points(steps, [10 ** 18 + 7 * i for i in range(count)], [KIND_NUMBER] * count,
                  values)


EDGE_VALUES = [0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1.7976931348623157e308,
               5e-324, -2.5e-310]


@pytest.mark.parametrize("steps", ["all", "none"])
def test_raw_pieces_round_trip_every_double_bit_for_bit(steps: str) -> None:
    values = EDGE_VALUES * 3
    step_list: list[int | None] = ([-(2 ** 63), 2 ** 63 - 1, *range(len(values) - 2)]
                                   if steps == "all" else [None] * len(values))
    points = numbers_points(step_list, values)
    data = encode_piece(points)
    assert data[0] == RAW
    back = decode(data)
    assert back.steps == step_list and back.times == points.times
    assert array("d", back.values).tobytes() == array("d", values).tobytes()  # NaN, -0.0
    columns = decode_columns(data)
    assert columns is not None and columns.times.tolist() == points.times
    assert (columns.steps.tolist() if columns.steps is not None else None) == (
        step_list if steps == "all" else None)
    count, raw, width = decode_values(data) or (0, b"", 0)
    assert (count, width) == (len(values), 8) and raw == columns.numbers.tobytes()


def test_pieces_of_other_shapes_use_the_compressed_encoding() -> None:
    some_steps = numbers_points([1, None, 3], [1.0, 2.0, 3.0])
    texts = Points([1, 2], [5, 6], [3, 3], ["a", "b"])
    huge_step = numbers_points([2 ** 63, 1], [1.0, 2.0])
    for points in (some_steps, texts, huge_step):
        data = encode_piece(points)
        assert data[0] != RAW and decode(data) == points


@pytest.mark.parametrize("damage", ["cut 1", "cut 5", "cut 20", "flip 3", "flip 30",
                                    "flip -1"])
def test_damaged_raw_pieces_are_refused_with_a_clear_error(damage: str) -> None:
    data = bytearray(encode_piece(numbers_points([1, 2, 3], [1.0, 2.0, 3.0])))
    how, where = damage.split()
    if how == "cut":
        del data[-int(where):]
    else:
        data[int(where)] ^= 0x10  # one bit: the CRC32 catches it
    with pytest.raises(ChunkError, match="damaged"):
        decode(bytes(data))
    assert decode_columns(bytes(data)) is None and decode_values(bytes(data)) is None
