"""Reading log lines back, the same for both stores (``mark``: the driver's placeholder,
``?`` for sqlite3, ``%s`` for psycopg; ``conn``: anything with ``execute``)."""

from __future__ import annotations

from typing import Any

from mltrail.collector.store.base import LogQuery
from mltrail.collector.store.chunks import decode_ints
from mltrail.collector.store.sqlite_chunks import decompress_text
from mltrail.proto import collector_pb2


def read_logs(conn: Any, mark: str, query: LogQuery, run_id: str
              ) -> list[collector_pb2.LogLine]:
    """The run's lines by stream name, each stream from its position in ``query``, up to
    ``query.limit`` lines and about ``query.max_bytes`` of text."""
    rows = conn.execute(
        "SELECT s.stream_key, s.name FROM log_streams s JOIN runs r ON r.run_key = s.run_key "
        f"WHERE r.run_id = {mark} ORDER BY s.name", (run_id,)).fetchall()
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
        for line in _stream_lines(conn, mark, stream_key, name, start, query.to_line, budget):
            out.append(line)
            size += len(line.text)
            if size > query.max_bytes:
                break
    return out


def _stream_lines(conn: Any, mark: str, stream_key: int, name: str, start: int, end: int,
                  budget: int) -> list[collector_pb2.LogLine]:
    """Lines ``start`` up to ``end`` (0: the last) of one stream, at most ``budget``,
    from the chunks that hold them."""
    stop = start + budget if not end else min(end, start + budget)
    if stop <= start:
        return []
    rows = conn.execute(
        "SELECT first_line, first_time, data, line_times, level, logger FROM log_chunks "
        f"WHERE stream_key = {mark} AND first_line >= COALESCE((SELECT MAX(first_line) "
        f"FROM log_chunks WHERE stream_key = {mark} AND first_line <= {mark}), 0) "
        f"AND first_line < {mark} ORDER BY first_line",
        (stream_key, stream_key, start, stop)).fetchall()
    out: list[collector_pb2.LogLine] = []
    for first, first_time, data, line_times, level, logger in rows:
        times = decode_ints(bytes(line_times)) if line_times else None
        lines = decompress_text(bytes(data)).split("\n")
        for index in range(max(start - first, 0), min(stop - first, len(lines))):
            out.append(collector_pb2.LogLine(
                stream=name, line=first + index, text=lines[index], level=level,
                logger=logger, time_unix_nano=times[index] if times else first_time))
    return out
