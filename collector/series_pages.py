"""Store series parts as ReadSeries messages: pages of packed points, bounded in size.

Consecutive chunks of one metric are joined into a page of up to
``PAGE_POINTS`` points; records of the other kinds go up to ``PAGE_RECORDS``
(or ``PAGE_BYTES``) a message; a downsample is one message per metric. Only
one page is held at a time, so a read of any size keeps memory flat.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from mltrail.collector.store.chunks import Columns, Points
from mltrail.collector.store.series import (
    Bucket,
    SeriesBuckets,
    SeriesColumns,
    SeriesPart,
    SeriesPoints,
    SeriesQuery,
    SeriesRecord,
    SeriesStart,
    SeriesValues,
)
from mltrail.common import packed
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2

PAGE_POINTS = 65_536
PAGE_RECORDS = 1_000
PAGE_BYTES = 2 * 1024 * 1024
MAX_BUCKETS = 100_000


def series_query(request: collector_pb2.ReadSeriesRequest) -> SeriesQuery:
    """The request as a store query; PermanentError (INVALID_ARGUMENT) names a bad field."""
    def field(name: str) -> int | None:
        return getattr(request, name) if request.HasField(name) else None

    query = SeriesQuery(request.run_id, request.name, field("step_min"), field("step_max"),
                        field("time_min_unix_nano"), field("time_max_unix_nano"),
                        request.buckets, request.values_only)
    if query.buckets > MAX_BUCKETS:
        raise PermanentError(f"buckets {query.buckets} is over the limit of {MAX_BUCKETS:,}; "
                             "ask for fewer (a chart needs about one per pixel)")
    for low, high, what in ((query.step_min, query.step_max, "step"),
                            (query.time_min, query.time_max, "time")):
        if low is not None and high is not None and low > high:
            raise PermanentError(f"{what}_min {low} is greater than {what}_max {high}")
    return query


def pages(parts: Iterator[SeriesPart]) -> Iterator[collector_pb2.ReadSeriesResponse]:
    """The first message of each metric carries ``has_records`` (SeriesStart)."""
    name, points = "", Points.empty()
    records: list[collector_pb2.MetricRecord] = []
    size = 0
    start: list[bool] = []  # has_records, until the metric's first message is out
    columns: list[Columns] = []
    values: list[SeriesValues] = []
    for part in parts:
        if values and (part.name != name or not isinstance(part, SeriesValues)
                       or part.width != values[0].width):
            yield _values_page(name, values, start)
            values = []
        if columns and (part.name != name or not isinstance(part, SeriesColumns) or (
                (part.columns.steps is None) != (columns[0].steps is None))):
            yield _columns_page(name, columns, start)
            columns = []
        if part.name != name or (isinstance(part, SeriesPoints | SeriesColumns | SeriesValues)
                                 and records) or (
                not isinstance(part, SeriesPoints) and len(points)):
            yield from _flush(name, points, records, start)
            points, records, size = Points.empty(), [], 0
            name = part.name
        if isinstance(part, SeriesValues):
            values.append(part)
            if sum(v.count for v in values) >= PAGE_POINTS:
                yield _values_page(name, values, start)
                values = []
        elif isinstance(part, SeriesColumns):
            columns.append(part.columns)
            if sum(c.count for c in columns) >= PAGE_POINTS:
                yield _columns_page(name, columns, start)
                columns = []
        elif isinstance(part, SeriesStart):
            start[:] = [part.has_records]
        elif isinstance(part, SeriesPoints):
            points.extend(part.points)
            if len(points) >= PAGE_POINTS:
                yield from _flush(name, points, records, start)
                points = Points.empty()
        elif isinstance(part, SeriesRecord):
            record = collector_pb2.MetricRecord(time_unix_nano=part.time)
            record.metric.ParseFromString(part.metric)
            records.append(record)
            size += len(part.metric)
            if len(records) >= PAGE_RECORDS or size >= PAGE_BYTES:
                yield from _flush(name, points, records, start)
                records, size = [], 0
        elif isinstance(part, SeriesBuckets):
            yield collector_pb2.ReadSeriesResponse(
                name=part.name, buckets=[_bucket(b) for b in part.buckets])
    if values:
        yield _values_page(name, values, start)
    if columns:
        yield _columns_page(name, columns, start)
    yield from _flush(name, points, records, start)


def _columns_page(name: str, columns: list[Columns], start: list[bool]
                  ) -> collector_pb2.ReadSeriesResponse:
    """Whole chunks of numbers joined column by column: bytes copies, no per-point work."""
    page = collector_pb2.ReadSeriesResponse(name=name, has_records=any(start))
    start.clear()
    out = page.points
    out.count = sum(c.count for c in columns)
    out.times = b"".join(packed.little_endian(c.times) for c in columns)
    out.numbers = b"".join(packed.little_endian(c.numbers) for c in columns)
    if columns[0].steps is not None:
        out.steps = b"".join(packed.little_endian(c.steps) for c in columns
                             if c.steps is not None)
    return page


def _values_page(name: str, values: list[SeriesValues], start: list[bool]
                 ) -> collector_pb2.ReadSeriesResponse:
    """Values of whole chunks of numbers, of one width, as they are stored: float32s go as
    ``floats`` (the SDK widens them), doubles as ``numbers``; no steps, no times."""
    page = collector_pb2.ReadSeriesResponse(name=name, has_records=any(start))
    start.clear()
    page.points.count = sum(v.count for v in values)
    data = b"".join(v.data for v in values)
    if values[0].width == 4:
        page.points.floats = data
    else:
        page.points.numbers = data
    return page


def _flush(name: str, points: Points, records: list[collector_pb2.MetricRecord],
           start: list[bool]) -> Iterator[collector_pb2.ReadSeriesResponse]:
    if len(points):
        yield collector_pb2.ReadSeriesResponse(
            name=name, points=packed.pack(points.steps, points.times, points.kinds,
                                          points.values), has_records=any(start))
        start.clear()
    if records:
        yield collector_pb2.ReadSeriesResponse(name=name, records=records, has_records=True)
        start.clear()


def _bucket(bucket: Bucket) -> collector_pb2.SeriesBucket:
    out = collector_pb2.SeriesBucket(
        count=bucket.count, first_time_unix_nano=bucket.first_time,
        last_time_unix_nano=bucket.last_time, has_values=bucket.first is not None,
        first=_number(bucket.first), last=_number(bucket.last), min=_number(bucket.min),
        max=_number(bucket.max))
    if bucket.first_step is not None:
        out.first_step = bucket.first_step
    if bucket.last_step is not None:
        out.last_step = bucket.last_step
    return out


def _number(value: float | None) -> float:
    return math.nan if value is None else value
