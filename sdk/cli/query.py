"""The read commands: ``mltrail runs | show | metrics | logs | artifacts``.

Each prints an aligned table (local times, human durations, Azure ML status
names) or, with ``--json``, one JSON document (``logs``: one JSON object per
line). Expected failures raise ``MltrailError`` subclasses, which
``mltrail.cli`` prints as one line; a closed stdout (``| head``) ends the
command quietly with exit code 141, as for any Unix filter killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from mltrail.cli import columns, table
from mltrail.cli.connection import add_security_flags, security_from_args
from mltrail.cli.metrics_out import write_csv, write_json
from mltrail.cli.output import STDERR_HEADER
from mltrail.cli.output import out as _out
from mltrail.cli.progress import Progress
from mltrail.cli.target import connect
from mltrail.common.errors import PermanentError
from mltrail.query.client import QueryClient
from mltrail.query.metrics_view import fold_metrics, metric_kind, metric_to_python, page_records
from mltrail.query.types import (
    ArtifactInfo,
    RunInfo,
    status_number,
)

SIGPIPE_EXIT = 141
Command = Callable[[argparse.Namespace], int]


class MetricNotFound(PermanentError):
    """The run has no metric of the requested name."""


# ---- registration ---------------------------------------------------------------


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--collector", metavar="HOST:PORT",
                        help="collector to ask (default: MLTRAIL_COLLECTOR, the embedded "
                             "collector, else 127.0.0.1:7431)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_security_flags(common)
    _register_runs(subparsers, common)
    _register_show(subparsers, common)
    _register_metrics(subparsers, common)
    _register_logs(subparsers, common)
    _register_artifacts(subparsers, common)


def _register_runs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("runs", parents=[common], help="list runs",
                       description="List runs, newest first.")
    p.add_argument("--experiment", metavar="E", help="only runs of this experiment")
    p.add_argument("--status", metavar="S", type=_status_arg,
                   help="Running, Completed, Failed or Canceled")
    p.add_argument("--tag", metavar="K=V", action="append", default=[], type=_tag_arg,
                   help="only runs with this tag (K alone: any value); repeatable")
    p.add_argument("--parent", metavar="RUN", help="only children of this run")
    p.add_argument("--limit", metavar="N", type=positive_int, default=100,
                   help="at most N runs (100)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only run ids, newest first (RUN=$(mltrail runs -q --limit 1))")
    p.add_argument("--where", metavar="COND", action="append", default=[],
                   type=columns.condition_arg,
                   help="only runs where COND holds: 'accuracy > 0.9' (a metric's latest "
                        "value), 'tags.team = vision', 'properties.git != abc'; repeatable")
    p.add_argument("--sort", metavar="KEY", default="",
                   help="order by a metric, tags.K or properties.K; -KEY for descending "
                        "(runs without it last)")
    p.add_argument("--columns", metavar="A,B", type=columns.columns_arg, default=[],
                   help="add columns: metrics (latest value), tags.K, properties.K")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), csv or json (as --json)")
    p.set_defaults(func=_quiet_pipe(cmd_runs))


def _register_show(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("show", parents=[common], help="show one run's details")
    p.add_argument("run_id", metavar="RUN")
    p.set_defaults(func=_quiet_pipe(cmd_show))


def _register_metrics(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("metrics", parents=[common], help="show a run's metrics",
                       description="Metrics of a run; --json gives Run.get_metrics()'s shape.")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--name", metavar="N", help="one metric, in full (every value and step)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="json: Run.get_metrics()'s shape (as --json); csv: a row per value "
                        "(name, step, time_unix_nano, value); both stream a series of any "
                        "length")
    p.set_defaults(func=_quiet_pipe(cmd_metrics))


def _register_logs(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="print a run's console and log lines")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new lines until the run ends; exit 1 if it failed")
    p.add_argument("--stream", metavar="NAME", action="append", default=[],
                   help="only this stream (stdout, stderr, a log name); repeatable")
    p.add_argument("--from", dest="from_line", metavar="N", type=int, default=0,
                   help="start at line N of each stream (0-based)")
    p.add_argument("--console", action="store_true",
                   help="only stdout and stderr (the 'log' stream repeats logging lines "
                        "that also went to stderr)")
    p.add_argument("--prefix", action="store_true", help="prefix each line with its stream")
    from mltrail.cli.logs import cmd_logs

    p.set_defaults(func=_quiet_pipe(cmd_logs))


def _register_artifacts(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("artifacts", parents=[common], help="list or download a run's files")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--download", metavar="PATH", help="the artifact to download")
    p.add_argument("--output", metavar="FILE",
                   help="where to write it (default: its file name in the current directory)")
    p.set_defaults(func=_quiet_pipe(cmd_artifacts))


def _status_arg(text: str) -> int:
    try:
        return status_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def _tag_arg(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"tag {text!r} is not KEY=VALUE or KEY")
    return key, value


def _quiet_pipe(command: Command) -> Command:
    """Run ``command``; a reader that went away (``| head``) ends it without a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            code = command(args)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            # Python flushes stdout again at exit; point it at /dev/null so that
            # flush cannot fail and print "Exception ignored ... BrokenPipeError".
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return SIGPIPE_EXIT

    return run


