"""Appending to chunked series and log streams inside the writer's transaction.

A series' last row is its open chunk while it holds fewer than
``chunks.CHUNK_POINTS`` points and ``chunks.CHUNK_BYTES`` bytes: new points
extend it (the row updated in place, raw while it grows: series_tail.py), and
the rest go to new rows. All of it happens in the caller's transaction, so a
rolled-back batch leaves the open chunk as it was, and a replayed batch
(skipped by the high-water mark before it gets here) cannot extend a chunk
twice. A row of kind CHUNK_ENCODED (a non-scalar record) closes the series'
open chunk, so rowid order stays logged order.

A log stream's last chunk is extended the same way while it is under
``LOG_CHUNK_LINES`` lines and ``LOG_CHUNK_BYTES`` of text and has the same
level and logger; lines N..M stay answerable by (stream_key, first_line).
As in Loki, the chunk still open (a stream's last, which the next batch may
extend and so compress again) is compressed fast, and a chunk once closed is
compressed hard, once (``compress_text``).
"""

from __future__ import annotations

import sqlite3
import threading
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from mltrail.collector.store import chunks, series_tail
from mltrail.collector.store.chunks import ChunkSummary, Points
from mltrail.collector.store.series import StoredChunk
from mltrail.collector.store.series_tail import FLAG_RAW
from mltrail.collector.store.sqlite_schema import CHUNK_ENCODED, CHUNK_SCALAR

# Every batch that extends a stream's open chunk compresses it again (fast, zstd level
# 1: about 0.2 ms for 64 KiB); a closed chunk is compressed once with zstd's optimal
# parser, its search kept short (training output, lines of numbers: 13.9 bytes a 93-byte
# line for 5 us, against zlib's 17.1 at level 6 for 1.7 us; a longer search, 12.9 bytes
# for 11 us, was measured not to be worth its CPU on the one writer thread).
LOG_CHUNK_LINES = 4096
LOG_CHUNK_BYTES = 64 * 1024
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # zlib data (chunks written before) starts otherwise
_CLOSED_PARAMS = zstandard.ZstdCompressionParameters(
    window_log=17, chain_log=8, hash_log=13, search_log=1, min_match=4, target_length=24,
    strategy=zstandard.STRATEGY_BTOPT)
_codecs = threading.local()  # zstandard's (de)compressor objects are one thread's each


def _zstd() -> tuple[Any, Any, Any]:
    """This thread's (open-chunk compressor, closed-chunk compressor, decompressor)."""
    codecs = getattr(_codecs, "zstd", None)
    if codecs is None:
        codecs = _codecs.zstd = (zstandard.ZstdCompressor(level=1), zstandard.ZstdCompressor(
            compression_params=_CLOSED_PARAMS), zstandard.ZstdDecompressor())
    return codecs


FLAG_HAS_NUMBERS = 16  # beside chunks' flags: a NULL summary value is then a NaN

SUMMARY_COLUMNS = ("count, first_step, last_step, min_step, max_step, first_time, "
                   "last_time, min_time, max_time, first_value, last_value, min_value, "
                   "max_value, flags")


def summary_row(summary: ChunkSummary, raw: bool = False) -> tuple[object, ...]:
    """The 14 SUMMARY_COLUMNS of a chunk (``raw``: an open one in the raw form)."""
    flags = (summary.flags | (FLAG_HAS_NUMBERS if summary.first_value is not None else 0)
             | (FLAG_RAW if raw else 0))
    return (summary.count, summary.first_step, summary.last_step, summary.min_step,
            summary.max_step, summary.first_time, summary.last_time, summary.min_time,
            summary.max_time, summary.first_value, summary.last_value, summary.min_value,
            summary.max_value, flags)


