"""Series reads over stored chunks, shared by every store: ranges and downsampling.

A store keeps a (run, metric) series as a sequence of pieces in logged order:
scalar chunks (``chunks.encode`` bytes with a ``ChunkSummary`` beside them)
and, for the other metric kinds, single encoded ``Metric`` records. A store
lists a series' pieces (``StoredChunk``, without the bytes where it can) and
hands them here with a function that decodes one; this module decides which
chunks a query needs at all and answers from the summaries where it can.

Range: ``step_min..step_max`` and ``time_min..time_max``, both ends inclusive,
any of them open (None). A point without a step is outside every step range.

Downsample to at most N buckets: the selected scalar points, in logged order,
cut into at most N runs of consecutive points. When more than N chunks are
selected a bucket is a run of whole chunks (answered from their summaries,
no decoding: a 10-million-point series is about 2,400 summaries); otherwise
each chunk is decoded and cut into runs of nearly equal size, as many as its
share of the points (at least one). Each bucket
keeps its count, its first and last step and time, and over its numeric
values (numbers and integers) the first, last, min and max; min and max
leave NaN out unless every value is NaN. Non-scalar records are not in a
downsample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, cast

from mltrail.collector.store.chunks import (
    KIND_INTEGER,
    KIND_NUMBER,
    ChunkSummary,
    Columns,
    Points,
    decode_columns,
    decode_values,
)

SKIP, WHOLE, PARTIAL = 0, 1, 2


@dataclass(frozen=True)
class SeriesQuery:
    """What ``Store.read_series`` answers: one metric ("" every metric, by name)."""

    run_id: str
    name: str = ""
    step_min: int | None = None
    step_max: int | None = None
    time_min: int | None = None
    time_max: int | None = None
    buckets: int = 0  # > 0: a downsample of at most this many buckets per metric
    values_only: bool = False  # whole chunks of numbers may come as SeriesValues

    @property
    def ranged(self) -> bool:
        return any(v is not None for v in (self.step_min, self.step_max, self.time_min,
                                           self.time_max))


@dataclass
class StoredChunk:
    """One stored piece of a series: a scalar chunk (``summary`` set) or one encoded
    Metric (``summary`` None, ``time`` its record time). ``key`` is the store's own
    handle; ``data`` the bytes when the store fetched them with the listing."""

    key: Any
    summary: ChunkSummary | None
    time: int = 0
    data: bytes | None = None


@dataclass(slots=True)
class Bucket:
    count: int
    first_step: int | None
    last_step: int | None
    first_time: int
    last_time: int
    first: float | None  # None: no numeric value in the bucket
    last: float | None
    min: float | None
    max: float | None


def select(summary: ChunkSummary, query: SeriesQuery) -> int:
    """SKIP (no point in range), WHOLE (every point in range) or PARTIAL."""
    whole = True
    if query.step_min is not None or query.step_max is not None:
        lo = query.step_min if query.step_min is not None else -(2 ** 63)
        hi = query.step_max if query.step_max is not None else 2 ** 63
        if summary.min_step is None or summary.max_step is None:
            return SKIP
        if summary.max_step < lo or summary.min_step > hi:
            return SKIP
        whole = summary.all_steps and lo <= summary.min_step and summary.max_step <= hi
    if query.time_min is not None or query.time_max is not None:
        lo = query.time_min if query.time_min is not None else -(2 ** 63)
        hi = query.time_max if query.time_max is not None else 2 ** 63
        if summary.max_time < lo or summary.min_time > hi:
            return SKIP
        whole = whole and lo <= summary.min_time and summary.max_time <= hi
    return WHOLE if whole else PARTIAL


def in_range(points: Points, query: SeriesQuery) -> Points:
    """The points of ``points`` inside the query's ranges, in logged order."""
    keep = list(range(len(points)))
    if query.step_min is not None or query.step_max is not None:
        lo = query.step_min if query.step_min is not None else -(2 ** 63)
        hi = query.step_max if query.step_max is not None else 2 ** 63
        steps = points.steps
        keep = [i for i in keep if (s := steps[i]) is not None and lo <= s <= hi]
    if query.time_min is not None or query.time_max is not None:
        lo = query.time_min if query.time_min is not None else -(2 ** 63)
        hi = query.time_max if query.time_max is not None else 2 ** 63
        times = points.times
        keep = [i for i in keep if lo <= times[i] <= hi]
    if len(keep) == len(points):
        return points
    return Points([points.steps[i] for i in keep], [points.times[i] for i in keep],
                  [points.kinds[i] for i in keep], [points.values[i] for i in keep])


