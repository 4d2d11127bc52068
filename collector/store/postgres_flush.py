"""The end of a PostgreSQL write transaction: series and log streams locked and extended.

Called by ``PostgresWriter`` once per ``write_batch`` with everything its
batches gathered. Rows are locked in key order (so two replicas wait for each
other instead of deadlocking); each series' tail (series_tail.py) and each log
stream's open chunk is extended under that lock, new rows go in by COPY; log
lines are numbered from the stream's row, never from a cache (another
replica may have added lines), and each stream's new position is announced
by pg_notify for followers on every replica (delivered at commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from mltrail.collector.store import series_tail
from mltrail.collector.store.chunks import CHUNK_POINTS, Points
from mltrail.collector.store.series_tail import FLAG_PIECE, MAX_PIECES, TailRow
from mltrail.collector.store.sqlite_chunks import (
    LogPiece,
    closed,
    compress_text,
    encode_times,
    extends,
    open_piece,
    plan_append,
    summary_row,
)
from mltrail.collector.store.sqlite_schema import CHUNK_ENCODED, CHUNK_SCALAR

NOTIFY_CHANNEL = "mltrail_logs"

# A series' pieces in logged order: scalar points, or one encoded Metric (time, bytes).
SeriesPiece: TypeAlias = Points | tuple[int, bytes]

_CHUNK_COPY = ("COPY metric_chunks (run_key, name_key, kind, count, first_step, last_step, "
               "min_step, max_step, first_time, last_time, min_time, max_time, first_value, "
               "last_value, min_value, max_value, flags, data) FROM STDIN (FORMAT BINARY)")
_CHUNK_TYPES = ["int8", "int4", "int2", "int4", *["int8"] * 8, *["float8"] * 4, "int4",
                "bytea"]
_LOG_COPY = ("COPY log_chunks (stream_key, first_line, line_count, first_time, last_time, "
             "data, line_times, level, logger) FROM STDIN (FORMAT BINARY)")
_LOG_TYPES = ["int8", "int8", "int4", "int8", "int8", "bytea", "bytea", "text", "text"]
_KEYS = "unnest(%s::bigint[], %s::bigint[]) AS u(a, b)"


@dataclass
class LogLines:
    run_key: int
    stream: str
    piece: LogPiece


def lock(conn: Any, table: str, columns: str, keys: list[tuple[Any, Any]],
         second: str = "bigint") -> None:
    """Create the missing rows of ``keys`` and lock them all, in key order."""
    params = ([a for a, _ in keys], [b for _, b in keys])
    a, b = columns.split(", ")
    pairs = f"unnest(%s::bigint[], %s::{second}[]) AS u(a, b)"
    extra = ", 0" if table == "log_streams" else ""
    conn.execute(f"INSERT INTO {table} ({columns}{', next_line' if extra else ''}) "
                 f"SELECT u.a, u.b{extra} FROM {pairs} ORDER BY u.a, u.b "
                 "ON CONFLICT DO NOTHING", params)
    conn.execute(f"SELECT 1 FROM {table} t JOIN {pairs} ON t.{a} = u.a AND "
                 f"t.{b} = u.b ORDER BY t.{a}, t.{b} FOR UPDATE OF t", params).fetchall()


def flush_series(conn: Any, series: dict[tuple[int, int], list[SeriesPiece]]) -> None:
    """Each series' tail (series_tail.py) read under its series lock, so no other replica
    adds to it meanwhile; merged tails deleted, the new rows added by COPY."""
    keys = sorted(series)
    lock(conn, "metric_series", "run_key, name_key", keys)
    tails = _tails(conn, keys)
    data = _take(conn, [row.key for key in keys for row in tails.get(key, ())
                        if not _appends(tails[key], series[key])])
    rows: list[tuple[Any, ...]] = []
    for key in keys:
        taken = [data[row.key] for row in tails.get(key, ()) if row.key in data]
        rows.extend(_chunk_rows(key, series[key], taken))
    _copy(conn, _CHUNK_COPY, _CHUNK_TYPES, rows)


def close_runs(conn: Any, run_keys: set[int]) -> None:
    """Runs ended: the tails of their series become chunks (compressed, as the rest)."""
    keys = sorted(conn.execute(
        "SELECT DISTINCT run_key, name_key FROM metric_chunks WHERE run_key = ANY(%s) AND "
        f"flags & {FLAG_PIECE} <> 0", (sorted(run_keys),)).fetchall())
    if not keys:
        return
    lock(conn, "metric_series", "run_key, name_key", keys)
    tails = _tails(conn, keys)
    data = _take(conn, [row.key for tail in tails.values() for row in tail])
    rows: list[tuple[Any, ...]] = []
    for (run_key, name_key), tail in tails.items():
        rows.extend((run_key, name_key, CHUNK_SCALAR, *summary_row(row.summary, row.piece),
                     row.data) for row in series_tail.merged(
                         [data[row.key] for row in tail], Points.empty(), close=True))
    _copy(conn, _CHUNK_COPY, _CHUNK_TYPES, rows)


def _tails(conn: Any, keys: list[tuple[int, int]]) -> dict[tuple[int, int], list[TailRow]]:
    """The tails of the series of ``keys`` (locked), those that have one."""
    last_rows: dict[tuple[int, int], list[tuple[Any, bool, int, int, int]]] = {}
    for r, n, *row in conn.execute(
            f"SELECT u.a, u.b, c.id, c.kind = {CHUNK_SCALAR}, c.count, c.flags, c.size FROM "
            f"{_KEYS} CROSS JOIN LATERAL (SELECT id, kind, count, flags, octet_length(data) "
            "AS size FROM metric_chunks WHERE run_key = u.a AND name_key = u.b ORDER BY id "
            f"DESC LIMIT {MAX_PIECES + 1}) c ORDER BY u.a, u.b, c.id DESC",
            ([k[0] for k in keys], [k[1] for k in keys])).fetchall():
        last_rows.setdefault((r, n), []).append((row[0], row[1], row[2], row[3], row[4]))
    tails = {key: series_tail.tail_of(rows) for key, rows in last_rows.items()}
    return {key: tail for key, tail in tails.items() if tail}


def _take(conn: Any, ids: list[int]) -> dict[int, bytes]:
    """The data of rows ``ids``, the rows deleted."""
    if not ids:
        return {}
    data = {key: bytes(value) for key, value in conn.execute(
        "SELECT id, data FROM metric_chunks WHERE id = ANY(%s)", (ids,)).fetchall()}
    conn.execute("DELETE FROM metric_chunks WHERE id = ANY(%s)", (ids,))
    return data


def _appends(tail: list[TailRow], pieces: list[SeriesPiece]) -> bool:
    """Whether the pieces go after the tail as one more piece (else it is merged)."""
    first = pieces[0]
    return (len(pieces) == 1 and isinstance(first, Points)
            and series_tail.fits(tail, len(first)))


def flush_logs(conn: Any, logs: list[LogLines], log_runs: dict[int, str]) -> None:
    """Lock the log streams in (run_key, name) order, number the lines, extend each
    stream's open chunk and add new chunks, then wake followers on every replica."""
    keys = sorted({(lines.run_key, lines.stream) for lines in logs})
    lock(conn, "log_streams", "run_key, name", keys, "text")
    params = ([k for k, _ in keys], [n for _, n in keys])
    streams = {(r, n): [key, line] for r, n, key, line in conn.execute(
        "SELECT s.run_key, s.name, s.stream_key, s.next_line FROM log_streams s JOIN "
        "unnest(%s::bigint[], %s::text[]) AS u(a, b) ON s.run_key = u.a AND s.name = u.b",
        params).fetchall()}
    heads = {row[0]: row[1:] for row in conn.execute(
        "SELECT s.stream_key, c.first_line, c.line_count, c.first_time, c.last_time, "
        "c.data, c.line_times, c.level, c.logger FROM log_streams s JOIN unnest("
        "%s::bigint[], %s::text[]) AS u(a, b) ON s.run_key = u.a AND s.name = u.b CROSS "
        "JOIN LATERAL (SELECT * FROM log_chunks WHERE stream_key = s.stream_key ORDER BY "
        "first_line DESC LIMIT 1) c", params).fetchall()}
    pending: dict[tuple[int, str], list[LogPiece]] = {}
    for lines in logs:
        pending.setdefault((lines.run_key, lines.stream), []).append(lines.piece)
    rows: list[tuple[Any, ...]] = []
    for key in keys:
        stream_key, next_line = streams[key]
        head_row = heads.get(stream_key)
        head, first = None, next_line
        if head_row is not None and extends(head_row, next_line):
            head, first = open_piece(head_row)
        plan = plan_append(head, first, pending[key])
        values = [_log_values(piece, closed(index, plan))
                  for index, (_, piece) in enumerate(plan)]
        if head is not None:
            conn.execute("UPDATE log_chunks SET line_count = %s, first_time = %s, "
                         "last_time = %s, data = %s, line_times = %s, level = %s, "
                         "logger = %s WHERE stream_key = %s AND first_line = %s",
                         (*values[0], stream_key, plan[0][0]))
            plan, values = plan[1:], values[1:]
        rows.extend((stream_key, line, *value)
                    for (line, _), value in zip(plan, values, strict=True))
        streams[key][1] = next_line + sum(piece.count for piece in pending[key])
    _copy(conn, _LOG_COPY, _LOG_TYPES, rows)
    positions = [streams[key] for key in keys]
    conn.execute("UPDATE log_streams SET next_line = u.n FROM unnest(%s::bigint[], "
                 "%s::bigint[]) AS u(k, n) WHERE log_streams.stream_key = u.k",
                 ([key for key, _ in positions], [line for _, line in positions]))
    conn.execute("SELECT pg_notify(%s, u.n || ' ' || u.r) FROM unnest(%s::bigint[], "
                 "%s::text[]) AS u(n, r)",
                 (NOTIFY_CHANNEL, [line for _, line in positions],
                  [log_runs[run_key] for run_key, _ in keys]))


