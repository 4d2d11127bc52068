"""Store.read_series: ranges and downsamples checked against brute force over every point."""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.series_pages import pages
from mltrail.collector.store import Store, open_store
from mltrail.collector.store.chunks import CHUNK_POINTS, KIND_INTEGER, KIND_NUMBER
from mltrail.collector.store.series import (
    SeriesBuckets,
    SeriesColumns,
    SeriesPoints,
    SeriesQuery,
    SeriesRecord,
    SeriesValues,
)
from mltrail.collector.validate import validate_batch
from mltrail.proto import records_pb2
from mltrail.query.metrics_view import fold_series
from tests import builders as b

Point = tuple[int | None, int, Any]  # step, time, value


def _value(rng: random.Random, i: int) -> Any:
    pick = rng.random()
    if pick < 0.02:
        return math.nan
    if pick < 0.03:
        return rng.choice([math.inf, -math.inf])
    if pick < 0.05:
        return rng.randint(-1000, 1000)
    if pick < 0.06:
        return f"note {i}"
    if pick < 0.07:
        return i % 3 == 0
    return rng.gauss(0, 1) + i * 1e-4


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def series(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Store, list[Point]]]:
    """One metric of 30,000 points in uneven batches: steps mostly rising, some
    repeated, out of order or absent; times rising with jitter and a few going back.
    On SQLite and on PostgreSQL (one database for the module)."""
    path: Path = tmp_path_factory.mktemp("series")
    url = (f"sqlite:///{path / 'store.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_server").new_database())
    store = open_store(url, ArtifactStore(path / "art"))
    rng = random.Random(15)
    points: list[Point] = []
    seq, step, time_ns = 1, 0, 1_000_000
    while len(points) < 30_000:
        records = []
        for _ in range(rng.randint(1, 3000)):
            step += rng.choice([1, 1, 1, 0, 2, -7])
            time_ns += rng.randint(-50, 1000)
            value = _value(rng, len(points))
            has_step = rng.random() > 0.01
            records.append(b.scalar(seq, "r", "m", value, step=step if has_step else None,
                                    t=time_ns))
            points.append((step if has_step else None, time_ns, value))
            seq += 1
        store.write_batch([validate_batch(b.batch("s", records))])
    yield store, points
    store.close()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _selected(points: list[Point], query: SeriesQuery) -> list[Point]:
    out = []
    for step, time_ns, value in points:
        if query.step_min is not None and (step is None or step < query.step_min):
            continue
        if query.step_max is not None and (step is None or step > query.step_max):
            continue
        if query.time_min is not None and time_ns < query.time_min:
            continue
        if query.time_max is not None and time_ns > query.time_max:
            continue
        out.append((step, time_ns, value))
    return out


def _read(store: Store, query: SeriesQuery) -> list[Point]:
    out: list[Point] = []
    for part in store.read_series(query):
        if isinstance(part, SeriesPoints | SeriesColumns):
            p = part.points
            out.extend(zip(p.steps, p.times, p.values, strict=True))
    return out


def _queries(points: list[Point]) -> list[SeriesQuery]:
    rng = random.Random(7)
    steps = [s for s, _, _ in points if s is not None]
    times = [t for _, t, _ in points]
    out = [SeriesQuery("r", "m")]
    for _ in range(12):
        lo, hi = sorted(rng.sample(steps, 2))
        tlo, thi = sorted(rng.sample(times, 2))
        out += [SeriesQuery("r", "m", step_min=lo, step_max=hi),
                SeriesQuery("r", "m", time_min=tlo, time_max=thi),
                SeriesQuery("r", "m", step_min=lo, time_max=thi),
                SeriesQuery("r", "m", step_max=hi, time_min=tlo)]
    return out


def test_ranges_match_brute_force(series: tuple[Store, list[Point]]) -> None:
    store, points = series
    for query in _queries(points):
        got, want = _read(store, query), _selected(points, query)
        assert len(got) == len(want), query
        assert all(g[:2] == w[:2] and _same(g[2], w[2]) for g, w in zip(got, want,
                                                                         strict=True)), query


def _expected_bucket(run: list[Point]) -> tuple[Any, ...]:
    numbers = [float(v) for _, _, v in run
               if isinstance(v, float | int) and not isinstance(v, bool)]
    ordered = [v for v in numbers if not math.isnan(v)]
    nan = math.nan if numbers else None
    return (len(run), run[0][0], run[-1][0], run[0][1], run[-1][1],
            numbers[0] if numbers else None, numbers[-1] if numbers else None,
            min(ordered) if ordered else nan, max(ordered) if ordered else nan)


