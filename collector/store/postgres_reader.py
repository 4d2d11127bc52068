"""The PostgreSQL read path: the SQLite reader's queries in PostgreSQL's dialect.

Each call borrows a pooled connection in autocommit mode. A series is read
in pages of chunk rows by id (``chunk_page``), decoded by the shared code of
chunks.py and series.py. Log chunks are found as in SQLite: the chunk
holding line N (greatest first_line <= N) and the ones after it that start
before M, through the (stream_key, first_line) primary key.
"""

from __future__ import annotations

from typing import Any

from mltrail.collector.store.base import (
    DEFAULT_RUN_PAGE,
    DEFAULT_WORKSPACE,
    MAX_RUN_PAGE,
    LogQuery,
    run_page_after,
)
from mltrail.collector.store.log_reads import read_logs
from mltrail.collector.store.postgres_writer import clean
from mltrail.collector.store.series import SeriesQuery, StoredChunk
from mltrail.collector.store.sqlite_chunks import SUMMARY_COLUMNS, stored_chunk
from mltrail.collector.store.sqlite_reader import (
    _artifact_info,
    _high,
    _low,
    _run_info,
    other_metric_records,
)
from mltrail.collector.store.sqlite_schema import CHUNK_ENCODED, CHUNK_SCALAR
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2

_RUN_COLUMNS = ("run_key, run_id, experiment, display_name, status, start_time, end_time, "
                "parent_run_id, run_type, error, workspace, last_write")
_ARTIFACT_COLUMNS = "a.path, a.size, a.sha256, a.content_type, a.time"


