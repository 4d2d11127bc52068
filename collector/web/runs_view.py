"""The runs table's view: filters, metric columns, sort and page, all from the URL.

Query parameters (every one optional, each as the UI's URL holds it):

- ``experiment=NAME``, ``status=Completed`` (v1 names), ``tag=KEY=VALUE`` or
  ``tag=KEY`` (present; repeatable, every one must match);
- ``where=accuracy > 0.9`` (repeatable; ``NAME[:last|min|max] OP NUMBER`` with
  OP one of > >= < <= = !=; a run without the metric does not match);
- ``columns=accuracy,loss:min`` (metric columns; ``NAME`` is ``NAME:last``);
- ``sort=-start`` (a run field: experiment, name, status, start, duration, or
  a metric column such as ``accuracy:max``; ``-`` for descending; runs without
  the value sort last either way);
- ``offset=0``, ``limit=50`` (at most 1,000).

The store lists the matching runs (experiment, status and tags are its
filters); metric conditions, sorting and paging happen here over the runs'
metric summaries, which the store answers in one pass.
"""

from __future__ import annotations

import math
import operator
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mltrail.proto import collector_pb2
from mltrail.query.types import RunInfo, status_number

MAX_RUNS = 1_000_000  # what one listing may hold; the table pages over it
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
RUN_FIELDS = ("experiment", "name", "status", "start", "duration")
AGGREGATES = ("last", "min", "max")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, ">": operator.gt,
    "<": operator.lt, "=": operator.eq}
_WHERE = re.compile(r"\s*(.+?)\s*(>=|<=|!=|>|<|=)\s*(\S+)\s*")


@dataclass(frozen=True)
class Column:
    name: str
    aggregate: str = "last"

    @property
    def key(self) -> str:
        return f"{self.name}:{self.aggregate}"

    @classmethod
    def parse(cls, text: str) -> Column:
        name, sep, aggregate = text.strip().rpartition(":")
        if not sep or aggregate not in AGGREGATES:
            name, aggregate = text.strip(), "last"
        if not name:
            raise ValueError(f"metric column {text!r} has no name")
        return cls(name, aggregate)

    def value(self, summaries: Mapping[str, collector_pb2.MetricSummary]) -> float | None:
        summary = summaries.get(self.name)
        if summary is None:
            return None
        return float(summary.latest if self.aggregate == "last" else
                     getattr(summary, self.aggregate))


@dataclass(frozen=True)
class Condition:
    column: Column
    op: str
    number: float

    @classmethod
    def parse(cls, text: str) -> Condition:
        match = _WHERE.fullmatch(text)
        if match is None:
            raise ValueError(f"where={text!r}: expected NAME OP NUMBER, e.g. 'accuracy > 0.9'")
        try:
            number = float(match[3])
        except ValueError:
            raise ValueError(f"where={text!r}: {match[3]!r} is not a number") from None
        return cls(Column.parse(match[1]), match[2], number)

    def holds(self, summaries: Mapping[str, collector_pb2.MetricSummary]) -> bool:
        value = self.column.value(summaries)
        return value is not None and not math.isnan(value) and _OPS[self.op](value, self.number)


@dataclass(frozen=True)
class RunsView:
    experiment: str = ""
    status: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    where: tuple[Condition, ...] = ()
    columns: tuple[Column, ...] = ()
    sort: str = "start"
    descending: bool = True
    offset: int = 0
    limit: int = DEFAULT_LIMIT

    def metric_names(self) -> set[str]:
        names = {c.name for c in self.columns} | {c.column.name for c in self.where}
        if self.sort not in RUN_FIELDS:
            names.add(Column.parse(self.sort).name)
        return names


def parse(query: Mapping[str, Sequence[str]]) -> RunsView:
    def one(key: str, default: str = "") -> str:
        values = query.get(key)
        return values[-1].strip() if values else default

    tags = {}
    for text in query.get("tag", []):
        key, _, value = text.partition("=")
        if key.strip():
            tags[key.strip()] = value.strip()
    status = one("status")
    sort = one("sort", "-start") or "-start"
    descending = sort.startswith("-")
    sort = sort.lstrip("-")
    if sort not in RUN_FIELDS:
        sort = Column.parse(sort).key
    columns = tuple(Column.parse(c) for v in query.get("columns", []) for c in v.split(",")
                    if c.strip())
    return RunsView(
        experiment=one("experiment"), status=status_number(status) if status else 0,
        tags=tags, where=tuple(Condition.parse(w) for w in query.get("where", []) if w.strip()),
        columns=columns, sort=sort, descending=descending,
        offset=_count(one("offset", "0"), "offset", 0),
        limit=min(_count(one("limit", str(DEFAULT_LIMIT)), "limit", 1), MAX_LIMIT))


def _count(text: str, key: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{key}={text!r}: expected a whole number") from None
    if value < least:
        raise ValueError(f"{key}={text!r}: must be at least {least}")
    return value


def answer(view: RunsView, infos: Sequence[collector_pb2.RunInfo],
           summaries: Mapping[str, Mapping[str, collector_pb2.MetricSummary]]) -> dict[str, Any]:
    """The page of runs the view asks for, with its metric columns filled in."""
    now = time.time_ns()
    picked = [i for i in infos if _matches(view, i, summaries.get(i.run_id, {}))]
    key = _sort_key(view, summaries, now)
    present = [i for i in picked if key(i) is not None]
    missing = [i for i in picked if key(i) is None]
    present.sort(key=key, reverse=view.descending)
    page = (present + missing)[view.offset:view.offset + view.limit]
    rows = []
    for info in page:
        row = RunInfo.from_pb(info).to_dict()
        for name in ("log_lines", "metric_records", "artifacts", "properties", "error"):
            row.pop(name)
        row["duration_ns"] = _duration(info, now)
        own = summaries.get(info.run_id, {})
        row["metrics"] = {c.key: c.value(own) for c in view.columns}
        rows.append(row)
    return {"total": len(picked), "offset": view.offset, "limit": view.limit,
            "columns": [c.key for c in view.columns], "runs": rows}


def _matches(view: RunsView, info: collector_pb2.RunInfo,
             summaries: Mapping[str, collector_pb2.MetricSummary]) -> bool:
    if view.status and info.status != view.status:
        return False
    for key, value in view.tags.items():
        if key not in info.tags or (value and info.tags[key] != value):
            return False
    return all(c.holds(summaries) for c in view.where)


def _duration(info: collector_pb2.RunInfo, now: int) -> int:
    if not info.start_time_unix_nano:
        return 0
    return (info.end_time_unix_nano or now) - info.start_time_unix_nano


def _sort_key(view: RunsView, summaries: Mapping[str, Mapping[str, collector_pb2.MetricSummary]],
              now: int) -> Callable[[collector_pb2.RunInfo], Any]:
    if view.sort == "experiment":
        return lambda i: (i.experiment, i.start_time_unix_nano)
    if view.sort == "name":
        return lambda i: ((i.display_name or i.run_id).lower(), i.start_time_unix_nano)
    if view.sort == "status":
        return lambda i: (i.status, i.start_time_unix_nano)
    if view.sort == "start":
        return lambda i: i.start_time_unix_nano
    if view.sort == "duration":
        return lambda i: _duration(i, now)
    column = Column.parse(view.sort)

    def metric(info: collector_pb2.RunInfo) -> float | None:
        value = column.value(summaries.get(info.run_id, {}))
        return None if value is None or math.isnan(value) else value
    return metric
