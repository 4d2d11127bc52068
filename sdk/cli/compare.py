"""``mltrail compare RUN RUN ...``: runs side by side, differences marked.

One row per field, tag, property and metric (its latest, min and max over
numeric scalar values, as the collector summarizes them); a row whose values
differ between the runs starts with ``*``. ``--json`` gives the same rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mltrail.cli import table
from mltrail.cli.connection import add_security_flags, security_from_args
from mltrail.cli.target import connect
from mltrail.common.errors import PermanentError
from mltrail.query.types import MetricSummary, RunInfo

DIFFERS = "*"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare", help="show runs side by side: tags, properties, metrics",
        description="Runs side by side: status, tags, properties and each metric's latest, "
                    "min and max; rows that differ start with '*'.")
    p.add_argument("run_ids", metavar="RUN", nargs="+", help="two or more runs")
    p.add_argument("--collector", metavar="HOST:PORT",
                   help="collector to ask (default: MLTRAIL_COLLECTOR, else the local one)")
    add_security_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--differences", action="store_true", help="only the rows that differ")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.run_ids) < 2:
        raise PermanentError("compare needs two or more runs: mltrail compare RUN RUN ...")
    with connect(args.collector, security=security_from_args(args)) as client:
        runs = [client.get_run(run_id) for run_id in args.run_ids]
    rows = compare_rows(runs)
    if args.differences:
        rows = [r for r in rows if r["differs"]]
    if args.json:
        print(json.dumps({"runs": args.run_ids, "rows": rows}, indent=2, default=str))
        return 0
    cells = [[DIFFERS if r["differs"] else "", r["key"],
              *(_cell(v) for v in r["values"])] for r in rows]
    sys.stdout.write(table.render_table(["", "KEY", *args.run_ids], cells) + "\n")
    return 0


def compare_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(key: str, values: list[Any]) -> None:
        rows.append({"key": key, "values": values,
                     "differs": len({json.dumps(v, default=str) for v in values}) > 1})

    add("experiment", [r.experiment for r in runs])
    add("name", [r.display_name or None for r in runs])
    add("status", [r.status for r in runs])
    add("duration", [table.run_duration(r.start_time_unix_nano, r.end_time_unix_nano)
                     for r in runs])
    for space in ("tags", "properties"):
        keys = sorted({k for r in runs for k in getattr(r, space)})
        for key in keys:
            add(f"{space}.{key}", [getattr(r, space).get(key) for r in runs])
    for name in sorted({n for r in runs for n in r.metrics}):
        add(name, [_summary(r.metrics.get(name)) for r in runs])
    return rows


def _summary(summary: MetricSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {"latest": summary.latest, "min": summary.min, "max": summary.max,
            "count": summary.count}


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        if value["count"] == 1:
            return f"{value['latest']:.6g}"
        return (f"{value['latest']:.6g} (min {value['min']:.6g}, max {value['max']:.6g}, "
                f"{value['count']} values)")
    return value
