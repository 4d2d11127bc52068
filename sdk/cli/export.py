"""``mltrail export RUN --format csv|jsonl|parquet [--output DIR]``.

Writes into DIR (default ``./RUN``) one file per metric kind the run has and
one for its log lines, each in long form (a row per value):

    metrics-scalar   name, step, time, value
    metrics-list     name, time, call, index, value
    metrics-row      name, time, call, column, value   (log_row: a call is a row)
    metrics-table    name, time, call, row, column, value
    metrics-image    name, time, call, path
    metrics-json     name, time, call, schema_type, schema_version, json
    logs             stream, line, time, level, logger, text

``time`` is ISO 8601; ``call`` numbers a metric's calls from 0. Values keep
their type in jsonl and parquet; in csv they are text. Parquet needs pyarrow
(``pip install 'mltrail[parquet]'``): it is the reference implementation of
the format, and optional because it is a large package.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mltrail.cli import table
from mltrail.cli.connection import add_security_flags, security_from_args
from mltrail.cli.progress import Progress
from mltrail.cli.target import connect
from mltrail.common.errors import PermanentError
from mltrail.query.client import QueryClient
from mltrail.query.metrics_view import metric_kind, metric_to_python, value_to_python

COLUMNS = {
    "scalar": ["name", "step", "time", "value"],
    "list": ["name", "time", "call", "index", "value"],
    "row": ["name", "time", "call", "column", "value"],
    "table": ["name", "time", "call", "row", "column", "value"],
    "image": ["name", "time", "call", "path"],
    "json": ["name", "time", "call", "schema_type", "schema_version", "json"],
    "logs": ["stream", "line", "time", "level", "logger", "text"],
}


class ParquetUnavailable(PermanentError):
    """pyarrow is not installed."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="write a run's metrics and logs to csv, jsonl or parquet files",
        description="Write a run's metrics (one file per kind) and log lines into a directory.")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), default="csv")
    p.add_argument("--output", metavar="DIR", help="directory to write into (default ./RUN)")
    p.add_argument("--collector", metavar="HOST:PORT",
                   help="collector to ask (default: MLTRAIL_COLLECTOR, else the local one)")
    add_security_flags(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    writer = _writer(args.format)  # a missing pyarrow is said before any work
    out = Path(args.output or args.run_id)
    with connect(args.collector, security=security_from_args(args)) as client:
        client.get_run(args.run_id)
        rows = _metric_rows(client, args.run_id)
        written = []
        for kind in COLUMNS:
            if kind == "logs":
                kind_rows: Any = _log_rows(client, args.run_id)
            else:
                kind_rows = rows.get(kind)
                if not kind_rows:
                    continue
            name = "logs" if kind == "logs" else f"metrics-{kind}"
            path = out / f"{name}.{args.format}"
            count = writer(path, COLUMNS[kind], kind_rows)
            if count or kind != "logs":
                written.append((path, count))
            else:
                path.unlink(missing_ok=True)
    for path, count in written:
        print(f"{path}: {count} rows ({table.human_size(path.stat().st_size)})")
    if not written:
        print(f"run {args.run_id} has no metrics or log lines; nothing was written")
    return 0


def _metric_rows(client: QueryClient, run_id: str) -> dict[str, list[list[Any]]]:
    rows: dict[str, list[list[Any]]] = {}
    calls: dict[str, int] = {}
    for record in client.get_metric_records(run_id):
        metric, kind = record.metric, metric_kind(record.metric)
        when = table.iso_time(record.time_unix_nano)
        call = calls[metric.name] = calls.get(metric.name, -1) + 1
        out = rows.setdefault(kind, [])
        if kind == "scalar":
            step = metric.scalar.step if metric.scalar.HasField("step") else None
            out.append([metric.name, step, when, value_to_python(metric.scalar.value)])
        elif kind == "list":
            out += [[metric.name, when, call, i, value_to_python(v)]
                    for i, v in enumerate(metric.list.values)]
        elif kind == "row":
            out += [[metric.name, when, call, c.column, value_to_python(c.value)]
                    for c in metric.row.cells]
        elif kind == "table":
            out += [[metric.name, when, call, i, c.name, value_to_python(v)]
                    for c in metric.table.columns for i, v in enumerate(c.values)]
        elif kind == "image":
            out.append([metric.name, when, call, metric_to_python(metric)])
        elif kind == "json":
            out.append([metric.name, when, call, metric.json.schema_type,
                        metric.json.schema_version, metric.json.json])
    return rows


def _log_rows(client: QueryClient, run_id: str) -> Iterator[list[Any]]:
    progress = Progress(f"exporting the logs of {run_id}", unit="lines")
    with client.tail_logs(run_id) as tail:
        for lines in tail.batches():
            for line in lines:
                yield [line.stream, line.line, table.iso_time(line.time_unix_nano), line.level,
                       line.logger, line.text]
            progress.advance(len(lines))
    progress.done()


# ---- writers: (path, columns, rows) -> rows written, via a temporary file -------------


def _writer(fmt: str) -> Any:
    if fmt == "csv":
        return _atomic(_write_csv)
    if fmt == "jsonl":
        return _atomic(_write_jsonl)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ParquetUnavailable(
            "parquet export needs pyarrow, which is not installed; install it with "
            "`pip install 'mltrail[parquet]'` (or `pip install pyarrow`), or export "
            "--format csv or jsonl; nothing was written") from None
    return _atomic(_write_parquet)


def _atomic(write: Any) -> Any:
    def run(path: Path, columns: list[str], rows: Any) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            count = int(write(tmp, columns, rows))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return count
    return run


def _write_csv(path: Path, columns: list[str], rows: Any) -> int:
    count = 0
    with open(path, "w", newline="", encoding="utf-8", errors="replace") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
            count += 1
    return count


def _write_jsonl(path: Path, columns: list[str], rows: Any) -> int:
    count = 0
    with open(path, "w", encoding="utf-8", errors="replace") as fh:
        for row in rows:
            fh.write(json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False) + "\n")
            count += 1
    return count


def _write_parquet(path: Path, columns: list[str], rows: Any) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    listed = list(rows)
    data = {c: _parquet_column([r[i] for r in listed]) for i, c in enumerate(columns)}
    pq.write_table(pa.table(data), path)
    return len(listed)


def _parquet_column(values: list[Any]) -> list[Any]:
    """One Arrow type per column: numbers stay numbers (ints with floats become
    doubles); a column that mixes kinds (log_row cells of text and numbers) is text."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return values
    return [None if v is None else str(v) for v in values]
