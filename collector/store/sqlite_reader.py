"""The SQLite read path: queries on a read-only connection, answered as mltrail.v1 messages.

A log chunk row holds ``line_count`` lines starting at ``first_line``; "lines
N..M of stream S" reads the chunk containing N (the greatest first_line <= N)
and every chunk after it that starts before M, through the unique index on
(stream_key, first_line), and cuts the ends off in Python.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from mltrail.collector.store.base import (
    DEFAULT_RUN_PAGE,
    DEFAULT_WORKSPACE,
    MAX_RUN_PAGE,
    LogQuery,
    bucket_summary,
    metric_records,
    run_page_after,
)
from mltrail.collector.store.log_reads import read_logs
from mltrail.collector.store.series import Bucket, SeriesQuery, SeriesRecord, StoredChunk
from mltrail.collector.store.sqlite_chunks import (
    SUMMARY_COLUMNS,
    stored_chunk,
    summary_of,
)
from mltrail.collector.store.sqlite_schema import CHUNK_ENCODED, CHUNK_SCALAR
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2

_IN_BATCH = 500  # run ids per IN (...) list, under SQLite's variable limit
_SUMMARY_OF_C = ", ".join(f"c.{column.strip()}" for column in SUMMARY_COLUMNS.split(","))
# Below this many runs with a tag, listing by it sorts the matches instead of walking
# every run in start order until a page is full.
RARE_TAG = 2000
_RUN_COLUMNS = ("run_key, run_id, experiment, display_name, status, start_time, end_time, "
                "parent_run_id, run_type, error, workspace, last_write")


class SqliteReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn
    def ping(self) -> None:
        """Read the database header (the readiness check)."""
        self._conn.execute("PRAGMA schema_version").fetchone()

    # ---- runs -----------------------------------------------------------------

    def list_runs(self, request: collector_pb2.ListRunsRequest,
                  workspace: str = DEFAULT_WORKSPACE) -> list[collector_pb2.RunInfo]:
        """One query for the page of ``workspace`` (filters through the experiment and
        tag indexes), then one each for its tags, properties and children. A filter by a
        rare tag (under RARE_TAG runs) drives the query from the tag index: walking the
        runs in start order would probe every run for it (80 ms among 100,000)."""
        rare = self._rare_tag(request)
        plus = "+" if rare else ""  # a unary plus keeps SQLite off that column's index
        where, params = [f"{plus}workspace = ?"], [workspace]  # type: list[str], list[Any]
        for column, wanted in (("experiment", request.experiment), ("status", request.status),
                               ("parent_run_id", request.parent_run_id)):
            if wanted:
                where.append(f"{plus}{column} = ?")
                params.append(wanted)
        for key, value in sorted(request.tags.items()):
            where.append("run_key IN (SELECT run_key FROM run_tags WHERE key = ?"
                         + (" AND value = ?)" if value else ")"))
            params.extend([key, value] if value else [key])
        after = run_page_after(request.page_token)
        if after is not None:
            where.append("(start_time < ? OR (start_time = ? AND run_id < ?))")
            params.extend([after[0], after[0], after[1]])
        params.append(min(request.limit or DEFAULT_RUN_PAGE, MAX_RUN_PAGE))
        rows = self._conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} "
            "ORDER BY start_time DESC, run_id DESC LIMIT ?", params).fetchall()
        return self._run_infos(rows)

    def _rare_tag(self, request: collector_pb2.ListRunsRequest) -> bool:
        """Whether a tag filter of ``request`` matches fewer than RARE_TAG runs (in any
        workspace: an upper bound, from the tag index alone)."""
        for key, value in request.tags.items():
            sql = ("SELECT 1 FROM run_tags WHERE key = ?" + (" AND value = ?" if value else "")
                   + " LIMIT ?")
            found = self._conn.execute(sql, [key, *([value] if value else []), RARE_TAG])
            if len(found.fetchall()) < RARE_TAG:
                return True
        return False

    def _run_infos(self, rows: list[tuple[Any, ...]]) -> list[collector_pb2.RunInfo]:
        infos = {row[0]: _run_info(row) for row in rows}
        if not infos:
            return []
        marks = ", ".join("?" * len(infos))
        keys = list(infos)
        conn = self._conn
        for run_key, key, value in conn.execute(
                f"SELECT run_key, key, value FROM run_tags WHERE run_key IN ({marks})", keys):
            infos[run_key].tags[key] = value
        for run_key, key, value in conn.execute(
                f"SELECT run_key, key, value FROM run_properties WHERE run_key IN ({marks})",
                keys):
            infos[run_key].properties[key] = value
        by_id = {info.run_id: info for info in infos.values()}
        for parent, child in conn.execute(
                f"SELECT parent_run_id, run_id FROM runs WHERE parent_run_id IN ({marks}) "
                "AND +workspace = ? ORDER BY run_key", [*by_id, rows[0][10]]):  # by parent
            by_id[parent].child_run_ids.append(child)
        return list(infos.values())

    def get_run(self, run_id: str, workspace: str = DEFAULT_WORKSPACE, counts: bool = True
                ) -> collector_pb2.RunInfo | None:
        row = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ? AND "
                                 "workspace = ?", (run_id, workspace)).fetchone()
        if row is None:
            return None
        info = self._run_infos([row])[0]
        if counts:
            self._add_counts(info, row[0])
        return info

    def run_status(self, run_id: str, workspace: str = DEFAULT_WORKSPACE) -> int | None:
        row = self._conn.execute("SELECT status FROM runs WHERE run_id = ? AND workspace = ?",
                                 (run_id, workspace)).fetchone()
        return None if row is None else int(row[0])

    def run_key(self, run_id: str) -> int | None:
        row = self._conn.execute("SELECT run_key FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        return None if row is None else int(row[0])

    def _add_counts(self, info: collector_pb2.RunInfo, run_key: int) -> None:
        """For one run only: counting its metrics scans the run's whole metric index,
        too slow for every run of a listing, so ListRuns leaves the counts 0."""
        conn = self._conn
        info.metric_records = conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM metric_chunks WHERE run_key = ?",
            (run_key,)).fetchone()[0]
        info.log_lines = conn.execute(
            "SELECT COALESCE(SUM(next_line), 0) FROM log_streams WHERE run_key = ?",
            (run_key,)).fetchone()[0]
        info.artifacts = conn.execute(
            "SELECT COUNT(*) FROM artifacts WHERE run_key = ?", (run_key,)).fetchone()[0]

    # ---- metrics --------------------------------------------------------------

    def series_names(self, run_id: str, name: str) -> list[tuple[int, int, str]]:
        """(run_key, name_key, name) of the run's metrics (``name`` "": all), by name."""
        sql = ("SELECT r.run_key, n.name_key, n.name FROM runs r JOIN metric_names n "
               "WHERE r.run_id = ? AND EXISTS (SELECT 1 FROM metric_chunks c WHERE "
               "c.run_key = r.run_key AND c.name_key = n.name_key)")
        params: list[Any] = [run_id]
        if name:
            sql += " AND n.name = ?"
            params.append(name)
        return sorted(self._conn.execute(sql, params).fetchall(), key=lambda r: r[2])

    def chunk_page(self, run_key: int, name_key: int, after: int, limit: int,
                   query: SeriesQuery, with_data: bool = True) -> list[StoredChunk]:
        """Up to ``limit`` pieces of a series past rowid ``after`` that may hold points of
        the query's ranges (the summaries decide; series.py trims)."""
        where, params = ["run_key = ?", "name_key = ?", "rowid > ?"], [run_key, name_key, after]
        if query.step_min is not None or query.step_max is not None:
            where.append(f"kind = {CHUNK_SCALAR} AND max_step >= ? AND min_step <= ?")
            params += [_low(query.step_min), _high(query.step_max)]
        if query.time_min is not None or query.time_max is not None:
            where.append("max_time >= ? AND min_time <= ?")
            params += [_low(query.time_min), _high(query.time_max)]
        if query.buckets:
            where.append(f"kind = {CHUNK_SCALAR}")
        data = "data" if with_data else "NULL"
        rows = self._conn.execute(
            f"SELECT rowid, kind, {SUMMARY_COLUMNS}, {data} FROM metric_chunks "
            f"WHERE {' AND '.join(where)} ORDER BY rowid LIMIT ?", (*params, limit))
        return [stored_chunk(row) for row in rows]

    def other_metrics(self, run_id: str) -> list[collector_pb2.MetricRecord]:
        return other_metric_records(self._conn, run_id)

    def has_records(self, run_key: int, name_key: int, query: SeriesQuery) -> bool:
        """Whether the series has a record of another kind in the query's ranges."""
        if query.step_min is not None or query.step_max is not None:
            return False  # such records have no step
        row = self._conn.execute(
            f"SELECT 1 FROM metric_chunks WHERE run_key = ? AND name_key = ? AND kind = "
            f"{CHUNK_ENCODED} AND max_time >= ? AND min_time <= ? LIMIT 1",
            (run_key, name_key, _low(query.time_min), _high(query.time_max))).fetchone()
        return row is not None

    def chunk_data(self, rowid: int) -> bytes:
        row = self._conn.execute("SELECT data FROM metric_chunks WHERE rowid = ?",
                                 (rowid,)).fetchone()
        if row is None:  # a series is only ever appended to; a missing row is damage
            raise PermanentError(f"metric chunk {rowid} vanished from the store while read")
        return bytes(row[0])

    def metric_summaries(self, run_ids: Sequence[str], names: Sequence[str] | None
                         ) -> dict[str, dict[str, collector_pb2.MetricSummary]]:
        """One pass over the runs' scalar chunk summaries (no chunk is decoded)."""
        out: dict[str, dict[str, collector_pb2.MetricSummary]] = {}
        wanted = set(names) if names is not None else None
        for start in range(0, len(run_ids), _IN_BATCH):
            part = list(run_ids[start:start + _IN_BATCH])
            rows = self._conn.execute(
                f"SELECT r.run_id, n.name, {_SUMMARY_OF_C} FROM runs r JOIN metric_chunks c "
                "ON c.run_key = r.run_key JOIN metric_names n ON n.name_key = c.name_key "
                f"WHERE r.run_id IN ({', '.join('?' * len(part))}) AND c.kind = "
                f"{CHUNK_SCALAR} ORDER BY c.rowid", part)
            gathered: dict[tuple[str, str], list[Bucket]] = {}
            for row in rows:
                if wanted is not None and row[1] not in wanted:
                    continue
                summary = summary_of(row[2:])
                gathered.setdefault((row[0], row[1]), []).append(Bucket(
                    summary.count, summary.first_step, summary.last_step, summary.first_time,
                    summary.last_time, summary.first_value, summary.last_value,
                    summary.min_value, summary.max_value))
            for (run_id, name), buckets in gathered.items():
                found = bucket_summary(buckets)
                if found is not None:
                    out.setdefault(run_id, {})[name] = found
        return out

    # ---- logs -----------------------------------------------------------------

    def log_positions(self, run_id: str) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT s.name, s.next_line FROM log_streams s JOIN runs r ON r.run_key = s.run_key "
            "WHERE r.run_id = ?", (run_id,)).fetchall()
        return {name: int(n) for name, n in rows}

    def read_logs(self, query: LogQuery) -> list[collector_pb2.LogLine]:
        return read_logs(self._conn, "?", query, query.run_id)

    # ---- artifacts --------------------------------------------------------------

    def list_artifacts(self, run_id: str, after: str = "", limit: int = 0
                       ) -> list[collector_pb2.ArtifactInfo]:
        rows = self._conn.execute(
            "SELECT a.path, a.size, a.sha256, a.content_type, a.time FROM artifacts a "
            "JOIN runs r ON r.run_key = a.run_key WHERE r.run_id = ? AND a.path > ? "
            "ORDER BY a.path LIMIT ?", (run_id, after, limit or -1)).fetchall()
        return [_artifact_info(row) for row in rows]

    def get_artifact(self, run_id: str, path: str) -> collector_pb2.ArtifactInfo | None:
        row = self._conn.execute(
            "SELECT a.path, a.size, a.sha256, a.content_type, a.time FROM artifacts a "
            "JOIN runs r ON r.run_key = a.run_key WHERE r.run_id = ? AND a.path = ?",
            (run_id, path)).fetchone()
        return None if row is None else _artifact_info(row)


