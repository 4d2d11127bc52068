"""Deleting runs from a SQLite store (``mltrail delete``): rows, then unshared files.

Inside the writer's transaction: every row of the runs (metrics, log streams
and chunks, artifacts and upload pieces, tags, properties, the run), then,
after the commit, each artifact file no other run still refers to (files are
content-addressed, so two runs may share one). Stream marks stay: a replay of
a deleted run's records is skipped as a duplicate rather than bringing it back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mltrail.proto import collector_pb2

# Tables keyed by run_key, deleted in this order (the run last).
_RUN_TABLES = ("metric_chunks", "artifact_chunks", "artifacts", "run_tags", "run_properties")


def delete_run_rows(conn: sqlite3.Connection, run_ids: Sequence[str], workspace: str
                    ) -> tuple[collector_pb2.DeleteRunsResponse, set[str]]:
    """Delete the runs of ``workspace`` (in the caller's transaction; a run of another
    workspace is left as unknown); returns what was deleted and the sha256 of their
    artifacts, to be removed once no row refers to them."""
    answer = collector_pb2.DeleteRunsResponse()
    shas: set[str] = set()
    for run_id in dict.fromkeys(run_ids):
        row = conn.execute("SELECT run_key FROM runs WHERE run_id = ? AND workspace = ?",
                           (run_id, workspace)).fetchone()
        if row is None:
            continue
        run_key = row[0]
        answer.metric_records += conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM metric_chunks WHERE run_key = ?",
            (run_key,)).fetchone()[0]
        answer.log_lines += conn.execute(
            "SELECT COALESCE(SUM(next_line), 0) FROM log_streams WHERE run_key = ?",
            (run_key,)).fetchone()[0]
        found = conn.execute("SELECT sha256 FROM artifacts WHERE run_key = ?",
                             (run_key,)).fetchall()
        answer.artifacts += len(found)
        shas.update(sha for (sha,) in found)
        conn.execute("DELETE FROM log_chunks WHERE stream_key IN "
                     "(SELECT stream_key FROM log_streams WHERE run_key = ?)", (run_key,))
        conn.execute("DELETE FROM log_streams WHERE run_key = ?", (run_key,))
        for table in _RUN_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE run_key = ?", (run_key,))
        conn.execute("DELETE FROM runs WHERE run_key = ?", (run_key,))
        answer.deleted.append(run_id)
    return answer, shas


def unreferenced(conn: sqlite3.Connection, shas: set[str]) -> list[str]:
    """The sha256s no artifact row refers to any more (their files can go)."""
    return [sha for sha in sorted(shas) if conn.execute(
        "SELECT 1 FROM artifacts WHERE sha256 = ? LIMIT 1", (sha,)).fetchone() is None]
