"""Queued items -> mltrail.v1 Records, built on the sender thread.

A logging call appends a small tuple ``(kind, run_id, time_ns, *payload)``
to the queue; building protobuf messages is left to the background thread so
the call stays within a few microseconds. ``build_record`` dispatches on
``kind`` through an explicit table and refuses an unknown kind.

A metric's time is cut to the microsecond there (not in the call, which stays
as cheap as ``time.time_ns()``): Azure ML v1 stamps a metric with
``created_utc`` to the microsecond ('%Y-%m-%dT%H:%M:%S.%fZ') and promises no
finer, and times on a microsecond grid take the store about a byte a point
less (its chunks pack the common factor of 1,000 out). Console lines, log
records and run events keep nanoseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mltrail.proto import records_pb2

Scalar = bool | int | float | str
QueueItem = tuple[Any, ...]

# Kinds of queued items (first element of the tuple).
SCALAR = "scalar"
LIST = "list"
ROW = "row"
TABLE = "table"
IMAGE = "image"
JSON = "json"
RUN_EVENT = "run_event"
LOG = "log"
CONSOLE = "console"  # a LOG of captured console output: the agent may drop it (drop_newest)
ARTIFACT = "artifact"
_MICROSECOND_KINDS = frozenset((SCALAR, LIST, ROW, TABLE, IMAGE, JSON))  # metrics


def to_value(value: Scalar) -> records_pb2.Value:
    kind = type(value)
    if kind is float:
        return records_pb2.Value(number=value)
    if kind is bool:
        return records_pb2.Value(flag=value)
    if kind is int:
        return records_pb2.Value(integer=value)
    return records_pb2.Value(text=str(value))


def from_value(value: records_pb2.Value) -> Scalar | None:
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind else None


def set_value(target: records_pb2.Value, value: Scalar) -> None:
    """Fill ``target`` in place (cheaper than building and copying a Value)."""
    kind = type(value)
    if kind is float:
        target.number = value
    elif kind is bool:
        target.flag = value
    elif kind is int:
        target.integer = value
    else:
        target.text = str(value)


# Each filler writes one item's body into a Record that is already in its
# Batch: protobuf constructors with nested messages copy them, which cost
# four times as much per record on the sender thread.

def _metric(record: records_pb2.Record, name: str, description: str) -> records_pb2.Metric:
    metric = record.metric
    metric.name = name
    if description:
        metric.description = description
    return metric


def _scalar(record: records_pb2.Record, name: str, description: str, value: Scalar,
            step: int | None) -> None:
    scalar = _metric(record, name, description).scalar
    set_value(scalar.value, value)
    if step is not None:
        scalar.step = step


def _list(record: records_pb2.Record, name: str, description: str,
          values: Sequence[Scalar]) -> None:
    target = _metric(record, name, description).list.values
    for value in values:
        set_value(target.add(), value)


def _row(record: records_pb2.Record, name: str, description: str,
         cells: Mapping[str, Scalar]) -> None:
    target = _metric(record, name, description).row.cells
    for column, value in cells.items():
        set_value(target.add(column=column).value, value)


def _table(record: records_pb2.Record, name: str, description: str,
           columns: Mapping[str, Sequence[Scalar]]) -> None:
    target = _metric(record, name, description).table.columns
    for column, values in columns.items():
        column_values = target.add(name=column).values
        for value in values:
            set_value(column_values.add(), value)


def _image(record: records_pb2.Record, name: str, description: str, artifact_path: str) -> None:
    _metric(record, name, description).image.artifact_path = artifact_path


def _json(record: records_pb2.Record, name: str, description: str, schema_type: str,
          schema_version: str, text: str) -> None:
    doc = _metric(record, name, description).json
    doc.schema_type, doc.schema_version, doc.json = schema_type, schema_version, text


def _run_event(record: records_pb2.Record, event: records_pb2.RunEvent) -> None:
    record.run_event.CopyFrom(event)


def _log(record: records_pb2.Record, chunk: records_pb2.LogChunk) -> None:
    record.log.CopyFrom(chunk)


def _artifact(record: records_pb2.Record, chunk: records_pb2.ArtifactChunk) -> None:
    record.artifact.CopyFrom(chunk)


_FILLERS: dict[str, Callable[..., None]] = {
    SCALAR: _scalar,
    LIST: _list,
    ROW: _row,
    TABLE: _table,
    IMAGE: _image,
    JSON: _json,
    RUN_EVENT: _run_event,
    LOG: _log,
    CONSOLE: _log,
    ARTIFACT: _artifact,
}


def add_record(batch: records_pb2.Batch, item: QueueItem, seq: int) -> None:
    """Append the Record for one queued item to ``batch``; an unknown kind is refused."""
    kind, run_id, time_ns, *payload = item
    filler = _FILLERS.get(kind)
    if filler is None:
        raise ValueError(f"unknown queued item kind {kind!r}; known: {sorted(_FILLERS)}")
    if kind in _MICROSECOND_KINDS:
        time_ns = time_ns // 1000 * 1000  # v1's precision (module docstring)
    filler(batch.records.add(seq=seq, time_unix_nano=time_ns, run_id=run_id), *payload)


class SeriesPacker:
    """``run.log`` calls of float values packed per series into ScalarSeries records
    (records.proto): one record of packed arrays instead of a Record per call, which
    the collector reads without a message per point (collector/series_wire.py).

    ``add`` takes a queued item it can pack and holds it; ``flush(seq)`` writes the
    held points into the batch, a record per series in order of its first point, the
    first from ``seq``, and returns the seq after them. The builder flushes before any
    record it does not pack, so every name keeps its logged order and every other
    record (a run's end) keeps its place among the points."""

    def __init__(self, batch: records_pb2.Batch, enabled: bool = True) -> None:
        self.batch = batch
        self.enabled = enabled  # False: ``add`` takes nothing (a Record per point)
        self.points = 0  # held, not yet in the batch
        # (run_id, name) -> (values, times, steps or None when no point has one)
        self._series: dict[tuple[str, str], tuple[list[float], list[int], list[int] | None]] = {}

    def add(self, item: QueueItem) -> bool:
        """Hold ``item`` (True), or leave it to ``add_record`` (False): another kind, a
        value that is not a float, a description, a step beyond int64, a name protobuf
        cannot encode (``add_record`` refuses it with its reason), or a step where the
        series' held points have none (or none where they have one): the builder
        flushes, so it follows them as a record of its own."""
        if not self.enabled or item[0] != SCALAR or type(item[5]) is not float or item[4]:
            return False
        _, run_id, time_ns, name, _, value, step = item
        if step is not None and not -(1 << 63) <= step < 1 << 63:
            return False
        key = (run_id, name)
        series = self._series.get(key)
        if series is None:
            if not (_encodable(run_id) and _encodable(name)):
                return False
            series = self._series[key] = ([], [], None if step is None else [])
        steps = series[2]
        if (steps is None) is not (step is None):
            return False
        series[0].append(value)
        series[1].append(time_ns // 1000 * 1000)  # v1's precision (module docstring)
        if steps is not None:
            steps.append(step)
        self.points += 1
        return True

    def flush(self, seq: int) -> int:
        """Write the held points from ``seq``; the seq after the last."""
        for (run_id, name), (values, times, steps) in self._series.items():
            record = self.batch.records.add(seq=seq, time_unix_nano=times[0], run_id=run_id)
            metric = record.metric
            metric.name = name
            series = metric.series
            series.values.extend(values)
            series.times_unix_nano.extend(times)
            if steps is not None:
                series.steps.extend(steps)
            seq += len(values)
        self._series.clear()
        self.points = 0
        return seq


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def point_records(record: records_pb2.Record) -> list[records_pb2.Record]:
    """A ScalarSeries record as the Record of each of its points (seq, time, scalar
    value and step), for readers of a spool; any other record as it is."""
    if record.WhichOneof("body") != "metric" or record.metric.WhichOneof("data") != "series":
        return [record]
    series, name = record.metric.series, record.metric.name
    steps = list(series.steps) or [None] * len(series.values)
    out = []
    for index, (value, time_ns, step) in enumerate(
            zip(series.values, series.times_unix_nano, steps, strict=True)):
        point = records_pb2.Record(seq=record.seq + index, time_unix_nano=time_ns,
                                   run_id=record.run_id)
        point.metric.name = name
        point.metric.scalar.value.number = value
        if step is not None:
            point.metric.scalar.step = step
        out.append(point)
    return out


def build_record(item: QueueItem, seq: int) -> records_pb2.Record:
    """The Record for one queued item, alone (tests, tools)."""
    batch = records_pb2.Batch()
    add_record(batch, item, seq)
    return batch.records[0]


def item_size(item: QueueItem) -> int:
    """An estimate of an item's encoded size, at least its real size, to cut batches by bytes."""
    kind = item[0]
    if kind in (ARTIFACT, LOG, CONSOLE):
        return len(item[3].data) + 64
    if kind == RUN_EVENT:
        return int(item[3].ByteSize()) + 64
    if kind not in _FILLERS:
        return 256  # refused by add_record
    # A metric: (kind, run_id, time_ns, name, description, ...). The name and
    # description count: 5000 calls with a 16 KiB description each are 80 MiB.
    size = 64 + text_size(item[3]) + (text_size(item[4]) if item[4] else 0)
    if kind == SCALAR:  # the common case: a number
        return size + text_size(item[5]) if type(item[5]) is str else size
    if kind == LIST:
        return size + values_size(item[5])
    if kind == ROW:
        return size + row_size(item[5])
    if kind == TABLE:
        return size + table_size(item[5])
    if kind == JSON:
        return size + len(item[7])
    return size + text_size(item[5])  # IMAGE: its artifact path


# Sizes of checked values as encoded: 16 bytes of framing per value, cell or
# column (protobuf needs at most 13) plus their text as UTF-8. Validation
# bounds one call with these, the sender cuts batches with them.

def text_size(text: str) -> int:
    # Never raises: the sender sizes an item before add_record refuses a lone
    # surrogate, and an exception there would leave the item first in the queue.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def values_size(values: Sequence[Scalar]) -> int:
    return 16 * len(values) + sum(text_size(v) for v in values if type(v) is str)


def row_size(cells: Mapping[str, Scalar]) -> int:
    return values_size(list(cells.values())) + values_size(list(cells))


def table_size(columns: Mapping[str, Sequence[Scalar]]) -> int:
    return values_size(list(columns)) + sum(values_size(c) for c in columns.values())


# What a queued item holds in memory, for the SDK's memory bound (Sender):
# item_size's encoded estimate plus the Python objects around it. A str
# holds at most its UTF-8 size plus a header; a value in a list, row or
# table also takes its slot and its own object (a float: 8 + 24 bytes).
HELD_ITEM_OVERHEAD = 256  # the tuple, its number and message objects, the queue slot
# a number logged without a description: its tuple (and the one the queue keeps
# it in), time, value, step and slot take about 250 bytes; + 64 for the name
# (none when the name is the shared object validation keeps: Sender.enqueue_scalar)
SCALAR_HELD = HELD_ITEM_OVERHEAD + 64
HELD_VALUE_OVERHEAD = 48  # per value beyond item_size's 16: slot, object (a str: its header)


def held_size(item: QueueItem) -> int:
    """An estimate of the memory a queued item holds, at least what it really holds."""
    kind = item[0]
    size = item_size(item) + HELD_ITEM_OVERHEAD
    if kind == SCALAR:
        return size
    if kind in (LOG, CONSOLE):  # per-line times: a repeated int64 of 8 bytes each
        return size + 8 * len(item[3].line_times_unix_nano)
    if kind == LIST:
        return size + HELD_VALUE_OVERHEAD * len(item[5])
    if kind == ROW:  # a dict entry per cell: its key and value
        return size + 2 * HELD_VALUE_OVERHEAD * len(item[5])
    if kind == TABLE:
        columns = item[5]
        return size + HELD_VALUE_OVERHEAD * (len(columns) + sum(len(c) for c in columns.values()))
    return size
