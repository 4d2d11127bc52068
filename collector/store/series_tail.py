"""A series' open chunk: raw while batches extend it, compressed once it closes.

A scalar series is stored as chunks of up to ``CHUNK_POINTS`` points, its
last one open: the next batch extends it in place (the row keeps its key, so
a reader paging by key never sees a point twice). Extending a compressed
chunk meant decoding and re-encoding all of it at every batch (about 90 us
of CPU a point for 100-point batches), so an open chunk of plain numbers is
kept in the raw form (chunk_raw.py: arrays, no transform, no compression),
which decodes and encodes at memory speed, and flagged ``FLAG_RAW``. It is
compressed, in place, once it is full, when a record of another kind follows
it, or when its run ends (``closed``); a late point reopens it.

Only the writer (SQLite) or the holder of the series' lock (PostgreSQL) runs
this, inside the write transaction: a rolled-back batch leaves the chunk as
it was, and a replayed batch never gets here.
"""

from __future__ import annotations

from dataclasses import dataclass

from mltrail.collector.store import chunk_numpy, chunks
from mltrail.collector.store.chunk_columns import NUMPY_FROM
from mltrail.collector.store.chunk_raw import RAW
from mltrail.collector.store.chunks import CHUNK_BYTES, CHUNK_POINTS, ChunkSummary, Points

FLAG_RAW = 32  # beside chunks' flags and FLAG_HAS_NUMBERS: an open chunk in the raw form
_RAW = bytes([RAW])


@dataclass(frozen=True)
class StoredRow:
    """A chunk row to write: its summary, its bytes, and whether they are raw."""

    summary: ChunkSummary
    data: bytes
    raw: bool


def is_open(count: int, size: int) -> bool:
    """Whether a series' last scalar row (``count`` points, ``size`` bytes) takes more."""
    return count < CHUNK_POINTS and size < CHUNK_BYTES


def stored(points: Points, open_: bool) -> StoredRow:
    """The row of ``points``: raw while open and short of CHUNK_POINTS (plain numbers;
    anything else compressed), compressed otherwise."""
    if len(points) >= NUMPY_FROM:
        numbers = chunk_numpy.numbers_of(points)
        if numbers is not None:
            return _stored_numbers(numbers, open_)
    data = (chunks.encode_open(points) if open_ and len(points) < CHUNK_POINTS
            else chunks.encode(points))
    return StoredRow(chunks.summarize(points), data, data[:1] == _RAW)


def _stored_numbers(numbers: chunk_numpy.Numbers, open_: bool) -> StoredRow:
    """``stored`` of plain numbers, as numpy passes (chunk_numpy.py: the same bytes)."""
    raw = open_ and len(numbers) < CHUNK_POINTS
    return StoredRow(chunk_numpy.number_summary(numbers), chunk_numpy.encoded(numbers, raw),
                     raw)


def extend(head: bytes, points: Points, close: bool = False) -> tuple[StoredRow, Points]:
    """The open chunk of bytes ``head`` extended by the first of ``points`` (its new row),
    and the points left for new rows; ``close``: nothing follows it after these."""
    if head[:1] == _RAW and len(points) >= NUMPY_FROM // 2:
        # a raw head read as arrays and joined in C (a Python object per point is the
        # cost this avoids; short batches take the path below, as cheap for them)
        numbers = chunk_numpy.numbers_of(points)
        joined = chunk_numpy.raw_numbers(head)
        if numbers is not None and (numbers.steps is None) is (joined.steps is None):
            room = CHUNK_POINTS - len(joined)
            joined = joined.join(numbers.slice(0, room))
            return _stored_numbers(joined, not close), points.slice(room, len(points))
    joined_points = chunks.decode(head)
    room = CHUNK_POINTS - len(joined_points)
    joined_points.extend(points.slice(0, room))
    return stored(joined_points, not close), points.slice(room, len(points))


def rows_of(points: Points, open_last: bool) -> list[StoredRow]:
    """New rows for ``points``: chunks of CHUNK_POINTS, the last one open when
    ``open_last`` (nothing of another kind follows)."""
    starts = range(0, len(points), CHUNK_POINTS)
    return [stored(points.slice(first, first + CHUNK_POINTS),
                   open_last and first == starts[-1]) for first in starts]


def closed(data: bytes) -> bytes:
    """The compressed form of an open chunk's bytes (same points)."""
    if data[:1] == _RAW:
        return chunk_numpy.encoded(chunk_numpy.raw_numbers(data), False)
    return chunks.encode(chunks.decode(data))