def chunk_points(chunk: StoredChunk, load: Callable[[StoredChunk], Points],
                 query: SeriesQuery) -> Points | None:
    """The chunk's points in range (None: none), decoding only a chunk that has some."""
    assert chunk.summary is not None
    chosen = select(chunk.summary, query)
    if chosen == SKIP:
        return None
    points = load(chunk)
    if chosen == PARTIAL:
        points = in_range(points, query)
    return points if len(points) else None


def chunk_part(name: str, chunk: StoredChunk, load: Callable[[StoredChunk], Points],
               query: SeriesQuery) -> SeriesPoints | SeriesColumns | SeriesValues | None:
    """The chunk's points in range as a part: arrays for a whole chunk of numbers (its
    bytes in ``chunk.data``; its values alone for a ``values_only`` query), lists
    otherwise; None when no point is in range."""
    summary = chunk.summary
    if summary is None:
        raise ValueError("chunk_part of a record of another kind")
    if (chunk.data is not None and summary.all_numeric
            and select(summary, query) == WHOLE):
        if query.values_only and (values := decode_values(chunk.data)) is not None:
            return SeriesValues(name, *values)
        columns = decode_columns(chunk.data)
        if columns is not None:
            return SeriesColumns(name, columns)
    points = chunk_points(chunk, load, query)
    return None if points is None else SeriesPoints(name, points)


