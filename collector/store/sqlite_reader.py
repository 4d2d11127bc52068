"""The SQLite read path: queries on a read-only connection, answered as mltrail.v1 messages.

A log chunk row holds ``line_count`` lines starting at ``first_line``; "lines
N..M of stream S" reads the chunk containing N (the greatest first_line <= N)
and every chunk after it that starts before M, through the unique index on
(stream_key, first_line), and cuts the ends off in Python.
"""

from __future__ import annotations

import math
import sqlite3
from array import array
from typing import Any

from mltrail.collector.store import sqlite_schema as schema
from mltrail.collector.store.base import LogQuery
from mltrail.proto import collector_pb2, records_pb2

DEFAULT_RUN_LIMIT = 100

_RUN_COLUMNS = ("run_key, run_id, experiment, display_name, status, start_time, end_time, "
                "parent_run_id, run_type, error, last_write")


class SqliteReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # ---- runs -----------------------------------------------------------------

    def list_runs(self, request: collector_pb2.ListRunsRequest) -> list[collector_pb2.RunInfo]:
        where, params = ["1 = 1"], []
        for column, wanted in (("experiment", request.experiment), ("status", request.status),
                               ("parent_run_id", request.parent_run_id)):
            if wanted:
                where.append(f"{column} = ?")
                params.append(wanted)
        for key, value in sorted(request.tags.items()):
            where.append("EXISTS (SELECT 1 FROM run_tags t WHERE t.run_key = runs.run_key "
                         "AND t.key = ?" + (" AND t.value = ?)" if value else ")"))
            params.extend([key, value] if value else [key])
        params.append(request.limit or DEFAULT_RUN_LIMIT)
        rows = self._conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} "
            "ORDER BY start_time DESC, run_key DESC LIMIT ?", params).fetchall()
        return [self._run_info(row) for row in rows]

    def get_run(self, run_id: str) -> collector_pb2.RunInfo | None:
        row = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        if row is None:
            return None
        info = self._run_info(row)
        self._add_counts(info, row[0])
        return info

    def run_status(self, run_id: str) -> int | None:
        row = self._conn.execute("SELECT status FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        return None if row is None else int(row[0])

    def run_key(self, run_id: str) -> int | None:
        row = self._conn.execute("SELECT run_key FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        return None if row is None else int(row[0])

    def _run_info(self, row: tuple[Any, ...]) -> collector_pb2.RunInfo:
        conn = self._conn
        run_key = row[0]
        info = collector_pb2.RunInfo(
            run_id=row[1], experiment=row[2], display_name=row[3], status=row[4],
            start_time_unix_nano=row[5], end_time_unix_nano=row[6], parent_run_id=row[7],
            run_type=row[8], last_delivery_unix_nano=row[10])
        if row[9]:
            info.error.ParseFromString(row[9])
        info.tags.update(conn.execute("SELECT key, value FROM run_tags WHERE run_key = ?",
                                      (run_key,)).fetchall())
        info.properties.update(conn.execute(
            "SELECT key, value FROM run_properties WHERE run_key = ?", (run_key,)).fetchall())
        info.child_run_ids.extend(r[0] for r in conn.execute(
            "SELECT run_id FROM runs WHERE parent_run_id = ? ORDER BY run_key", (row[1],)))
        return info

    def _add_counts(self, info: collector_pb2.RunInfo, run_key: int) -> None:
        """For one run only: counting its metrics scans the run's whole metric index,
        too slow for every run of a listing, so ListRuns leaves the counts 0."""
        conn = self._conn
        info.metric_records = conn.execute(
            "SELECT COUNT(*) FROM metrics WHERE run_key = ?", (run_key,)).fetchone()[0]
        info.log_lines = conn.execute(
            "SELECT COALESCE(SUM(next_line), 0) FROM log_streams WHERE run_key = ?",
            (run_key,)).fetchone()[0]
        info.artifacts = conn.execute(
            "SELECT COUNT(*) FROM artifacts WHERE run_key = ?", (run_key,)).fetchone()[0]

    # ---- metrics --------------------------------------------------------------

    def get_metrics(self, run_id: str, name: str) -> list[collector_pb2.MetricRecord]:
        run_key = self.run_key(run_id)
        if run_key is None:
            return []
        sql = ("SELECT DISTINCT n.name_key, n.name FROM metrics m JOIN metric_names n "
               "ON n.name_key = m.name_key WHERE m.run_key = ?")
        params: list[Any] = [run_key]
        if name:
            sql += " AND n.name = ?"
            params.append(name)
        names = sorted(self._conn.execute(sql, params).fetchall(), key=lambda r: r[1])
        out: list[collector_pb2.MetricRecord] = []
        for name_key, metric_name in names:
            rows = self._conn.execute(
                "SELECT time, step, kind, value FROM metrics "
                "WHERE run_key = ? AND name_key = ? ORDER BY rowid", (run_key, name_key))
            out.extend(_metric_record(metric_name, row) for row in rows)
        return out

    # ---- logs -----------------------------------------------------------------

    def log_positions(self, run_id: str) -> dict[str, int]:
        rows = self._conn.execute(
            "SELECT s.name, s.next_line FROM log_streams s JOIN runs r ON r.run_key = s.run_key "
            "WHERE r.run_id = ?", (run_id,)).fetchall()
        return {name: int(n) for name, n in rows}

    def read_logs(self, query: LogQuery) -> list[collector_pb2.LogLine]:
        rows = self._conn.execute(
            "SELECT s.stream_key, s.name FROM log_streams s JOIN runs r ON r.run_key = s.run_key "
            "WHERE r.run_id = ? ORDER BY s.name", (query.run_id,)).fetchall()
        wanted = set(query.streams)
        out: list[collector_pb2.LogLine] = []
        size = 0
        for stream_key, name in rows:
            if wanted and name not in wanted:
                continue
            start = query.positions.get(name, query.from_line)
            budget = query.limit - len(out)
            if budget <= 0 or size > query.max_bytes:
                break
            for line in self._stream_lines(stream_key, name, start, query.to_line, budget):
                out.append(line)
                size += len(line.text)
                if size > query.max_bytes:
                    break
        return out

    def _stream_lines(self, stream_key: int, name: str, start: int, end: int,
                      budget: int) -> list[collector_pb2.LogLine]:
        stop = start + budget if not end else min(end, start + budget)
        if stop <= start:
            return []
        rows = self._conn.execute(
            "SELECT first_line, line_count, first_time, text, line_times, level, logger "
            "FROM log_chunks WHERE stream_key = ? AND first_line >= COALESCE((SELECT "
            "MAX(first_line) FROM log_chunks WHERE stream_key = ? AND first_line <= ?), 0) "
            "AND first_line < ? ORDER BY first_line", (stream_key, stream_key, start, stop))
        out: list[collector_pb2.LogLine] = []
        for first, _count, first_time, text, line_times, level, logger in rows:
            times = array("q", line_times) if line_times else None
            for index, line in enumerate(text.split("\n")):
                number = first + index
                if start <= number < stop:
                    out.append(collector_pb2.LogLine(
                        stream=name, line=number, text=line, level=level, logger=logger,
                        time_unix_nano=times[index] if times else first_time))
        return out

    # ---- artifacts --------------------------------------------------------------

    def list_artifacts(self, run_id: str) -> list[collector_pb2.ArtifactInfo]:
        rows = self._conn.execute(
            "SELECT a.path, a.size, a.sha256, a.content_type, a.time FROM artifacts a "
            "JOIN runs r ON r.run_key = a.run_key WHERE r.run_id = ? ORDER BY a.path",
            (run_id,)).fetchall()
        return [_artifact_info(row) for row in rows]

    def get_artifact(self, run_id: str, path: str) -> collector_pb2.ArtifactInfo | None:
        row = self._conn.execute(
            "SELECT a.path, a.size, a.sha256, a.content_type, a.time FROM artifacts a "
            "JOIN runs r ON r.run_key = a.run_key WHERE r.run_id = ? AND a.path = ?",
            (run_id, path)).fetchone()
        return None if row is None else _artifact_info(row)


def _artifact_info(row: tuple[Any, ...]) -> collector_pb2.ArtifactInfo:
    return collector_pb2.ArtifactInfo(path=row[0], size=row[1], sha256=row[2],
                                      content_type=row[3], time_unix_nano=row[4])


def _metric_record(name: str, row: tuple[Any, ...]) -> collector_pb2.MetricRecord:
    time_ns, step, kind, value = row
    record = collector_pb2.MetricRecord(time_unix_nano=time_ns)
    metric = record.metric
    if kind == schema.KIND_ENCODED:
        metric.ParseFromString(value)
        return record
    metric.name = name
    scalar = metric.scalar
    if step is not None:
        scalar.step = step
    _set_value(scalar.value, kind, value)
    return record


def _set_value(target: records_pb2.Value, kind: int, value: Any) -> None:
    if kind == schema.KIND_NUMBER:
        target.number = math.nan if value is None else float(value)
    elif kind == schema.KIND_INTEGER:
        target.integer = int(value)
    elif kind == schema.KIND_TEXT:
        target.text = str(value)
    elif kind == schema.KIND_FLAG:
        target.flag = bool(value)
    else:
        raise ValueError(f"metric value of unknown stored kind {kind}")