def _chunk_rows(key: tuple[int, int], pieces: list[SeriesPiece], tail: list[bytes]
                ) -> list[tuple[Any, ...]]:
    """The rows of a series' pieces in order, the first merged with ``tail`` (the data of
    the tail's rows, deleted) when given; a record of another kind closes the tail."""
    run_key, name_key = key
    rows: list[tuple[Any, ...]] = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        scalar = isinstance(piece, Points)
        if scalar or tail:
            points = piece if isinstance(piece, Points) else Points.empty()
            open_end = last and scalar  # nothing of another kind after these points
            new = ([series_tail.piece(points)] if open_end and not tail and len(points)
                   < CHUNK_POINTS else series_tail.merged(tail, points, close=not open_end))
            rows.extend((run_key, name_key, CHUNK_SCALAR, *summary_row(row.summary, row.piece),
                         row.data) for row in new)
            tail = []
        if not isinstance(piece, Points):
            time_ns, data = piece
            rows.append((run_key, name_key, CHUNK_ENCODED, 1, None, None, None, None,
                         time_ns, time_ns, time_ns, time_ns, None, None, None, None, 0, data))
    return rows


def _log_values(piece: LogPiece, closed: bool) -> tuple[Any, ...]:
    return (piece.count, piece.first_time, piece.last_time, compress_text(piece.text, closed),
            encode_times(piece.times), piece.level, piece.logger)


def _copy(conn: Any, sql: str, types: list[str], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        with conn.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