@pytest.mark.parametrize("buckets", [1, 3, 5, 8, 50, 1000])
def test_downsample_matches_brute_force(series: tuple[Store, list[Point]],
                                        buckets: int) -> None:
    """Buckets are consecutive runs of the selected points: their counts cover every
    point once, and each one's first, last, min and max are the run's."""
    store, points = series
    for query in _queries(points)[:9]:
        asked = SeriesQuery(query.run_id, query.name, query.step_min, query.step_max,
                            query.time_min, query.time_max, buckets)
        parts = list(store.read_series(asked))
        want = _selected(points, query)
        if not want:
            assert parts in ([], [SeriesBuckets("m", [])])
            continue
        assert len(parts) == 1 and isinstance(parts[0], SeriesBuckets)
        got = parts[0].buckets
        assert 0 < len(got) <= buckets
        assert sum(bucket.count for bucket in got) == len(want)
        at = 0
        for bucket in got:
            expected = _expected_bucket(want[at:at + bucket.count])
            actual = (bucket.count, bucket.first_step, bucket.last_step, bucket.first_time,
                      bucket.last_time, bucket.first, bucket.last, bucket.min, bucket.max)
            assert all(_same(a, e) for a, e in zip(actual, expected, strict=True)), (
                asked, at, actual, expected)
            at += bucket.count


