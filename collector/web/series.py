"""A scalar series for a chart: the points in a step or time range, or a downsample.

``x=step|time`` picks the axis (a point logged without a step is placed at
its index when x is step; time is in seconds), ``from``/``to`` bound it
(inclusive), and ``buckets=N`` (default 1000) caps what is sent: a series
with more than 2N points in range comes as the store's downsample
(``Store.read_series`` with buckets, answered from chunk summaries where it
can: past ``DECODE_AT_MOST`` points, in buckets of whole chunks even if that
makes fewer than N), each bucket sent as its first and last point (so the line's ends are
the stored values) with the bucket's min and max (the band that keeps every
extreme visible).

Answer: ``{"name", "x", "count", "downsampled", "xs", "ys", "mins", "maxs"}``
with NaN as null; ``mins``/``maxs`` equal ``ys`` when not downsampled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mltrail.collector.store.chunks import CHUNK_POINTS, KIND_FLAG, KIND_INTEGER, KIND_NUMBER
from mltrail.collector.store.series import (
    Bucket,
    SeriesBuckets,
    SeriesColumns,
    SeriesPart,
    SeriesPoints,
    SeriesQuery,
)

DEFAULT_BUCKETS = 1000
MAX_BUCKETS = 20_000
# Past this many points in range a downsample is cut at chunk boundaries, from the
# chunks' summaries alone: decoding chunks costs about a second per million points.
DECODE_AT_MOST = 250_000
_NUMERIC = (KIND_NUMBER, KIND_INTEGER, KIND_FLAG)


@dataclass(frozen=True)
class Wanted:
    x: str = "step"
    low: float | None = None
    high: float | None = None
    buckets: int = DEFAULT_BUCKETS

    def query(self, run_id: str, name: str, buckets: int = 0) -> SeriesQuery:
        """The store query for this range (time bounds from seconds to nanoseconds)."""
        if self.x == "time":
            low = None if self.low is None else math.floor(self.low * 1e9)
            high = None if self.high is None else math.ceil(self.high * 1e9)
            return SeriesQuery(run_id, name, time_min=low, time_max=high, buckets=buckets)
        low = None if self.low is None else math.ceil(self.low)
        high = None if self.high is None else math.floor(self.high)
        return SeriesQuery(run_id, name, step_min=low, step_max=high, buckets=buckets)


def parse(query: Mapping[str, Sequence[str]]) -> Wanted:
    def one(key: str) -> str:
        values = query.get(key)
        return values[-1].strip() if values else ""

    x = one("x") or "step"
    if x not in ("step", "time"):
        raise ValueError(f"x={x!r}: use step or time")
    bounds = []
    for key in ("from", "to"):
        text = one(key)
        try:
            bounds.append(float(text) if text else None)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not a number") from None
    text = one("buckets")
    try:
        buckets = int(text) if text else DEFAULT_BUCKETS
    except ValueError:
        raise ValueError(f"buckets={text!r}: expected a whole number") from None
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ValueError(f"buckets={text!r}: must be 1 to {MAX_BUCKETS}")
    return Wanted(x, bounds[0], bounds[1], buckets)


def buckets_to_ask(count: int, wanted: int) -> int:
    """How many buckets to ask the store for, for ``count`` points in range: ``wanted``,
    or fewer (but never fewer than one per chunk) where the store would otherwise decode
    every chunk to cut exactly ``wanted`` (series.downsample decodes when the range has
    no more chunks than buckets)."""
    chunks = count // CHUNK_POINTS
    if count <= DECODE_AT_MOST or chunks > wanted:
        return wanted
    return max(1, chunks - 1)


def in_range_count(parts: Sequence[SeriesPart]) -> int | None:
    """Points in range from a downsample's parts (None: no scalar series of that name)."""
    found = [p for p in parts if isinstance(p, SeriesBuckets)]
    return sum(b.count for b in found[0].buckets) if found else None


def points_answer(name: str, parts: Sequence[SeriesPart], wanted: Wanted) -> dict[str, Any]:
    """Every numeric point of the parts of a plain read, in logged order."""
    xs: list[float] = []
    ys: list[float | None] = []
    index = 0
    for part in parts:
        if not isinstance(part, SeriesPoints | SeriesColumns):
            continue
        points = part.points
        for step, time_ns, kind, value in zip(points.steps, points.times, points.kinds,
                                              points.values, strict=True):
            index += 1
            if kind not in _NUMERIC:
                continue
            xs.append(time_ns / 1e9 if wanted.x == "time" else
                      (index - 1 if step is None else step))
            ys.append(_number(float(value)))
    return {"name": name, "x": wanted.x, "count": len(xs), "downsampled": False,
            "xs": xs, "ys": ys, "mins": ys, "maxs": ys}


def buckets_answer(name: str, buckets: Sequence[Bucket], wanted: Wanted) -> dict[str, Any]:
    """Each bucket as two points (its first and last) with its min and max."""
    out: dict[str, list[Any]] = {"xs": [], "ys": [], "mins": [], "maxs": []}
    seen = 0
    for bucket in buckets:
        if bucket.first is None:  # no numeric value in it (text, flags only)
            seen += bucket.count
            continue
        ends = [(bucket.first_step, bucket.first_time, bucket.first, seen)]
        if bucket.count > 1:
            ends.append((bucket.last_step, bucket.last_time, bucket.last,
                         seen + bucket.count - 1))
        for step, time_ns, value, index in ends:
            out["xs"].append(time_ns / 1e9 if wanted.x == "time" else
                             (index if step is None else step))
            out["ys"].append(_number(value))
            out["mins"].append(_number(bucket.min))
            out["maxs"].append(_number(bucket.max))
        seen += bucket.count
    return {"name": name, "x": wanted.x, "count": seen, "downsampled": True, **out}


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value
