"""A series' open chunk (series_tail.py) on both stores, and the raw form it grows in.

The last chunk of a series is extended in place by each batch, raw while it grows
(plain numbers), and compressed once full, when a record of another kind follows, or
when the run ends; rows keep their keys, so a reader paging by key while the series
grows sees every point once, in order.
"""

from __future__ import annotations

import math
import sqlite3
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import Store, open_store
from mltrail.collector.store.chunk_raw import RAW
from mltrail.collector.store.chunks import (
    CHUNK_POINTS,
    KIND_NUMBER,
    ChunkError,
    Points,
    decode,
    decode_columns,
    decode_values,
    encode_open,
)
from mltrail.collector.store.series import SeriesColumns, SeriesPoints, SeriesQuery, SeriesValues
from mltrail.collector.store.series_reads import PAGE_CHUNKS
from mltrail.collector.store.series_tail import FLAG_RAW
from mltrail.collector.validate import validate_batch
from mltrail.proto import records_pb2
from tests import builders as b


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_url, ArtifactStore(tmp_path / "art"))
    yield s
    s.close()


def rows(store_url: str) -> list[tuple[int, int, bool]]:
    """(key, count, whether raw) of every metric row of the store, in logged order."""
    sql = "SELECT {0}, count, flags FROM metric_chunks ORDER BY {0}"
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            got = conn.execute(sql.format("rowid")).fetchall()
    else:
        with psycopg.connect(store_url) as conn:
            got = conn.execute(sql.format("id")).fetchall()
    return [(key, count, bool(flags & FLAG_RAW)) for key, count, flags in got]


def write(store: Store, *batches: records_pb2.Batch) -> Any:
    return store.write_batch([validate_batch(batch) for batch in batches])


def numbers(store: Store, name: str = "loss") -> list[tuple[int | None, float]]:
    return [(r.metric.scalar.step if r.metric.scalar.HasField("step") else None,
             r.metric.scalar.value.number) for r in store.get_metrics("r", name)]