def test_many_chunks_are_bucketed_from_summaries_without_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With more chunks than buckets, an unranged downsample of numbers answers from the
    chunk summaries alone; the same answer as decoding every point."""
    from mltrail.collector.store import chunks

    store = open_store(f"sqlite:///{tmp_path / 's.db'}", ArtifactStore(tmp_path / "a"))
    try:
        count = 10 * CHUNK_POINTS + 5
        for batch in b.scalar_batches("r", "s", count, 7000):
            store.write_batch([validate_batch(batch)])
        decoded: list[int] = []
        real = chunks.decode
        monkeypatch.setattr(chunks, "decode",
                            lambda data: decoded.append(1) or real(data))
        parts = list(store.read_series(SeriesQuery("r", "loss", buckets=4)))
        assert decoded == []
        got = [(bk.count, bk.first_step, bk.last_step, bk.first, bk.last, bk.min, bk.max)
               for part in parts if isinstance(part, SeriesBuckets) for bk in part.buckets]
        edges = [1 + CHUNK_POINTS * n for n in (0, 2, 5, 8)] + [count + 1]  # 11 chunks
        assert got == [(hi - lo, lo, hi - 1, lo * 0.5, (hi - 1) * 0.5, lo * 0.5,
                        (hi - 1) * 0.5) for lo, hi in pairwise(edges)]
    finally:
        store.close()


def test_other_kinds_and_names(tmp_path: Path, store_url: str) -> None:
    store = open_store(store_url, ArtifactStore(tmp_path / "a"))
    try:
        listed = records_pb2.Metric(name="m", list=records_pb2.ValueList(values=[b.value(1)]))
        store.write_batch([validate_batch(b.batch("s", [
            b.scalar(1, "r", "m", 1.0, step=1, t=10), b.record(2, "r", t=20, metric=listed),
            b.scalar(3, "r", "m", 2, step=2, t=30), b.scalar(4, "r", "a", 5.0, t=40)]))])
        parts = list(store.read_series(SeriesQuery("r")))
        kinds = [(type(p).__name__, p.name) for p in parts]
        assert kinds == [("SeriesStart", "a"), ("SeriesColumns", "a"), ("SeriesStart", "m"),
                         ("SeriesColumns", "m"), ("SeriesRecord", "m"), ("SeriesPoints", "m")]
        assert parts[2].has_records and not parts[0].has_records  # type: ignore[union-attr]
        last = parts[-1]
        assert isinstance(last, SeriesPoints) and last.points.kinds == [KIND_INTEGER]
        stepped = list(store.read_series(SeriesQuery("r", "m", step_min=0)))
        assert not [p for p in stepped if isinstance(p, SeriesRecord)]
        timed = [p for p in store.read_series(SeriesQuery("r", "m", time_min=15, time_max=25))
                 if type(p).__name__ != "SeriesStart"]
        assert [type(p).__name__ for p in timed] == ["SeriesRecord"]
        assert list(store.read_series(SeriesQuery("nope"))) == []
        assert list(store.read_series(SeriesQuery("r", "nope"))) == []
        buckets = list(store.read_series(SeriesQuery("r", "m", buckets=10)))
        assert [bk.count for part in buckets for bk in part.buckets] == [1, 1]  # type: ignore[union-attr]
        assert KIND_NUMBER == 1
    finally:
        store.close()


@pytest.mark.parametrize("buckets", [3, 7, 50, 1000])
def test_downsample_of_few_number_chunks_cut_as_arrays_matches_brute_force(
        tmp_path: Path, buckets: int) -> None:
    """Fewer chunks than buckets: whole chunks of numbers (NaN and infinities among them)
    are cut as arrays; the answer still partitions the points in logged order."""
    rng = random.Random(buckets)
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", ArtifactStore(tmp_path / "a"))
    try:
        points: list[Point] = []
        records = []
        for i in range(3 * CHUNK_POINTS + 100):
            value = rng.choice([math.nan, math.inf, -math.inf]) if i % 97 == 0 else rng.random()
            records.append(b.scalar(i + 1, "r", "n", value, step=i, t=1000 + 3 * i))
            points.append((i, 1000 + 3 * i, value))
        store.write_batch([validate_batch(b.batch("s", records))])
        for query in (SeriesQuery("r", "n", buckets=buckets),
                      SeriesQuery("r", "n", step_min=1000, step_max=9000, buckets=buckets)):
            got = [bk for part in store.read_series(query) if isinstance(part, SeriesBuckets)
                   for bk in part.buckets]
            want = _selected(points, query)
            assert 0 < len(got) <= buckets
            assert sum(bk.count for bk in got) == len(want)
            at = 0
            for bk in got:
                expected = _expected_bucket(want[at:at + bk.count])
                actual = (bk.count, bk.first_step, bk.last_step, bk.first_time, bk.last_time,
                          bk.first, bk.last, bk.min, bk.max)
                assert all(_same(a, e) for a, e in zip(actual, expected, strict=True)), (
                    query, at, actual, expected)
                at += bk.count
    finally:
        store.close()


def test_values_only_reads_match_brute_force(tmp_path: Path, store_url: str) -> None:
    """get_metrics' read: whole chunks of numbers travel as their values alone (float32s
    as float32s), the rest as points; folded, every value in logged order, bit for bit."""
    rng = random.Random(3)
    store = open_store(store_url, ArtifactStore(tmp_path / "a"))
    try:
        want: dict[str, list[Any]] = {"f32": [], "f64": [], "mixed": []}
        records = []
        for i in range(2 * CHUNK_POINTS + 300):
            f32 = float(array("f", [rng.gauss(1, 0.5)])[0]) if i % 501 else math.nan
            for name, value in (("f32", f32), ("f64", rng.random() if i % 7 else -0.0),
                                ("mixed", i if i % 300 == 0 else rng.random())):
                records.append(b.scalar(len(records) + 1, "r", name, value, step=i % 4000,
                                        t=10 ** 18 + 1_000_000 * i + rng.randrange(50_000)))
                want[name].append(value)
        for first in range(0, len(records), 5000):  # batches end mid-chunk
            store.write_batch([validate_batch(b.batch("s", records[first:first + 5000]))])
        parts = list(store.read_series(SeriesQuery("r", values_only=True)))
        widths = {(p.name, p.width) for p in parts if isinstance(p, SeriesValues)}
        # full chunks of float32s come as 4 bytes a value; an open chunk in the raw form
        # (series_tail.py) holds doubles, of any series whose last chunk is all numbers
        assert {("f32", 4), ("f64", 8)} <= widths <= {("f32", 4), ("f32", 8), ("f64", 8),
                                                      ("mixed", 8)}
        assert any(isinstance(p, SeriesPoints | SeriesColumns) and p.name == "mixed"
                   for p in parts)
        got = fold_series(pages(iter(parts)))
        for name, values in want.items():
            assert len(got[name]) == len(values)
            assert all(_same(a, e) or (a == e and math.copysign(1, a) == math.copysign(1, e))
                       for a, e in zip(got[name], values, strict=True)), name
        ranged = SeriesQuery("r", "f32", step_min=10, step_max=3000, values_only=True)
        assert [v for _, _, v in _selected(list(zip(
            [i % 4000 for i in range(len(want["f32"]))], range(len(want["f32"])),
            want["f32"], strict=True)), ranged)] == pytest.approx(
            fold_series(pages(store.read_series(ranged)))["f32"], nan_ok=True)
    finally:
        store.close()
