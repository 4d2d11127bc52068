"""``mltrail metrics --json`` and ``--format csv``, written as ReadSeries pages arrive.

A metric of plain scalars (the long ones) is written page by page, so the
command's memory stays flat for a series of any length; a metric that also
has records of other kinds (the collector says so on its first page) is
folded whole first, as ``Run.get_metrics()`` folds it, since its shape
depends on every call. The JSON is the ``get_metrics`` shape, the CSV one
row per logged value: name, step, time (ns since the epoch), value (other
kinds as compact JSON).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from itertools import repeat
from typing import IO, Any

from mltrail.cli.table import compact_json, printable
from mltrail.common import packed
from mltrail.proto import collector_pb2
from mltrail.query.metrics_view import fold_series, metric_to_python

CSV_HEADER = ("name", "step", "time_unix_nano", "value")


def _dumps(value: Any) -> str:
    return printable(json.dumps(value, ensure_ascii=False, default=str), json_text=True)


class _Printable:
    """A CSV writer's file: every control character but the row breaks written visibly."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write(printable(text, "\n"))


class _JsonWriter:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.names = 0
        self.name: str | None = None
        self.held: list[Any] = []  # a first value, until a second says it is a list
        self.opened = False
        self.mixed: list[collector_pb2.ReadSeriesResponse] | None = None

    def start(self, page: collector_pb2.ReadSeriesResponse) -> None:
        self.finish()
        self.out.write(("," if self.names else "") + f"\n  {_dumps(page.name)}: ")
        self.names += 1
        self.name, self.held, self.opened = page.name, [], False
        self.mixed = [] if page.has_records else None

    def add(self, page: collector_pb2.ReadSeriesResponse) -> None:
        if page.name != self.name:
            self.start(page)
        if self.mixed is not None:
            self.mixed.append(page)
            return
        if not page.HasField("points"):
            return
        values = packed.values_of(page.points)
        if not self.opened and len(self.held) + len(values) <= 1:
            self.held.extend(values)
            return
        text = _dumps(self.held + values if not self.opened else values)[1:-1]
        self.out.write(("[" if not self.opened else ", ") + text)
        self.opened, self.held = True, []

    def finish(self) -> None:
        if self.name is None:
            return
        if self.mixed is not None:
            value = fold_series(self.mixed)[self.name]
            text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
            self.out.write(printable(text, json_text=True).replace("\n", "\n  "))
        elif self.opened:
            self.out.write("]")
        else:
            self.out.write(_dumps(self.held[0]) if self.held else "[]")
        self.name = None


def write_json(pages: Iterable[collector_pb2.ReadSeriesResponse], out: IO[str]) -> int:
    """The ``get_metrics`` dict as JSON on ``out``; returns the number of metrics."""
    writer = _JsonWriter(out)
    out.write("{")
    for page in pages:
        writer.add(page)
    writer.finish()
    out.write("\n}\n" if writer.names else "}\n")
    return writer.names


def write_csv(pages: Iterable[collector_pb2.ReadSeriesResponse], out: IO[str]) -> int:
    """One CSV row per logged value; returns the number of rows."""
    rows = csv.writer(_Printable(out), lineterminator="\n")
    rows.writerow(CSV_HEADER)
    count = 0
    for page in pages:
        if page.HasField("points"):
            points = packed.unpack(page.points)
            steps: Iterable[int | None] = points.steps if points.steps is not None else repeat(
                None)
            rows.writerows(zip(repeat(page.name), steps, points.times, points.values))
            count += len(points.times)
        for record in page.records:
            metric = record.metric
            step = metric.scalar.step if metric.HasField("scalar") and metric.scalar.HasField(
                "step") else None
            rows.writerow((page.name, step, record.time_unix_nano,
                           compact_json(metric_to_python(metric))))
            count += 1
    return count
