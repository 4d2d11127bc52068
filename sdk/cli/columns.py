"""``mltrail runs --where/--sort/--columns/--format``: runs by what they achieved.

A column or key is a metric (its latest value), ``tags.KEY`` or
``properties.KEY``; a bare name that is not a metric of the run falls back
to its tag, then its property (``--columns accuracy,lr`` shows a metric and
a tag side by side). CSV has one row per run with the same columns as the
table, values in full.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from typing import Any

from mltrail.cli import table
from mltrail.query.client import parse_condition
from mltrail.query.types import RunInfo

BASE_HEADERS = ["RUN ID", "EXPERIMENT", "NAME", "STATUS", "STARTED", "DURATION"]


def condition_arg(text: str) -> str:
    try:
        parse_condition(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def columns_arg(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"--columns {text!r} has an empty name; give "
                                         "NAME,NAME,... (metrics, tags.K, properties.K)")
    return names


def metric_columns(columns: Sequence[str]) -> list[str]:
    """The names the collector should summarize (tags and properties it has anyway)."""
    return [c.removeprefix("metrics.") for c in columns
            if not c.startswith(("tags.", "properties."))]


def column_value(run: RunInfo, column: str) -> Any:
    space, dot, name = column.partition(".")
    if dot and space == "tags":
        return run.tags.get(name)
    if dot and space == "properties":
        return run.properties.get(name)
    name = column.removeprefix("metrics.")
    if name in run.metrics:
        return run.metrics[name].latest
    if column.startswith("metrics."):
        return None
    return run.tags.get(column, run.properties.get(column))


def base_row(run: RunInfo) -> list[Any]:
    return [run.run_id, run.experiment, run.display_name or None, run.status,
            table.local_time(run.start_time_unix_nano),
            table.run_duration(run.start_time_unix_nano, run.end_time_unix_nano)]


def runs_csv(runs: Sequence[RunInfo], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run_id", "experiment", "name", "status", "start_time", "end_time",
                     "duration_seconds", "parent_run_id", "tags", *columns])
    for run in runs:
        duration = ((run.end_time_unix_nano - run.start_time_unix_nano) / 1e9
                    if run.start_time_unix_nano and run.end_time_unix_nano else "")
        tags = ";".join(f"{k}={v}" for k, v in sorted(run.tags.items()))
        values = [column_value(run, c) for c in columns]
        writer.writerow([run.run_id, run.experiment, run.display_name, run.status,
                         table.iso_time(run.start_time_unix_nano) or "",
                         table.iso_time(run.end_time_unix_nano) or "", duration,
                         run.parent_run_id, tags, *("" if v is None else v for v in values)])
    return out.getvalue()


def shown(value: Any) -> Any:
    """A table cell: numbers compact (0.9, not 0.9000000000000002), None as '-'."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
