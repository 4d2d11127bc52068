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

from mltrail.collector.store import chunks
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
    data = (chunks.encode_open(points) if open_ and len(points) < CHUNK_POINTS
            else chunks.encode(points))
    return StoredRow(chunks.summarize(points), data, data[:1] == _RAW)


def extend(head: bytes, points: Points, close: bool = False) -> tuple[StoredRow, Points]:
    """The open chunk of bytes ``head`` extended by the first of ``points`` (its new row),
    and the points left for new rows; ``close``: nothing follows it after these."""
    joined = chunks.decode(head)
    room = CHUNK_POINTS - len(joined)
    joined.extend(points.slice(0, room))
    return stored(joined, not close), points.slice(room, len(points))


def rows_of(points: Points, open_last: bool) -> list[StoredRow]:
    """New rows for ``points``: chunks of CHUNK_POINTS, the last one open when
    ``open_last`` (nothing of another kind follows)."""
    starts = range(0, len(points), CHUNK_POINTS)
    return [stored(points.slice(first, first + CHUNK_POINTS),
                   open_last and first == starts[-1]) for first in starts]


def closed(data: bytes) -> bytes:
    """The compressed form of an open chunk's bytes (same points)."""
    return chunks.encode(chunks.decode(data))

