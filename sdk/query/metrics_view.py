"""Metric records as Python values, in the shape Azure ML v1 ``Run.get_metrics()`` returns.

``fold_metrics`` turns the collector's records (by name, then in logged
order) into one dict, name -> value:

- ``log`` once -> the value; several times -> a list in logged order;
- ``log_list`` -> the list (several calls, or scalars mixed in: one flat list);
- ``log_row`` once -> {column: value}; several rows or any ``log_table``
  -> {column: [values]} (a column missing from a row is padded with None,
  so the columns stay aligned row by row);
- ``log_image`` -> the artifact path (several: a list of paths);
- confusion matrix, accuracy table, residuals, predictions -> the parsed
  JSON dict (several: a list of dicts).

A name logged with calls of different families (a scalar and a row, say)
cannot take one of these shapes; it becomes a list with one entry per call,
so nothing logged is hidden.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mltrail.common import packed
from mltrail.proto import collector_pb2, records_pb2

# The families a metric call belongs to; calls of one family fold together.
_FAMILY_OF_KIND = {
    "scalar": "values",
    "list": "values",
    "row": "rows",
    "table": "rows",
    "image": "image",
    "json": "json",
}


def value_to_python(value: records_pb2.Value) -> Any:
    """The Python value of a ``Value`` (None when no kind is set)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    return getattr(value, kind)


def metric_kind(metric: records_pb2.Metric) -> str:
    """``scalar``, ``list``, ``row``, ``table``, ``image``, ``json`` or ``""``."""
    return metric.WhichOneof("data") or ""


def metric_to_python(metric: records_pb2.Metric) -> Any:
    """The value of one call, alone: what ``get_metrics`` would show for it."""
    kind = metric_kind(metric)
    if kind == "scalar":
        return value_to_python(metric.scalar.value)
    if kind == "list":
        return [value_to_python(v) for v in metric.list.values]
    if kind == "row":
        return _row_dict(metric.row)
    if kind == "table":
        return {c.name: [value_to_python(v) for v in c.values] for c in metric.table.columns}
    if kind == "image":
        return metric.image.artifact_path
    if kind == "json":
        return _parse_json(metric.json.json)
    return None


def fold_metrics(records: Iterable[Any]) -> dict[str, Any]:
    """Fold ``MetricRecord`` (or bare ``Metric``) messages into Azure's ``get_metrics`` shape."""
    folds: dict[str, _NameFold] = {}
    for rec in records:
        metric = rec.metric if hasattr(rec, "metric") else rec
        folds.setdefault(metric.name, _NameFold()).add(metric)
    return {name: fold.result() for name, fold in folds.items()}


def fold_series(pages: Iterable[collector_pb2.ReadSeriesResponse]) -> dict[str, Any]:
    """``fold_metrics`` of ReadSeries pages: a name of plain scalars (the long series) is
    built from the packed columns directly; a name with other kinds too goes through
    the records, so both give the same shape."""
    names: dict[str, _SeriesFold] = {}
    for page in pages:
        names.setdefault(page.name, _SeriesFold(page.name)).add(page)
    return {name: fold.result() for name, fold in names.items()}


def page_records(page: collector_pb2.ReadSeriesResponse
                 ) -> Iterable[collector_pb2.MetricRecord]:
    """One page as ``MetricRecord`` messages (steps and times kept), in logged order."""
    if page.HasField("points"):
        points = packed.unpack(page.points)
        steps = points.steps or [None] * len(points.times)
        for step, time_ns, value in zip(steps, points.times, points.values, strict=True):
            record = collector_pb2.MetricRecord(time_unix_nano=time_ns)
            record.metric.name = page.name
            scalar = record.metric.scalar
            if step is not None:
                scalar.step = step
            _set_value(scalar.value, value)
            yield record
    yield from page.records


def _set_value(target: records_pb2.Value, value: Any) -> None:
    if isinstance(value, bool):
        target.flag = value
    elif isinstance(value, int):
        target.integer = value
    elif isinstance(value, str):
        target.text = value
    else:
        target.number = value


@dataclass
class _SeriesFold:
    """Plain scalar values while there are only those; the records' fold after that."""

    name: str
    values: list[Any] = field(default_factory=list)
    fold: _NameFold | None = None

    def add(self, page: collector_pb2.ReadSeriesResponse) -> None:
        if self.fold is None and not page.records:
            if page.HasField("points"):
                self.values.extend(packed.values_of(page.points))
            return
        if self.fold is None:
            self.fold = _NameFold()
            for value in self.values:
                metric = records_pb2.Metric(name=self.name)
                _set_value(metric.scalar.value, value)
                self.fold.add(metric)
            self.values = []
        for record in page_records(page):
            self.fold.add(record.metric)

    def result(self) -> Any:
        if self.fold is not None:
            return self.fold.result()
        return self.values[0] if len(self.values) == 1 else self.values


@dataclass
class _NameFold:
    """Every call logged under one name, in logged order."""

    metrics: list[records_pb2.Metric] = field(default_factory=list)

    def add(self, metric: records_pb2.Metric) -> None:
        self.metrics.append(metric)

    def result(self) -> Any:
        kinds = [metric_kind(m) for m in self.metrics]
        families = {_FAMILY_OF_KIND.get(k, "") for k in kinds}
        if len(families) != 1 or "" in families:
            return [metric_to_python(m) for m in self.metrics]
        family = families.pop()
        if family == "values":
            return _fold_values(self.metrics, kinds)
        if family == "rows":
            return _fold_rows(self.metrics, kinds)
        return _one_or_list([metric_to_python(m) for m in self.metrics])


def _fold_values(metrics: list[records_pb2.Metric], kinds: list[str]) -> Any:
    if kinds == ["scalar"]:
        return metric_to_python(metrics[0])
    values: list[Any] = []
    for metric, kind in zip(metrics, kinds, strict=True):
        if kind == "scalar":
            values.append(value_to_python(metric.scalar.value))
        else:
            values.extend(value_to_python(v) for v in metric.list.values)
    return values


def _fold_rows(metrics: list[records_pb2.Metric], kinds: list[str]) -> dict[str, Any]:
    if kinds == ["row"]:
        return _row_dict(metrics[0].row)
    columns: dict[str, list[Any]] = {}
    height = 0  # rows folded so far; every column is padded to it
    for metric, kind in zip(metrics, kinds, strict=True):
        part = (
            {k: [v] for k, v in _row_dict(metric.row).items()}
            if kind == "row"
            else metric_to_python(metric)
        )
        added = max((len(v) for v in part.values()), default=0)
        for name, values in part.items():
            column = columns.setdefault(name, [None] * height)
            column.extend(values)
        height += added
        for column in columns.values():
            column.extend([None] * (height - len(column)))
    return columns


def _row_dict(row: records_pb2.Row) -> dict[str, Any]:
    return {cell.column: value_to_python(cell.value) for cell in row.cells}


def _one_or_list(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # kept as logged; the SDK validates, so this is old or foreign data
