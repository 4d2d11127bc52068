"""SqliteStore: the embedded store (``sqlite:///path``), WAL mode.

One writer connection (used only from the collector's store writer thread)
and one read-only connection per reader thread, so queries never wait for a
write transaction and the writer never waits for a long read.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import sqlite_schema as schema
from mltrail.collector.store import sqlite_tokens as tokens
from mltrail.collector.store.base import (
    DEFAULT_WORKSPACE,
    LogQuery,
    Store,
    TokenRecord,
    ValidBatch,
    WriteSummary,
)
from mltrail.collector.store.series_reads import PagedSeriesReads
from mltrail.collector.store.sqlite_reader import SqliteReader
from mltrail.collector.store.sqlite_writer import SqliteWriter
from mltrail.common.errors import PermanentError, RetryableError
from mltrail.common.locks import LockHeld, take_lock
from mltrail.proto import collector_pb2

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 5000
class SqliteStore(PagedSeriesReads, Store):
    _series_reader = SqliteReader

    def __init__(self, path: str | Path, artifacts: ArtifactStore,
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
                 synchronous: str = "normal") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._artifacts = artifacts
        self._lock_fd = self._take_store_lock()
        try:
            self._conn = self._open_writer()
        except BaseException:
            os.close(self._lock_fd)
            raise
        opened = os.stat(self.path)
        self._identity = (opened.st_dev, opened.st_ino)
        self._writer = SqliteWriter(self._conn, artifacts, self.path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _take_store_lock(self) -> int:
        """One collector per SQLite file: two would both write (several replicas need
        PostgreSQL)."""
        target = Path(self.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            return take_lock(target.with_name(target.name + ".lock"))
        except LockHeld as held:
            raise PermanentError(
                f"store {self.path} is in use by another collector (pid {held.holder}); "
                "nothing was changed; stop that one, or give this one another --store (one "
                "collector per SQLite file; several replicas need PostgreSQL)") from None
        except OSError as exc:
            raise PermanentError(
                f"cannot open store {self.path} ({exc}); nothing was stored; pass --store "
                "sqlite:///PATH with a writable location") from None

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
        self._check_file()  # never commit into a file nobody will read again
        return self._writer.write(batches)

    def check(self) -> None:
        """The file at the path is the one we opened, and it answers a read."""
        self._check_file()
        self._read(SqliteReader.ping)

    def _check_file(self) -> None:
        try:
            now = os.stat(self.path)
        except OSError as exc:
            raise RetryableError(
                f"store file {self.path} cannot be found ({exc.strerror}): its volume is "
                "unmounted or the file was moved; nothing is written until it is back (senders "
                "keep their records)") from None
        if (now.st_dev, now.st_ino) != self._identity:
            raise RetryableError(
                f"store file {self.path} was replaced by another file after the collector "
                "opened it; nothing is written to either; restart the collector to use the "
                "new one")

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

    def list_runs(self, request: collector_pb2.ListRunsRequest,
                  workspace: str = DEFAULT_WORKSPACE) -> list[collector_pb2.RunInfo]:
        return self._read(SqliteReader.list_runs, request, workspace)

    def get_run(self, run_id: str, workspace: str = DEFAULT_WORKSPACE, counts: bool = True
                ) -> collector_pb2.RunInfo | None:
        return self._read(SqliteReader.get_run, run_id, workspace, counts)

    def run_status(self, run_id: str, workspace: str = DEFAULT_WORKSPACE) -> int | None:
        return self._read(SqliteReader.run_status, run_id, workspace)

    def metric_summaries(self, run_ids: Sequence[str], names: Sequence[str] | None = None
                         ) -> dict[str, dict[str, collector_pb2.MetricSummary]]:
        return self._read(SqliteReader.metric_summaries, list(run_ids),
                          None if names is None else list(names))

    def other_metrics(self, run_id: str) -> list[collector_pb2.MetricRecord]:
        return self._read(SqliteReader.other_metrics, run_id)

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

    # ---- tokens --------------------------------------------------------------

    def put_token(self, token: TokenRecord) -> None:
        tokens.put_token(self._conn, token, self.path)

    def revoke_token(self, name: str, when: int) -> TokenRecord | None:
        return tokens.revoke_token(self._conn, name, when, self.path)

    def find_token(self, token_id: str) -> TokenRecord | None:
        return self._read(lambda reader: tokens.find_token(reader.connection, token_id))

    def list_tokens(self, workspace: str = "") -> list[TokenRecord]:
        return self._read(lambda reader: tokens.list_tokens(reader.connection, workspace))

    def delete_runs(self, run_ids: Sequence[str], workspace: str = DEFAULT_WORKSPACE
                    ) -> collector_pb2.DeleteRunsResponse:
        return self._writer.delete_runs(run_ids, workspace)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._conn.close()
        os.close(self._lock_fd)
