"""The end of a PostgreSQL write transaction: series and log streams locked and extended.

Called by ``PostgresWriter`` once per ``write_batch`` with everything its
batches gathered. Rows are locked in key order (so two replicas wait for each
other instead of deadlocking); each series' and log stream's open chunk is
extended in place under that lock (series_tail.py), new rows go in by COPY; log
lines are numbered from the stream's row, never from a cache (another
replica may have added lines), and each stream's new position is announced
by pg_notify for followers on every replica (delivered at commit).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeAlias

from mltrail.collector.store import series_tail
from mltrail.collector.store.chunks import CHUNK_BYTES, CHUNK_POINTS, Points
from mltrail.collector.store.series_tail import FLAG_RAW
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


def flush_series(conn: Any, series: dict[tuple[int, int], list[SeriesPiece]],
                 ended: Collection[int] = ()) -> None:
    """Each series' open chunk extended in place (series_tail.py; under its series lock,
    so no other replica extends it meanwhile), the rest as new chunk rows by COPY; the
    open chunks of the ``ended`` runs compressed. Every series lock is taken in one
    sorted pass, as every lock here is."""
    closing = set(map(tuple, conn.execute(
        "SELECT DISTINCT run_key, name_key FROM metric_chunks WHERE run_key = ANY(%s) AND "
        f"flags & {FLAG_RAW} <> 0", (sorted(ended),)).fetchall())) if ended else set()
    keys = sorted(series)
    closing |= {key for key in keys if key[0] in ended}
    lock(conn, "metric_series", "run_key, name_key", sorted(set(keys) | closing))
    heads = {(r, n): (key, data) for r, n, key, data in conn.execute(
        f"SELECT u.a, u.b, c.id, c.data FROM {_KEYS} CROSS JOIN LATERAL (SELECT "
        "id, kind, count, data FROM metric_chunks WHERE run_key = u.a AND name_key = u.b "
        f"ORDER BY id DESC LIMIT 1) c WHERE c.kind = {CHUNK_SCALAR} AND c.count < "
        f"{CHUNK_POINTS} AND octet_length(c.data) < {CHUNK_BYTES}",
        ([k[0] for k in keys], [k[1] for k in keys])).fetchall()}
    rows: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    for key in keys:
        pieces = series[key]
        head = heads.get(key)
        if head is not None and isinstance(pieces[0], Points):
            new, pieces[0] = series_tail.extend(bytes(head[1]), pieces[0],
                                                close=len(pieces) > 1)
            updates.append((*summary_row(new.summary, new.raw), new.data, head[0]))
        elif head is not None:  # a record of another kind closes the open chunk
            closing.add(key)
        rows.extend(_chunk_rows(key, pieces))
    if updates:
        conn.cursor().executemany(
            "UPDATE metric_chunks SET (count, first_step, last_step, min_step, max_step, "
            "first_time, last_time, min_time, max_time, first_value, last_value, "
            "min_value, max_value, flags, data) = (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, %s) WHERE id = %s", updates)
    _copy(conn, _CHUNK_COPY, _CHUNK_TYPES, rows)
    _close(conn, sorted(closing))  # after the new rows: an ended run's are closed too


def _close(conn: Any, keys: list[tuple[int, int]]) -> None:
    """The raw open chunks of the series of ``keys`` (locked) compressed, in place."""
    if not keys:
        return
    found = conn.execute(
        f"SELECT c.id, c.data FROM metric_chunks c JOIN {_KEYS} ON c.run_key = u.a AND "
        f"c.name_key = u.b WHERE c.flags & {FLAG_RAW} <> 0",
        ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
    if found:
        conn.cursor().executemany(
            f"UPDATE metric_chunks SET data = %s, flags = flags & ~{FLAG_RAW} WHERE id = %s",
            [(series_tail.closed(bytes(data)), key) for key, data in found])


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


def _chunk_rows(key: tuple[int, int], pieces: list[SeriesPiece]) -> list[tuple[Any, ...]]:
    """New rows in order: the last piece's last chunk stays open (raw), as nothing of
    another kind follows it."""
    run_key, name_key = key
    rows: list[tuple[Any, ...]] = []
    for index, piece in enumerate(pieces):
        if isinstance(piece, Points):
            rows.extend((run_key, name_key, CHUNK_SCALAR, *summary_row(new.summary, new.raw),
                         new.data)
                        for new in series_tail.rows_of(piece, index == len(pieces) - 1))
        else:
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
