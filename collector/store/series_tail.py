"""A series' open tail: appended at the cost of the new points, merged once it fills.

A scalar series is stored as chunks of ``CHUNK_POINTS`` points (chunks.py),
compressed once each. Its last points, fewer than that, are its tail: rows
of pieces (flag ``FLAG_PIECE`` in the row's flags), one per batch that
added to it, in logged order, each with its summary like any chunk, so every
reader reads them as chunks. As in Prometheus' head block, a write never
re-encodes what is already stored (re-encoding a growing open chunk at every
batch made 100-point batches cost about 90 us of CPU a point):

- the new points fit (tail plus new under ``CHUNK_POINTS``, the tail under
  ``CHUNK_BYTES`` and under ``MAX_PIECES`` pieces): they become one more
  piece, in the raw form for plain numbers (``chunks.encode_piece``);
- otherwise the tail's pieces and the new points are merged: full chunks of
  ``CHUNK_POINTS`` encoded once, the rest one new piece; the old pieces'
  rows are deleted. A tail of ``CHUNK_BYTES`` or more (long strings) or one
  followed by a record of another kind (``close``) becomes chunks entirely.

A store runs this in its write transaction (a rolled-back batch leaves the
tail as it was; a replayed batch never gets here), deletes the merged rows
and inserts the new ones after every other row of the series, so row order
stays logged order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mltrail.collector.store import chunks
from mltrail.collector.store.chunks import CHUNK_BYTES, CHUNK_POINTS, ChunkSummary, Points

FLAG_PIECE = 32  # beside chunks' flags and FLAG_HAS_NUMBERS: a row of a series' tail
MAX_PIECES = 16  # then the pieces merge into one (numbers: at memory speed)


@dataclass(frozen=True)
class TailRow:
    key: Any  # the store's handle of the row
    count: int
    size: int  # bytes of its data


@dataclass(frozen=True)
class NewRow:
    summary: ChunkSummary
    data: bytes
    piece: bool  # part of the tail (else a closed chunk)


def tail_of(last_rows: Iterable[tuple[Any, bool, int, int, int]]) -> list[TailRow]:
    """A series' tail, oldest first, from its last rows newest first as (key, is a scalar
    chunk, count, flags, size): the pieces after its last other row."""
    tail = []
    for key, scalar, count, flags, size in last_rows:
        if not scalar or not flags & FLAG_PIECE:
            break
        tail.append(TailRow(key, count, size))
    tail.reverse()
    return tail


def fits(tail: Sequence[TailRow], new_points: int) -> bool:
    """Whether ``new_points`` go after the tail as one more piece (else it is merged)."""
    return (len(tail) < MAX_PIECES and sum(t.size for t in tail) < CHUNK_BYTES
            and sum(t.count for t in tail) + new_points < CHUNK_POINTS)


def piece(points: Points) -> NewRow:
    return NewRow(chunks.summarize(points), chunks.encode_piece(points), True)


def merged(tail_data: Sequence[bytes], points: Points, close: bool = False) -> list[NewRow]:
    """The rows of the tail's pieces (their data, oldest first) followed by ``points``:
    chunks of CHUNK_POINTS, then the rest as one piece, or as a chunk when ``close`` or
    when the pieces hold CHUNK_BYTES or more."""
    close = close or sum(map(len, tail_data)) >= CHUNK_BYTES
    if tail_data:
        joined = Points.empty()
        for data in tail_data:
            joined.extend(chunks.decode(bytes(data)))
        joined.extend(points)
        points = joined
    count = len(points)
    full = count - count % CHUNK_POINTS
    rows = [_chunk(points.slice(first, first + CHUNK_POINTS))
            for first in range(0, full, CHUNK_POINTS)]
    if full < count:
        rest = points.slice(full, count) if full else points
        rows.append(_chunk(rest) if close else piece(rest))
    return rows


def _chunk(points: Points) -> NewRow:
    return NewRow(chunks.summarize(points), chunks.encode(points), False)
