"""Schema 2 -> 3 at collector start: metric rows into chunks, log text compressed.

``sqlite_schema.ensure_schema`` has renamed the old tables to ``metrics_v2``
and ``log_chunks_v2``. Each step here is one transaction that takes up to
``STEP_ROWS`` rows of one series (in rowid order: logged order) or one log
stream (in line order), appends them through the writer's own appenders
(so a series' open chunk is extended across steps exactly as across
batches, and compressed once every step is done) and deletes them from the
old table. A kill at any moment leaves every row either still in the old
table or already moved, never both, and the next start goes on from there.
Progress is logged every few seconds.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from array import array

from mltrail.collector.store.chunks import Points
from mltrail.collector.store.series_tail import FLAG_RAW
from mltrail.collector.store.sqlite_chunks import LogAppender, LogPiece, SeriesAppender
from mltrail.collector.store.sqlite_schema import (
    KIND_ENCODED,
    KIND_FLAG,
    KIND_NUMBER,
    transaction,
)

log = logging.getLogger(__name__)

STEP_ROWS = 100_000
STEP_LOG_CHUNKS = 2_000
PROGRESS_SECONDS = 5.0


class _Progress:
    def __init__(self, where: str, total: int, what: str) -> None:
        self.where, self.total, self.what = where, total, what
        self.done = 0
        self._said = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._said >= PROGRESS_SECONDS:
            self._said = now
            log.warning("store %s: schema 3 migration: %s of %s %s moved (%.0f %%)",
                        self.where, f"{self.done:,}", f"{self.total:,}", self.what,
                        100 * self.done / max(self.total, 1))


def migrate_v2_rows(conn: sqlite3.Connection, where: str) -> None:
    metric_rows = conn.execute("SELECT COUNT(*) FROM metrics_v2").fetchone()[0]
    log_rows = conn.execute("SELECT COUNT(*) FROM log_chunks_v2").fetchone()[0]
    if metric_rows or log_rows:
        log.warning("store %s: migrating to schema 3 (metric points in chunks, compressed "
                    "logs): %s metric rows and %s log chunks to move, in place; a stopped "
                    "migration goes on at the next start", where, f"{metric_rows:,}",
                    f"{log_rows:,}")
    started = time.monotonic()
    progress = _Progress(where, metric_rows, "metric rows")
    while (moved := _metric_step(conn, where)) is not None:
        progress.add(moved)
    _close_tails(conn, where)
    progress = _Progress(where, log_rows, "log chunks")
    while (moved := _log_step(conn, where)) is not None:
        progress.add(moved)
    if metric_rows or log_rows:
        log.warning("store %s: schema 3 migration done in %.1f s", where,
                    time.monotonic() - started)


def _metric_step(conn: sqlite3.Connection, where: str) -> int | None:
    with transaction(conn, f"migrating store {where}"):
        series = conn.execute("SELECT run_key, name_key FROM metrics_v2 LIMIT 1").fetchone()
        if series is None:
            return None
        rows = conn.execute("SELECT rowid, time, step, kind, value FROM metrics_v2 WHERE "
                            "run_key = ? AND name_key = ? ORDER BY rowid LIMIT ?",
                            (*series, STEP_ROWS)).fetchall()
        appender = SeriesAppender(conn)
        points = Points.empty()
        for _rowid, time_ns, step, kind, value in rows:
            if kind == KIND_ENCODED:
                appender.append(*series, points)
                points = Points.empty()
                appender.append_encoded(*series, time_ns, bytes(value))
                continue
            points.steps.append(step)
            points.times.append(time_ns)
            points.kinds.append(kind)
            points.values.append(_value(kind, value))
        appender.append(*series, points)
        conn.execute("DELETE FROM metrics_v2 WHERE run_key = ? AND name_key = ? AND rowid <= ?",
                     (*series, rows[-1][0]))
        return len(rows)


def _close_tails(conn: sqlite3.Connection, where: str) -> None:
    """The open chunks left by the steps compressed, as if their runs had ended (a run
    still going reopens its own)."""
    with transaction(conn, f"migrating store {where}"):
        appender = SeriesAppender(conn)
        for (run_key,) in conn.execute("SELECT DISTINCT run_key FROM metric_chunks WHERE "
                                       "flags & ?", (FLAG_RAW,)).fetchall():
            appender.close_run(run_key)


def _value(kind: int, value: object) -> float | int | str | bool:
    if kind == KIND_NUMBER:
        return math.nan if value is None else float(value)  # type: ignore[arg-type]
    if kind == KIND_FLAG:
        return bool(value)
    return value  # type: ignore[return-value]  # integer or text, as stored


def _log_step(conn: sqlite3.Connection, where: str) -> int | None:
    with transaction(conn, f"migrating store {where}"):
        stream = conn.execute("SELECT stream_key FROM log_chunks_v2 LIMIT 1").fetchone()
        if stream is None:
            return None
        rows = conn.execute(
            "SELECT first_line, line_count, first_time, last_time, text, line_times, level, "
            "logger FROM log_chunks_v2 WHERE stream_key = ? ORDER BY first_line LIMIT ?",
            (stream[0], STEP_LOG_CHUNKS)).fetchall()
        pieces = [LogPiece(count, first_time, last_time, text,
                           array("q", times) if times else array("q"), level, logger)
                  for _first, count, first_time, last_time, text, times, level, logger in rows]
        LogAppender(conn).append(stream[0], rows[0][0], pieces)
        conn.execute("DELETE FROM log_chunks_v2 WHERE stream_key = ? AND first_line <= ?",
                     (stream[0], rows[-1][0]))
        return len(rows)
