"""SqliteStore: the embedded store (``sqlite:///path``), WAL mode.

One writer connection (used only from the collector's store writer thread)
and one read-only connection per reader thread, so queries never wait for a
write transaction and the writer never waits for a long read.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import chunks
from mltrail.collector.store import sqlite_schema as schema
from mltrail.collector.store.base import LogQuery, Store, ValidBatch, WriteSummary
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
from mltrail.collector.store.sqlite_reader import SqliteReader
from mltrail.collector.store.sqlite_writer import SqliteWriter
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 5000
PAGE_CHUNKS = 16  # chunk rows per read of a series: 64k points at most in memory


def _decode_data(chunk: StoredChunk) -> Points:
    return chunks.decode(chunk.data or b"")


class SqliteStore(Store):
    def __init__(self, path: str | Path, artifacts: ArtifactStore,
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
                 synchronous: str = "normal") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._artifacts = artifacts
        self._conn = self._open_writer()
        self._writer = SqliteWriter(self._conn, artifacts, self.path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _open_writer(self) -> sqlite3.Connection:
        target = Path(self.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            conn = schema.connect(self.path, busy_timeout_ms=self._busy_timeout_ms,
                                  synchronous=self.synchronous)
        except (OSError, sqlite3.Error) as exc:
            raise PermanentError(
                f"cannot open store {self.path} ({exc}); nothing was stored; pass --store "
                "sqlite:///PATH with a writable location") from None
        try:
            schema.ensure_schema(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def write_batch(self, batches: Sequence[ValidBatch]) -> WriteSummary:
        return self._writer.write(batches)

    def _reader(self) -> SqliteReader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            conn = schema.connect(self.path, readonly=True,
                                  busy_timeout_ms=self._busy_timeout_ms)
            with self._lock:
                self._readers.append(conn)
            reader = self._local.reader = SqliteReader(conn)
        return reader

    def _read(self, method: Callable[..., T], *args: Any) -> T:
        """Run a reader query on this thread's connection; driver errors translated."""
        try:
            return method(self._reader(), *args)
        except sqlite3.Error as exc:
            raise schema.translate_error(exc, f"reading store {self.path}") from exc

    def list_runs(self, request: collector_pb2.ListRunsRequest) -> list[collector_pb2.RunInfo]:
        return self._read(SqliteReader.list_runs, request)

    def get_run(self, run_id: str) -> collector_pb2.RunInfo | None:
        return self._read(SqliteReader.get_run, run_id)

    def run_status(self, run_id: str) -> int | None:
        return self._read(SqliteReader.run_status, run_id)

    def read_series(self, query: SeriesQuery) -> Iterator[SeriesPart]:
        """Pages of ``PAGE_CHUNKS`` rows by rowid, each read on the calling thread's
        connection, so the generator may move between reader threads."""
        for run_key, name_key, name in self._read(SqliteReader.series_names, query.run_id,
                                                  query.name):
            if query.buckets:
                yield SeriesBuckets(name, self._downsample(run_key, name_key, query))
                continue
            yield SeriesStart(name, self._read(SqliteReader.has_records, run_key, name_key,
                                               query))
            after = 0
            while page := self._read(SqliteReader.chunk_page, run_key, name_key, after,
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
        while page := self._read(SqliteReader.chunk_page, run_key, name_key,
                                 pieces[-1].key if pieces else 0, 100_000, query, False):
            pieces.extend(page)
        return downsample(pieces, self._load_chunk, query, self._chunk_bytes)

    def _chunk_bytes(self, chunk: StoredChunk) -> bytes:
        return self._read(SqliteReader.chunk_data, chunk.key)

    def _load_chunk(self, chunk: StoredChunk) -> Points:
        return chunks.decode(self._chunk_bytes(chunk))

    def read_logs(self, query: LogQuery) -> list[collector_pb2.LogLine]:
        return self._read(SqliteReader.read_logs, query)

    def log_positions(self, run_id: str) -> dict[str, int]:
        return self._read(SqliteReader.log_positions, run_id)

    def list_artifacts(self, run_id: str, after: str = "", limit: int = 0
                       ) -> list[collector_pb2.ArtifactInfo]:
        return self._read(SqliteReader.list_artifacts, run_id, after, limit)

    def get_artifact(self, run_id: str, path: str) -> collector_pb2.ArtifactInfo | None:
        return self._read(SqliteReader.get_artifact, run_id, path)

    def read_artifact(self, info: collector_pb2.ArtifactInfo, chunk: int
                      ) -> Generator[bytes, None, None]:
        return self._artifacts.read(info.sha256, chunk)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._conn.close()