def other_metric_records(conn: Any, run_id: str, mark: str = "?", order: str = "c.rowid"
                         ) -> list[collector_pb2.MetricRecord]:
    """The run's records of the rare kinds, without touching its scalar chunks (both
    stores: ``mark`` is the driver's placeholder, ``order`` the logged order)."""
    rows = conn.execute(
        "SELECT n.name, c.first_time, c.data FROM metric_chunks c JOIN runs r ON "
        "r.run_key = c.run_key JOIN metric_names n ON n.name_key = c.name_key WHERE "
        f"r.run_id = {mark} AND c.kind = {CHUNK_ENCODED} ORDER BY n.name, {order}",
        (run_id,)).fetchall()
    return list(metric_records(SeriesRecord(name, int(time_ns), bytes(data))
                               for name, time_ns, data in rows))


def _run_info(row: tuple[Any, ...]) -> collector_pb2.RunInfo:
    """A runs row of ``_RUN_COLUMNS`` (PostgreSQL's has the same columns)."""
    info = collector_pb2.RunInfo(
        run_id=row[1], experiment=row[2], display_name=row[3], status=row[4],
        start_time_unix_nano=row[5], end_time_unix_nano=row[6], parent_run_id=row[7],
        run_type=row[8], last_delivery_unix_nano=row[-1])  # last column: last_write
    if row[9]:
        info.error.ParseFromString(row[9])
    return info


def _artifact_info(row: tuple[Any, ...]) -> collector_pb2.ArtifactInfo:
    return collector_pb2.ArtifactInfo(path=row[0], size=row[1], sha256=row[2],
                                      content_type=row[3], time_unix_nano=row[4])


def _low(value: int | None) -> int:
    return -(2 ** 63) if value is None else value


def _high(value: int | None) -> int:
    return 2 ** 63 - 1 if value is None else value
