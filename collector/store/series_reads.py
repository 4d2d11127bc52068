"""``read_series`` for the stores that keep chunk rows (SQLite and PostgreSQL).

A store mixes in ``PagedSeriesReads``, names its reader class in
``_series_reader`` (with ``series_names``, ``has_records``, ``chunk_page`` and
``chunk_data``) and has ``_read(method, *args)``, which runs a reader method
on a connection of the calling thread. Each page of ``PAGE_CHUNKS`` rows is
one such call, so the generator may move between reader threads and never
keeps a cursor across a ``yield`` (the contract in base.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from mltrail.collector.store import chunks
from mltrail.collector.store.chunks import Points
from mltrail.collector.store.series import (
    Bucket,
    SeriesBuckets,
    SeriesPart,
    SeriesQuery,
    SeriesRecord,
    SeriesStart,
    StoredChunk,
    chunk_part,
    downsample,
)

T = TypeVar("T")

PAGE_CHUNKS = 16  # chunk rows per read of a series: 64k points at most in memory


def _decode_data(chunk: StoredChunk) -> Points:
    return chunks.decode(chunk.data or b"")


class PagedSeriesReads:
    _series_reader: Any

    def _read(self, method: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def read_series(self, query: SeriesQuery) -> Iterator[SeriesPart]:
        reader = self._series_reader
        for run_key, name_key, name in self._read(reader.series_names, query.run_id,
                                                  query.name):
            if query.buckets:
                yield SeriesBuckets(name, self._downsample(run_key, name_key, query))
                continue
            yield SeriesStart(name, self._read(reader.has_records, run_key, name_key, query))
            after = 0
            while page := self._read(reader.chunk_page, run_key, name_key, after,
                                     PAGE_CHUNKS, query):
                for chunk in page:
                    if chunk.summary is None:
                        if chunk.data is not None:
                            yield SeriesRecord(name, chunk.time, bytes(chunk.data))
                    elif (part := chunk_part(name, chunk, _decode_data, query)) is not None:
                        yield part
                after = page[-1].key

    def _downsample(self, run_key: int, name_key: int, query: SeriesQuery) -> list[Bucket]:
        pieces: list[StoredChunk] = []
        while page := self._read(self._series_reader.chunk_page, run_key, name_key,
                                 pieces[-1].key if pieces else 0, 100_000, query, False):
            pieces.extend(page)
        return downsample(pieces, self._load_chunk, query, self._chunk_bytes)

    def _chunk_bytes(self, chunk: StoredChunk) -> bytes:
        return bytes(self._read(self._series_reader.chunk_data, chunk.key))

    def _load_chunk(self, chunk: StoredChunk) -> Points:
        return chunks.decode(self._chunk_bytes(chunk))