def _print_json(doc: Any) -> None:
    _out().write(table.printable(json.dumps(doc, indent=2, ensure_ascii=False, default=str),
                                 json_text=True) + "\n")


# ---- runs and show ----------------------------------------------------------------


COUNT_FIELDS = ("log_lines", "metric_records", "artifacts")


def run_to_json(run: RunInfo, counted: bool = True) -> dict[str, Any]:
    """A run as JSON; ``counted=False`` for a listing, which carries no counts
    (the collector counts per run only for `show`) rather than zeros."""
    doc = run.to_dict()
    if not counted:
        for name in COUNT_FIELDS:
            del doc[name]
    doc["start_time"] = table.iso_time(run.start_time_unix_nano)
    doc["end_time"] = table.iso_time(run.end_time_unix_nano)
    if run.start_time_unix_nano and run.end_time_unix_nano:
        doc["duration_seconds"] = (run.end_time_unix_nano - run.start_time_unix_nano) / 1e9
    else:
        doc["duration_seconds"] = None
    return doc


def cmd_runs(args: argparse.Namespace) -> int:
    with connect(args.collector, security=security_from_args(args)) as client:
        runs = client.list_runs(experiment=args.experiment, status=args.status,
                                tags=dict(args.tag), limit=args.limit, parent_run_id=args.parent,
                                where=args.where, order_by=args.sort,
                                columns=columns.metric_columns(args.columns))
    if args.json or args.format == "json":
        _print_json([run_to_json(r, counted=False) for r in runs])
        return 0
    if args.quiet:
        _out().write(table.printable("".join(r.run_id + "\n" for r in runs), "\n"))
        return 0
    if args.format == "csv":
        _out().write(table.printable(columns.runs_csv(runs, args.columns), "\n"))
        return 0
    if not runs:
        print("no runs match", file=sys.stderr)
        return 0
    _out().write(_runs_table(runs, args.columns) + "\n")
    return 0


def _runs_table(runs: list[RunInfo], extra: list[str]) -> str:
    with_parent = any(r.parent_run_id for r in runs)
    headers = list(columns.BASE_HEADERS)
    headers += ["PARENT"] if with_parent else []
    headers += [c.upper() for c in extra]
    rows = []
    for run in runs:
        row = columns.base_row(run)
        row += [run.parent_run_id or None] if with_parent else []
        row += [columns.shown(columns.column_value(run, c)) for c in extra]
        rows.append([*row, table.shorten(_tags_text(run.tags), 50) or None])
    return table.render_table([*headers, "TAGS"], rows)


def _tags_text(tags: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" if v else k for k, v in sorted(tags.items()))


def cmd_show(args: argparse.Namespace) -> int:
    with connect(args.collector, security=security_from_args(args)) as client:
        run = client.get_run(args.run_id)
    if args.json:
        _print_json(run_to_json(run))
        return 0
    _out().write(table.render_fields(run_fields(run)) + "\n")
    return 0


def _last_delivery(run: RunInfo) -> str | None:
    """When the collector last stored a record of the run: a running run whose agent
    cannot reach the collector shows it here."""
    if not run.last_delivery_unix_nano:
        return None
    ago = max(0, time.time_ns() - run.last_delivery_unix_nano) // 1_000_000_000
    return f"{table.local_time(run.last_delivery_unix_nano)} ({ago} s ago)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _lines(items: Iterable[str]) -> str | None:
    """One line per item, a line break inside one shown as ``\\n`` (not a line of its own)."""
    return "\n".join(table.printable(item) for item in items) or None


def run_fields(run: RunInfo) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        ("Run", run.run_id), ("Experiment", run.experiment),
        ("Name", run.display_name or None), ("Type", run.run_type or None),
        ("Status", run.status),
        ("Started", table.local_time(run.start_time_unix_nano)),
        ("Ended", table.local_time(run.end_time_unix_nano)),
        ("Duration", table.run_duration(run.start_time_unix_nano, run.end_time_unix_nano)),
        ("Delivered", _last_delivery(run)),  # last record stored
        ("Parent", run.parent_run_id or None),
        ("Children", _lines(run.child_run_ids)),
        ("Tags", _lines(f"{k}={v}" for k, v in sorted(run.tags.items()))),
        ("Properties", _lines(f"{k}={v}" for k, v in sorted(run.properties.items()))),
        ("Records", f"{_count(run.metric_records, 'metric record')}, "
                    f"{_count(run.log_lines, 'log line')}, {_count(run.artifacts, 'artifact')}"),
    ]
    if run.error is not None:
        fields.append(("Error", run.error.summary()))
        more = run.error.message.strip().splitlines()[1:]
        if more and more[0].strip() in (STDERR_HEADER, ""):
            fields.append(("Stderr", "\n".join(more[1:]) or None))
        elif more:
            fields.append(("Message", "\n".join(more)))
        if run.error.traceback:
            fields.append(("Traceback", run.error.traceback.rstrip()))
    return fields