def summary_of(row: Sequence[Any]) -> ChunkSummary:
    """A summary back from the 14 SUMMARY_COLUMNS (NULL values are NaN with numbers)."""
    (count, first_step, last_step, min_step, max_step, first_time, last_time, min_time,
     max_time, first_value, last_value, min_value, max_value, flags) = row
    if flags & FLAG_HAS_NUMBERS and (first_value is None or last_value is None
                                     or min_value is None or max_value is None):
        first_value, last_value, min_value, max_value = (
            _NAN if v is None else v for v in (first_value, last_value, min_value, max_value))
    return ChunkSummary(
        count, first_step, last_step, min_step, max_step, first_time, last_time, min_time,
        max_time, first_value, last_value, min_value, max_value,
        bool(flags & chunks.FLAG_STEPS_SORTED), bool(flags & chunks.FLAG_HAS_NAN),
        bool(flags & chunks.FLAG_ALL_STEPS), bool(flags & chunks.FLAG_ALL_NUMERIC))


_NAN = float("nan")


def stored_chunk(row: Sequence[Any]) -> StoredChunk:
    """From (rowid, kind, 14 SUMMARY_COLUMNS, data or NULL)."""
    key, kind, data = row[0], row[1], row[16]
    if kind == CHUNK_ENCODED:
        return StoredChunk(key, None, int(row[7]), data)
    return StoredChunk(key, summary_of(row[2:16]), data=data)


class SeriesAppender:
    """Writes points and encoded records of series on the writer's connection: each
    series' last chunk open, raw while it grows (series_tail.py)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def append(self, run_key: int, name_key: int, points: Points) -> None:
        if not len(points):
            return
        conn = self._conn
        row = conn.execute("SELECT rowid, kind, count, data FROM metric_chunks WHERE "
                           "run_key = ? AND name_key = ? ORDER BY rowid DESC LIMIT 1",
                           (run_key, name_key)).fetchone()
        if row is not None and row[1] == CHUNK_SCALAR and series_tail.is_open(row[2],
                                                                            len(row[3])):
            head, points = series_tail.extend(row[3], points)
            self._update(row[0], head)
        if len(points):
            conn.executemany(
                "INSERT INTO metric_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?)", [(run_key, name_key, CHUNK_SCALAR, *summary_row(new.summary, new.raw),
                              new.data) for new in series_tail.rows_of(points, True)])

    def append_encoded(self, run_key: int, name_key: int, time_ns: int, metric: bytes) -> None:
        """One record of another kind: the series' open chunk before it is closed."""
        self._close("run_key = ? AND name_key = ?", (run_key, name_key))
        self._conn.execute(
            "INSERT INTO metric_chunks VALUES (?, ?, ?, 1, NULL, NULL, NULL, NULL, ?, ?, ?, ?, "
            "NULL, NULL, NULL, NULL, 0, ?)",
            (run_key, name_key, CHUNK_ENCODED, time_ns, time_ns, time_ns, time_ns, metric))

    def close_run(self, run_key: int) -> None:
        """A run ended: its series' open chunks compressed, in place."""
        self._close("run_key = ?", (run_key,))

    def _close(self, where: str, params: tuple[int, ...]) -> None:
        for rowid, data in self._conn.execute(
                f"SELECT rowid, data FROM metric_chunks WHERE {where} AND flags & "
                f"{FLAG_RAW}", params).fetchall():
            self._conn.execute(f"UPDATE metric_chunks SET data = ?, flags = flags & "
                               f"~{FLAG_RAW} WHERE rowid = ?",
                               (series_tail.closed(data), rowid))

    def _update(self, rowid: int, new: series_tail.StoredRow) -> None:
        self._conn.execute(f"UPDATE metric_chunks SET ({SUMMARY_COLUMNS}, data) = "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) WHERE rowid = ?",
                           (*summary_row(new.summary, new.raw), new.data, rowid))


@dataclass
class LogPiece:
    """Lines of one stream to append: text without the final newline, per-line times
    (empty: every line at ``first_time``)."""

    count: int
    first_time: int
    last_time: int
    text: str
    times: array[int]
    level: str
    logger: str


def compress_text(text: str, closed: bool = True) -> bytes:
    """A chunk's text as zstd; ``closed`` False (a chunk the next batch may extend): fast."""
    return _zstd()[1 if closed else 0].compress(text.encode("utf-8", "surrogatepass"))


