"""``mltrail store copy SRC DST``: move a history from a SQLite store to another store."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from mltrail.collector.artifacts import open_artifacts
from mltrail.collector.settings import CollectorSettings
from mltrail.collector.store import Store, open_store, redact_url
from mltrail.collector.store.copy import copy_store
from mltrail.common.errors import PermanentError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "store", help="manage stores (copy a SQLite store into PostgreSQL)",
        description="Manage collector stores.")
    sub = p.add_subparsers(dest="store_command", metavar="COMMAND", required=True)
    copy = sub.add_parser(
        "copy", help="copy every run of a SQLite store (and its artifacts) into another store",
        description="Copy every run, metric, log line and artifact of the SQLite store SRC "
                    "into the store DST (for example postgresql://...), with their "
                    "artifacts. Resumable and idempotent: run it again after an interruption; "
                    "nothing is stored twice. Stop the collectors of SRC first.")
    copy.add_argument("source", metavar="SRC", help="sqlite:///PATH")
    copy.add_argument("destination", metavar="DST", help="store URL, e.g. postgresql://...")
    copy.add_argument("--from-artifacts", help="artifact store of SRC (default "
                                               "$MLTRAIL_HOME/collector/artifacts)")
    copy.add_argument("--to-artifacts", help="artifact store of DST: a directory or "
                                             "s3://BUCKET/PREFIX[?endpoint=URL] (default: "
                                             "the same as --from-artifacts)")
    copy.set_defaults(func=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    if not args.source.startswith("sqlite:///"):
        raise PermanentError(f"store copy reads a SQLite store: SRC must be sqlite:///PATH, "
                             f"not {redact_url(args.source)!r}")
    defaults = CollectorSettings().resolved()
    src_artifacts = open_artifacts(args.from_artifacts or defaults.artifacts)
    dst_artifacts = open_artifacts(args.to_artifacts or src_artifacts.url)
    dst_artifacts.prepare()
    source = open_store(args.source, src_artifacts)
    try:
        destination = open_store(args.destination, dst_artifacts)
        try:
            report = copy_store(source, args.source[len("sqlite:///"):], src_artifacts,
                                destination,
                                lambda marks, workspace: _import_marks(destination, marks,
                                                                       workspace),
                                progress=lambda line: print(line, file=sys.stderr))
        finally:
            destination.close()
    finally:
        source.close()
    print(f"copied {report.runs} runs into {redact_url(args.destination)}: "
          f"{report.stored} records stored, {report.skipped} already there; "
          f"{report.marks} stream marks carried over")
    if report.mismatches:
        print("counts differ after the copy (nothing was removed; run the copy again):\n  "
              + "\n  ".join(report.mismatches), file=sys.stderr)
        return 1
    print("counts verified: every run has the same metrics, log lines and artifacts")
    return 0


def _import_marks(destination: Store, marks: dict[str, int], workspace: str) -> None:
    """The source's stream marks of ``workspace``, kept where the destination's are lower."""
    importer = getattr(destination, "import_marks", None)
    if importer is not None:
        importer(marks, workspace)
        return
    path = getattr(destination, "path", None)
    if path is None:
        raise PermanentError("the destination store cannot take stream marks")
    with sqlite3.connect(path, timeout=30) as conn:
        conn.executemany("INSERT INTO streams (workspace, stream_id, hwm) VALUES (?, ?, ?) "
                         "ON CONFLICT(workspace, stream_id) DO UPDATE SET "
                         "hwm = MAX(hwm, excluded.hwm)",
                         [(workspace, sid, hwm) for sid, hwm in marks.items()])