# ---- metrics ------------------------------------------------------------------------


def cmd_metrics(args: argparse.Namespace) -> int:
    form = "json" if args.json else args.format
    with connect(args.collector, security=security_from_args(args)) as client:
        client.get_run(args.run_id)  # an unknown run is an error, not "no metrics"
        pages = client.read_series(args.run_id, args.name, values_only=form == "json")
        first = next(pages, None)
        if args.name and first is None:
            names = [page.name for page in client.read_series(args.run_id, buckets=1)]
            raise MetricNotFound(
                f"run {args.run_id!r} has no metric {args.name!r}; "
                f"its metrics: {', '.join(names) if names else 'none'}")
        stream: Iterator[Any] = itertools.chain([first], pages) if first is not None else iter(())
        if form == "json":
            write_json(stream, _out())
            return 0
        if form == "csv":
            write_csv(stream, _out())
            return 0
        records = [record for page in stream for record in page_records(page)]
    if args.name:
        _out().write(_metric_detail(records) + "\n")
    elif records:
        _out().write(metrics_table(records) + "\n")
    else:
        print(f"run {args.run_id} has no metrics", file=sys.stderr)
    return 0


def metrics_table(records: list[Any]) -> str:
    by_name: dict[str, list[Any]] = {}
    for rec in records:
        by_name.setdefault(rec.metric.name, []).append(rec)
    folded = fold_metrics(records)
    rows = []
    for name, recs in by_name.items():
        kinds = sorted({metric_kind(r.metric) for r in recs})
        value = folded[name]
        if kinds == ["scalar"] and len(recs) > 1:
            shown = f"{table.compact_json(value[-1])} (latest of {len(recs)})"
        else:
            shown = table.shorten(table.compact_json(value), 70)
        rows.append([name, ",".join(kinds), len(recs), shown])
    return table.render_table(["NAME", "KIND", "COUNT", "VALUE"], rows)


def _metric_detail(records: list[Any]) -> str:
    kinds = {metric_kind(r.metric) for r in records}
    if kinds == {"scalar"}:
        rows = [[i, r.metric.scalar.step if r.metric.scalar.HasField("step") else None,
                 table.local_time(r.time_unix_nano), table.compact_json(metric_to_python(r.metric))]
                for i, r in enumerate(records)]
        return table.render_table(["#", "STEP", "TIME", "VALUE"], rows)
    value = next(iter(fold_metrics(records).values()))
    if kinds <= {"row", "table"} and isinstance(value, dict):
        columns = list(value)
        cols = [v if isinstance(v, list) else [v] for v in value.values()]
        return table.render_table(columns, [list(r) for r in zip(*cols, strict=False)])
    return table.printable(json.dumps(value, indent=2, ensure_ascii=False, default=str),
                           json_text=True)


# ---- artifacts ------------------------------------------------------------------------


def artifact_to_json(info: ArtifactInfo) -> dict[str, Any]:
    return {"path": info.path, "size": info.size, "sha256": info.sha256,
            "content_type": info.content_type, "time": table.iso_time(info.time_unix_nano)}


def cmd_artifacts(args: argparse.Namespace) -> int:
    if args.output and not args.download:
        raise PermanentError("--output needs --download PATH (the artifact to write)")
    with connect(args.collector, security=security_from_args(args)) as client:
        if args.download:
            return _download(client, args)
        artifacts = client.list_artifacts(args.run_id)
        if not artifacts:
            client.get_run(args.run_id)  # no artifacts, or no run?
    if args.json:
        _print_json([artifact_to_json(a) for a in artifacts])
    elif artifacts:
        rows = [[a.path, table.human_size(a.size), a.sha256[:12], a.content_type or None,
                 table.local_time(a.time_unix_nano)] for a in artifacts]
        _out().write(table.render_table(["PATH", "SIZE", "SHA256", "TYPE", "TIME"], rows) + "\n")
    else:
        print(f"run {args.run_id} has no artifacts", file=sys.stderr)
    return 0


def _download(client: QueryClient, args: argparse.Namespace) -> int:
    dest = Path(args.output) if args.output else Path(Path(args.download).name)
    progress = Progress(f"downloading {table.printable(args.download)}")

    def advance(info: ArtifactInfo, n: int) -> None:
        progress.total = info.size
        progress.advance(n)

    info = client.download_artifact(args.run_id, args.download, dest, on_data=advance)
    progress.done()
    written = dest / Path(args.download).name if dest.is_dir() else dest
    if args.json:
        _print_json({**artifact_to_json(info), "output": str(written)})
    else:
        _out().write(f"downloaded {table.printable(info.path)} ({table.human_size(info.size)}, "
                     f"sha256 {info.sha256[:12]}) to {table.printable(str(written))}\n")
    return 0


# The names `mltrail run`'s summary (sdk/cli/run.py) imported before they were public.
_metrics_table = metrics_table
_run_fields = run_fields