def downsample(pieces: Sequence[StoredChunk], load: Callable[[StoredChunk], Points],
               query: SeriesQuery, load_bytes: Callable[[StoredChunk], bytes] | None = None
               ) -> list[Bucket]:
    """At most ``query.buckets`` buckets over the scalar chunks of one series. With
    ``load_bytes`` (a chunk's stored bytes), whole chunks of numbers are cut as arrays,
    with no Python object per point."""
    wanted = max(query.buckets, 1)
    chosen = [(c, select(c.summary, query)) for c in pieces if c.summary is not None]
    chosen = [(c, how) for c, how in chosen if how != SKIP]
    if len(chosen) > wanted:
        parts = [_chunk_bucket(c, how, load, query) for c, how in chosen]
        present = [p for p in parts if p is not None]
        groups = [present[i * len(present) // wanted:(i + 1) * len(present) // wanted]
                  for i in range(wanted)]
        return [_merge(group) for group in groups if group]
    total = sum(c.summary.count for c, _ in chosen if c.summary is not None) or 1
    spare = wanted - len(chosen)
    out: list[Bucket] = []
    for chunk, how in chosen:
        summary = chunk.summary
        assert summary is not None  # chosen holds scalar chunks only
        share = spare * summary.count // total + 1  # at most `wanted` in all
        if share == 1 and how == WHOLE and summary.all_numeric:  # the summary is the bucket
            out.append(_summary_bucket(summary))
            continue
        columns = (decode_columns(load_bytes(chunk)) if load_bytes is not None
                   and how == WHOLE and summary.all_numeric else None)
        if columns is not None:
            out.extend(_column_buckets(columns, share, summary.has_nan))
            continue
        points = load(chunk)
        if how == PARTIAL:
            points = in_range(points, query)
        cuts = [i * len(points) // share for i in range(share + 1)]
        out.extend(points_bucket(points.slice(a, b)) for a, b in pairwise(cuts) if b > a)
    return out


def _column_buckets(columns: Columns, share: int, has_nan: bool) -> list[Bucket]:
    """A whole chunk of numbers cut into ``share`` runs, min and max by C loops."""
    count, steps, times, numbers = (columns.count, columns.steps, columns.times,
                                    columns.numbers)
    cuts = [i * count // share for i in range(share + 1)]
    out = []
    for a, b in pairwise(cuts):
        if b <= a:
            continue
        part = numbers[a:b]
        low, high = _extremes(part) if has_nan else (min(part), max(part))
        out.append(Bucket(b - a, steps[a] if steps is not None else None,
                          steps[b - 1] if steps is not None else None, times[a],
                          times[b - 1], part[0], part[-1], low, high))
    return out


def _chunk_bucket(chunk: StoredChunk, how: int, load: Callable[[StoredChunk], Points],
                  query: SeriesQuery) -> Bucket | None:
    summary = chunk.summary
    assert summary is not None
    if how == WHOLE and summary.all_numeric:
        return _summary_bucket(summary)
    points = load(chunk)
    if how == PARTIAL:
        points = in_range(points, query)
    return points_bucket(points) if len(points) else None


def _summary_bucket(summary: ChunkSummary) -> Bucket:
    return Bucket(summary.count, summary.first_step, summary.last_step, summary.first_time,
                  summary.last_time, summary.first_value, summary.last_value,
                  summary.min_value, summary.max_value)


def points_bucket(points: Points) -> Bucket:
    """The bucket of some points (at least one), by the module docstring's rules."""
    kinds = points.kinds
    if kinds.count(KIND_NUMBER) == len(kinds):
        numbers: Sequence[float] = cast(list[float], points.values)
    else:
        numbers = [float(v) for k, v in zip(kinds, points.values, strict=True)
                   if k in (KIND_NUMBER, KIND_INTEGER)]
    low, high = _extremes(numbers)
    return Bucket(len(points), points.steps[0], points.steps[-1], points.times[0],
                  points.times[-1], float(numbers[0]) if numbers else None,
                  float(numbers[-1]) if numbers else None, low, high)


def _extremes(numbers: Sequence[float]) -> tuple[float | None, float | None]:
    if not numbers:
        return None, None
    if any(map(math.isnan, numbers)):
        numbers = [v for v in numbers if not math.isnan(v)]
        if not numbers:
            return math.nan, math.nan
    return float(min(numbers)), float(max(numbers))


def _merge(group: Sequence[Bucket]) -> Bucket:
    if len(group) == 1:
        return group[0]
    valued = [b for b in group if b.first is not None]
    lows = [b.min for b in valued if b.min is not None and not math.isnan(b.min)]
    highs = [b.max for b in valued if b.max is not None and not math.isnan(b.max)]
    nan_only = math.nan if valued else None
    return Bucket(
        sum(b.count for b in group), group[0].first_step, group[-1].last_step,
        group[0].first_time, group[-1].last_time,
        valued[0].first if valued else None, valued[-1].last if valued else None,
        min(lows) if lows else nan_only, max(highs) if highs else nan_only)


@dataclass(frozen=True)
class SeriesStart:
    """First part of each metric of a plain read: whether records of other kinds are
    among its parts (a reader that streams plain scalars needs to know up front)."""

    name: str
    has_records: bool


@dataclass(frozen=True)
class SeriesPoints:
    """Scalar points of metric ``name``, in logged order (a chunk's worth or less)."""

    name: str
    points: Points


@dataclass(frozen=True)
class SeriesColumns:
    """A whole chunk of numbers as arrays (the read fast path), in logged order."""

    name: str
    columns: Columns

    @property
    def points(self) -> Points:
        c = self.columns
        steps: list[int | None] = (list(c.steps) if c.steps is not None
                                   else [None] * c.count)
        return Points(steps, c.times.tolist(), [KIND_NUMBER] * c.count, c.numbers.tolist())


@dataclass(frozen=True)
class SeriesValues:
    """The values alone of a whole chunk of numbers: ``count`` little-endian floats of
    ``width`` bytes (4: float32, 8: doubles) in ``data``, in logged order."""

    name: str
    count: int
    data: bytes
    width: int


@dataclass(frozen=True)
class SeriesRecord:
    """One record of another kind (list, row, table, image, JSON, described scalar)."""

    name: str
    time: int
    metric: bytes  # the encoded mltrail.v1.Metric


@dataclass(frozen=True)
class SeriesBuckets:
    name: str
    buckets: list[Bucket]


SeriesPart = (SeriesStart | SeriesPoints | SeriesColumns | SeriesValues | SeriesRecord
              | SeriesBuckets)