def decompress_text(data: bytes) -> str:
    """A chunk's text: zstd, or zlib as chunks were written before (no migration)."""
    raw = _zstd()[2].decompress(data) if data[:4] == _ZSTD_MAGIC else zlib.decompress(data)
    return raw.decode("utf-8", "surrogatepass")


def closed(index: int, plan: Sequence[tuple[int, LogPiece]]) -> bool:
    """Whether chunk ``index`` of a plan is closed: not the last, or full."""
    return index < len(plan) - 1 or plan[index][1].count >= LOG_CHUNK_LINES


def encode_times(times: Sequence[int]) -> bytes | None:
    return chunks.encode_ints(times) if times else None


class LogAppender:
    """Writes log lines of streams, extending each stream's last chunk while it is small."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def append(self, stream_key: int, first_line: int, pieces: Sequence[LogPiece]) -> None:
        conn = self._conn
        row = conn.execute(
            "SELECT rowid, first_line, line_count, first_time, last_time, data, line_times, "
            "level, logger FROM log_chunks WHERE stream_key = ? ORDER BY first_line DESC LIMIT 1",
            (stream_key,)).fetchone()
        head: LogPiece | None = None
        head_rowid = None
        if row is not None and extends(row[1:], first_line):
            head_rowid = row[0]
            head, first_line = open_piece(row[1:])
        plan = plan_append(head, first_line, pieces)
        for index, (line, piece) in enumerate(plan):
            values = (piece.count, piece.first_time, piece.last_time,
                      compress_text(piece.text, closed(index, plan)),
                      encode_times(piece.times), piece.level, piece.logger)
            if index == 0 and head_rowid is not None:
                conn.execute("UPDATE log_chunks SET line_count = ?, first_time = ?, "
                             "last_time = ?, data = ?, line_times = ?, level = ?, logger = ? "
                             "WHERE rowid = ?", (*values, head_rowid))
            else:
                conn.execute("INSERT INTO log_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (stream_key, line, *values))


def extends(row: Sequence[Any], first_line: int) -> bool:
    """Whether lines from ``first_line`` go on in a stream's last chunk, given as
    (first_line, line_count, first_time, last_time, data, line_times, level, logger)."""
    return bool(row[0] + row[1] == first_line and row[1] < LOG_CHUNK_LINES)


def open_piece(row: Sequence[Any]) -> tuple[LogPiece, int]:
    """That last chunk as a piece to extend, and its first line."""
    times = array("q", chunks.decode_ints(bytes(row[5]))) if row[5] else array("q")
    return (LogPiece(row[1], row[2], row[3], decompress_text(bytes(row[4])), times, row[6],
                     row[7]), int(row[0]))


def plan_append(head: LogPiece | None, first_line: int, pieces: Sequence[LogPiece]
                ) -> list[tuple[int, LogPiece]]:
    """The chunks to write, with their first lines: ``head`` (the stream's open chunk,
    starting at ``first_line``; first in the answer, to be updated in place) extended
    while the pieces fit, then new chunks."""
    out: list[tuple[int, LogPiece]] = []
    for piece in pieces:
        if head is not None and _fits(head, piece):
            head = _join(head, piece)
            continue
        if head is not None:
            out.append((first_line, head))
            first_line += head.count
        head = piece
    if head is not None:
        out.append((first_line, head))
    return out


def _fits(head: LogPiece, piece: LogPiece) -> bool:
    return (head.level == piece.level and head.logger == piece.logger
            and head.count + piece.count <= LOG_CHUNK_LINES
            and len(head.text) + len(piece.text) <= LOG_CHUNK_BYTES)


def _join(head: LogPiece, piece: LogPiece) -> LogPiece:
    if head.times or piece.times:
        times = (head.times or array("q", [head.first_time] * head.count)) + (
            piece.times or array("q", [piece.first_time] * piece.count))
    else:
        times = array("q")
        if head.first_time != piece.first_time:  # one time per chunk no longer holds
            times = array("q", [head.first_time] * head.count + [piece.first_time]
                          * piece.count)
    return LogPiece(head.count + piece.count, head.first_time, piece.last_time,
                    head.text + "\n" + piece.text, times, head.level, head.logger)