class PostgresReader:
    """Queries on one connection (``conn``: a psycopg connection in autocommit mode)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def _all(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, params).fetchall())

    def _one(self, sql: str, params: Any = ()) -> tuple[Any, ...] | None:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    # ---- runs -----------------------------------------------------------------

    def list_runs(self, request: collector_pb2.ListRunsRequest,
                  workspace: str = DEFAULT_WORKSPACE) -> list[collector_pb2.RunInfo]:
        """One query for the page of ``workspace`` (filters through the experiment and
        tag indexes), then one each for its tags, properties and children."""
        where, params = ["workspace = %s"], [clean(workspace)]  # type: list[str], list[Any]
        for column, wanted in (("experiment", request.experiment), ("status", request.status),
                               ("parent_run_id", request.parent_run_id)):
            if wanted:
                where.append(f"{column} = %s")
                params.append(clean(wanted) if isinstance(wanted, str) else wanted)
        for key, value in sorted(request.tags.items()):
            where.append("run_key IN (SELECT run_key FROM run_tags WHERE key = %s"
                         + (" AND value = %s)" if value else ")"))
            params.extend([clean(key), clean(value)] if value else [clean(key)])
        after = run_page_after(request.page_token)
        if after is not None:
            where.append("(start_time < %s OR (start_time = %s AND run_id COLLATE \"C\" < %s))")
            params.extend([after[0], after[0], clean(after[1])])
        params.append(min(request.limit or DEFAULT_RUN_PAGE, MAX_RUN_PAGE))
        rows = self._all(f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} "
                         "ORDER BY start_time DESC, run_id COLLATE \"C\" DESC LIMIT %s", params)
        return self._run_infos(rows)

    def _run_infos(self, rows: list[tuple[Any, ...]]) -> list[collector_pb2.RunInfo]:
        infos = {row[0]: _run_info((*row[:9], bytes(row[9]) if row[9] else None,
                                      *row[10:]))
                 for row in rows}
        if not infos:
            return []
        keys = list(infos)
        for run_key, key, value in self._all(
                "SELECT run_key, key, value FROM run_tags WHERE run_key = ANY(%s)", (keys,)):
            infos[run_key].tags[key] = value
        for run_key, key, value in self._all(
                "SELECT run_key, key, value FROM run_properties WHERE run_key = ANY(%s)",
                (keys,)):
            infos[run_key].properties[key] = value
        by_id = {info.run_id: info for info in infos.values()}
        for parent, child in self._all(
                "SELECT parent_run_id, run_id FROM runs WHERE parent_run_id = ANY(%s) "
                "AND workspace = %s ORDER BY run_key", (list(by_id), rows[0][10])):
            by_id[parent].child_run_ids.append(child)
        return list(infos.values())

    def get_run(self, run_id: str, workspace: str = DEFAULT_WORKSPACE, counts: bool = True
                ) -> collector_pb2.RunInfo | None:
        row = self._one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = %s AND "
                        "workspace = %s", (clean(run_id), clean(workspace)))
        if row is None:
            return None
        info = self._run_infos([row])[0]
        if not counts:  # cheap, for polling
            return info
        run_key = row[0]
        info.metric_records = self._count(
            "SELECT COALESCE(SUM(count), 0) FROM metric_chunks WHERE run_key = %s", run_key)
        info.log_lines = self._count("SELECT COALESCE(SUM(next_line), 0) FROM log_streams "
                                     "WHERE run_key = %s", run_key)
        info.artifacts = self._count("SELECT COUNT(*) FROM artifacts WHERE run_key = %s",
                                     run_key)
        return info

    def _count(self, sql: str, run_key: int) -> int:
        row = self._one(sql, (run_key,))
        return int(row[0]) if row else 0

    def run_status(self, run_id: str, workspace: str = DEFAULT_WORKSPACE) -> int | None:
        row = self._one("SELECT status FROM runs WHERE run_id = %s AND workspace = %s",
                        (clean(run_id), clean(workspace)))
        return None if row is None else int(row[0])

    # ---- metrics --------------------------------------------------------------

    def series_names(self, run_id: str, name: str) -> list[tuple[int, int, str]]:
        """(run_key, name_key, name) of the run's metrics (``name`` "": all), by name."""
        sql = ("SELECT r.run_key, n.name_key, n.name FROM runs r JOIN metric_series s ON "
               "s.run_key = r.run_key JOIN metric_names n ON n.name_key = s.name_key "
               "WHERE r.run_id = %s")
        params: list[Any] = [clean(run_id)]
        if name:
            sql += " AND n.name = %s"
            params.append(clean(name))
        return sorted(self._all(sql, params), key=lambda r: r[2])

    def chunk_page(self, run_key: int, name_key: int, after: int, limit: int,
                   query: SeriesQuery, with_data: bool = True) -> list[StoredChunk]:
        """Up to ``limit`` pieces of a series past id ``after`` that may hold points of
        the query's ranges (the summaries decide; series.py trims)."""
        where, params = ["run_key = %s", "name_key = %s", "id > %s"], [run_key, name_key, after]
        if query.step_min is not None or query.step_max is not None:
            where.append(f"kind = {CHUNK_SCALAR} AND max_step >= %s AND min_step <= %s")
            params += [_low(query.step_min), _high(query.step_max)]
        if query.time_min is not None or query.time_max is not None:
            where.append("max_time >= %s AND min_time <= %s")
            params += [_low(query.time_min), _high(query.time_max)]
        if query.buckets:
            where.append(f"kind = {CHUNK_SCALAR}")
        data = "data" if with_data else "NULL"
        rows = self._all(f"SELECT id, kind, {SUMMARY_COLUMNS}, {data} FROM metric_chunks "
                         f"WHERE {' AND '.join(where)} ORDER BY id LIMIT %s", (*params, limit))
        return [stored_chunk(row) for row in rows]

    def other_metrics(self, run_id: str) -> list[collector_pb2.MetricRecord]:
        return other_metric_records(self._conn, clean(run_id), "%s", "c.id")

    def has_records(self, run_key: int, name_key: int, query: SeriesQuery) -> bool:
        """Whether the series has a record of another kind in the query's ranges."""
        if query.step_min is not None or query.step_max is not None:
            return False  # such records have no step
        return self._one(
            f"SELECT 1 FROM metric_chunks WHERE run_key = %s AND name_key = %s AND kind = "
            f"{CHUNK_ENCODED} AND max_time >= %s AND min_time <= %s LIMIT 1",
            (run_key, name_key, _low(query.time_min), _high(query.time_max))) is not None

    def chunk_data(self, key: int) -> bytes:
        row = self._one("SELECT data FROM metric_chunks WHERE id = %s", (key,))
        if row is None:  # a series is only ever appended to; a missing row is damage
            raise PermanentError(f"metric chunk {key} vanished from the store while read")
        return bytes(row[0])

    # ---- logs -----------------------------------------------------------------

    def log_positions(self, run_id: str) -> dict[str, int]:
        rows = self._all("SELECT s.name, s.next_line FROM log_streams s JOIN runs r ON "
                         "r.run_key = s.run_key WHERE r.run_id = %s", (clean(run_id),))
        return {name: int(n) for name, n in rows}

    def read_logs(self, query: LogQuery) -> list[collector_pb2.LogLine]:
        return read_logs(self._conn, "%s", query, clean(query.run_id))

    # ---- artifacts --------------------------------------------------------------

    def list_artifacts(self, run_id: str, after: str = "", limit: int = 0
                       ) -> list[collector_pb2.ArtifactInfo]:
        rows = self._all(f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts a JOIN runs r ON "
                         "r.run_key = a.run_key WHERE r.run_id = %s AND a.path COLLATE \"C\" > %s "
                         "ORDER BY a.path COLLATE \"C\" LIMIT %s",
                         (clean(run_id), clean(after), limit or None))
        return [_artifact_info(row) for row in rows]

    def get_artifact(self, run_id: str, path: str) -> collector_pb2.ArtifactInfo | None:
        row = self._one(f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts a JOIN runs r ON "
                        "r.run_key = a.run_key WHERE r.run_id = %s AND a.path = %s",
                        (clean(run_id), clean(path)))
        return None if row is None else _artifact_info(row)


