"""Deleting runs (``mltrail delete``): rows, then the files no run refers to any more.

Inside one transaction: every row of the runs (metrics, log streams and
chunks, artifacts and upload pieces, tags, properties, the run); then, after
the commit, each artifact file no other run still refers to (files are
content-addressed, so two runs may share one). Stream marks stay: a replay of
a deleted run's records is skipped as a duplicate rather than bringing it back.
One function for both stores: ``mark`` is the driver's placeholder (SQLite
``?``, psycopg ``%s``), ``tables`` the store's tables keyed by run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mltrail.proto import collector_pb2

SQLITE_TABLES = ("metric_chunks", "artifact_chunks", "artifacts", "run_tags", "run_properties")
POSTGRES_TABLES = ("metric_chunks", "metric_series", *SQLITE_TABLES[1:])


def delete_run_rows(conn: Any, run_ids: Sequence[str], workspace: str, *, mark: str = "?",
                    tables: Sequence[str] = SQLITE_TABLES, lock: str = ""
                    ) -> tuple[collector_pb2.DeleteRunsResponse, set[str]]:
    """Delete the runs of ``workspace`` (in the caller's transaction; a run of another
    workspace is left as unknown); returns what was deleted and the sha256 of their
    artifacts, to be removed once no row refers to them. ``lock``: " FOR UPDATE"."""
    def one(sql: str, *args: Any) -> Any:
        return conn.execute(sql.replace("?", mark), args).fetchone()

    answer = collector_pb2.DeleteRunsResponse()
    shas: set[str] = set()
    for run_id in dict.fromkeys(run_ids):
        row = one(f"SELECT run_key FROM runs WHERE run_id = ? AND workspace = ?{lock}",
                  run_id, workspace)
        if row is None:
            continue
        run_key = row[0]
        answer.metric_records += int(one(
            "SELECT COALESCE(SUM(count), 0) FROM metric_chunks WHERE run_key = ?", run_key)[0])
        answer.log_lines += int(one(
            "SELECT COALESCE(SUM(next_line), 0) FROM log_streams WHERE run_key = ?",
            run_key)[0])
        found = conn.execute("SELECT sha256 FROM artifacts WHERE run_key = ?".replace("?", mark),
                             (run_key,)).fetchall()
        answer.artifacts += len(found)
        shas.update(sha for (sha,) in found)
        for sql in ("DELETE FROM log_chunks WHERE stream_key IN "
                    "(SELECT stream_key FROM log_streams WHERE run_key = ?)",
                    "DELETE FROM log_streams WHERE run_key = ?",
                    *(f"DELETE FROM {table} WHERE run_key = ?" for table in tables),
                    "DELETE FROM runs WHERE run_key = ?"):
            conn.execute(sql.replace("?", mark), (run_key,))
        answer.deleted.append(run_id)
    return answer, shas


def unreferenced(conn: Any, shas: set[str], mark: str = "?") -> list[str]:
    """The sha256s no artifact row refers to any more (their files can go)."""
    sql = f"SELECT 1 FROM artifacts WHERE sha256 = {mark} LIMIT 1"
    return [sha for sha in sorted(shas) if conn.execute(sql, (sha,)).fetchone() is None]