@pytest.mark.parametrize("per_batch", [1, 100, CHUNK_POINTS - 1, CHUNK_POINTS + 1])
def test_batches_of_any_size_extend_the_open_chunk_in_place(
        store: Store, store_url: str, per_batch: int) -> None:
    total = 2 * CHUNK_POINTS + 333 if per_batch > 1 else 600
    batches = list(b.scalar_batches("r", "s", total, per_batch))
    write(store, batches[0])
    first_key = rows(store_url)[0][0]
    for batch in batches[1:]:
        write(store, batch)
    assert [o.stored for o in write(store, *batches[-2:]).outcomes] == [0] * min(
        2, len(batches))  # a replay adds nothing
    got = rows(store_url)
    assert got[0][0] == first_key  # extended in place, never rewritten elsewhere
    assert [(count, raw) for _, count, raw in got] == [(CHUNK_POINTS, False)] * (
        total // CHUNK_POINTS) + [(total % CHUNK_POINTS, True)]
    assert numbers(store) == [(s, s * 0.5) for s in range(1, total + 1)]


def test_a_reader_paging_while_the_series_grows_sees_each_point_once(store: Store) -> None:
    """Rows keep their keys: a read that pauses between pages while batches extend the
    open chunk and add chunks gets every point once, in order, up to where it ended."""
    total = (PAGE_CHUNKS + 2) * CHUNK_POINTS + 100
    batches = list(b.scalar_batches("r", "s", total + 9000, 1000, first_seq=1))
    cut = total // 1000
    for batch in batches[:cut + 1]:
        write(store, batch)
    parts = store.read_series(SeriesQuery("r", "loss"))
    steps: list[int] = []

    def take(part: Any) -> None:
        if isinstance(part, SeriesColumns):
            steps.extend(part.columns.steps or [])
        elif isinstance(part, SeriesPoints):
            steps.extend(s for s in part.points.steps if s is not None)
        else:
            assert not isinstance(part, SeriesValues)

    for part in parts:
        take(part)
        if len(steps) >= CHUNK_POINTS:  # in the first page: the series grows meanwhile
            break
    for batch in batches[cut + 1:]:
        write(store, batch)
    for part in parts:
        take(part)
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= (cut + 1) * 1000


def test_the_runs_end_compresses_its_open_chunks_and_a_late_point_reopens_one(
        store: Store, store_url: str) -> None:
    write(store, b.batch("s", [b.scalar(seq, "r", "loss", float(seq), step=seq)
                               for seq in range(1, 31)]))
    write(store, b.batch("s", [*(b.scalar(seq, "r", "acc", float(seq), step=seq)
                                 for seq in range(31, 36)), b.ended(36, "r")]))
    ended = rows(store_url)
    assert [(count, raw) for _, count, raw in ended] == [(30, False), (5, False)]
    write(store, b.batch("s", [b.scalar(37, "r", "loss", 37.0, step=37)]))
    late = rows(store_url)
    assert [(key, count, raw) for key, count, raw in late] == [
        (ended[0][0], 31, True), (ended[1][0], 5, False)]
    assert [v for _, v in numbers(store)] == [*map(float, range(1, 31)), 37.0]
    assert [v for _, v in numbers(store, "acc")] == [float(s) for s in range(31, 36)]


def test_a_record_of_another_kind_closes_the_open_chunk_before_it(
        store: Store, store_url: str) -> None:
    listed = records_pb2.Metric(name="loss", list=records_pb2.ValueList(
        values=[b.value(1), b.value(2)]))
    write(store, b.batch("s", [b.scalar(1, "r", "loss", 1.0), b.scalar(2, "r", "loss", 2.0)]))
    write(store, b.batch("s", [b.scalar(3, "r", "loss", 3.0), b.record(4, "r", metric=listed),
                               b.scalar(5, "r", "loss", 5.0)]))
    assert [(count, raw) for _, count, raw in rows(store_url)] == [
        (3, False), (1, False), (1, True)]
    kinds = [r.metric.WhichOneof("data") for r in store.get_metrics("r", "loss")]
    assert kinds == ["scalar"] * 3 + ["list", "scalar"]


# ---- the raw form of an open chunk of numbers -------------------------------------


def numbers_points(steps: list[int | None], values: list[float]) -> Points:
    count = len(values)
    return Points(steps, [10 ** 18 + 7 * i for i in range(count)], [KIND_NUMBER] * count,
                  values)


EDGE_VALUES = [0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1.7976931348623157e308,
               5e-324, -2.5e-310]


@pytest.mark.parametrize("steps", ["all", "none"])
def test_raw_chunks_round_trip_every_double_bit_for_bit(steps: str) -> None:
    values = EDGE_VALUES * 3
    step_list: list[int | None] = ([-(2 ** 63), 2 ** 63 - 1, *range(len(values) - 2)]
                                   if steps == "all" else [None] * len(values))
    points = numbers_points(step_list, values)
    data = encode_open(points)
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


def test_other_shapes_use_the_compressed_encoding() -> None:
    some_steps = numbers_points([1, None, 3], [1.0, 2.0, 3.0])
    texts = Points([1, 2], [5, 6], [3, 3], ["a", "b"])
    huge_step = numbers_points([2 ** 63, 1], [1.0, 2.0])
    for points in (some_steps, texts, huge_step):
        data = encode_open(points)
        assert data[0] != RAW and decode(data) == points


@pytest.mark.parametrize("damage", ["cut 1", "cut 5", "cut 20", "flip 3", "flip 30",
                                    "flip -1"])
def test_damaged_raw_chunks_are_refused_with_a_clear_error(damage: str) -> None:
    data = bytearray(encode_open(numbers_points([1, 2, 3], [1.0, 2.0, 3.0])))
    how, where = damage.split()
    if how == "cut":
        del data[-int(where):]
    else:
        data[int(where)] ^= 0x10  # one bit: the CRC32 catches it
    with pytest.raises(ChunkError, match="damaged"):
        decode(bytes(data))
    assert decode_columns(bytes(data)) is None and decode_values(bytes(data)) is None
