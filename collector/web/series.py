"""A scalar series for a chart: the points in a step or time range, or a downsample.

``x=step|time`` picks the axis (a point logged without a step is placed at
its index when x is step), ``from``/``to`` bound it (inclusive), and
``buckets=N`` (default 1000) caps what is sent: a series with more than
2N points in range is cut into N buckets of consecutive points, each sent
as its first and last point (so the line's ends are the stored values) with
the bucket's min and max (the band that keeps every extreme visible).

Answer: ``{"name", "x", "count", "downsampled", "xs", "ys", "mins", "maxs"}``
with NaN as null; ``mins``/``maxs`` equal ``ys`` when not downsampled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mltrail.proto import collector_pb2

DEFAULT_BUCKETS = 1000
MAX_BUCKETS = 20_000


@dataclass(frozen=True)
class Wanted:
    x: str = "step"
    low: float | None = None
    high: float | None = None
    buckets: int = DEFAULT_BUCKETS


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


def answer(name: str, records: Sequence[collector_pb2.MetricRecord], wanted: Wanted
           ) -> dict[str, Any]:
    xs: list[float] = []
    ys: list[float | None] = []
    for index, record in enumerate(records):
        metric = record.metric
        if metric.WhichOneof("data") != "scalar":
            continue
        value = metric.scalar.value
        kind = value.WhichOneof("kind")
        if kind not in ("number", "integer", "flag"):
            continue
        if wanted.x == "time":
            x = record.time_unix_nano / 1e9
        else:
            x = metric.scalar.step if metric.scalar.HasField("step") else index
        if (wanted.low is not None and x < wanted.low) or (
                wanted.high is not None and x > wanted.high):
            continue
        number = float(getattr(value, kind))
        xs.append(x)
        ys.append(None if math.isnan(number) else number)
    out: dict[str, Any] = {"name": name, "x": wanted.x, "count": len(xs)}
    if len(xs) <= 2 * wanted.buckets:
        return {**out, "downsampled": False, "xs": xs, "ys": ys, "mins": ys, "maxs": ys}
    return {**out, "downsampled": True, **downsample(xs, ys, wanted.buckets)}


def downsample(xs: Sequence[float], ys: Sequence[float | None], buckets: int
               ) -> dict[str, list[Any]]:
    """Each bucket as two points (its first and last) with its min and max."""
    out: dict[str, list[Any]] = {"xs": [], "ys": [], "mins": [], "maxs": []}
    total = len(xs)
    for b in range(buckets):
        start, end = b * total // buckets, (b + 1) * total // buckets
        if end <= start:
            continue
        values = [v for v in ys[start:end] if v is not None]
        low = min(values) if values else None
        high = max(values) if values else None
        for i in (start, end - 1) if end - start > 1 else (start,):
            out["xs"].append(xs[i])
            out["ys"].append(ys[i])
            out["mins"].append(low)
            out["maxs"].append(high)
    return out
