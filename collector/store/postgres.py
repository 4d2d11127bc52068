"""PostgresStore: the shared store (``postgresql://...``) for several collector replicas.

Connections come from a psycopg_pool pool (checked on borrow, so a server
restart costs no failed request on a stale connection; always returned, so
none leak). Writes run one transaction per ``write_batch`` (see
postgres_writer.py for the locking that keeps exactly-once across replicas);
reads borrow a connection per call. A listener thread holds one more
connection in ``LISTEN mltrail_logs`` and hands each notification's run id
to the callback given to ``watch``; when that connection is lost it
reconnects with a backoff, and followers fall back to polling meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import postgres_schema as schema
from mltrail.collector.store import postgres_tokens as tokens
from mltrail.collector.store.base import (
    DEFAULT_WORKSPACE,
    LogQuery,
    Store,
    TokenRecord,
    ValidBatch,
    WriteSummary,
)
from mltrail.collector.store.postgres_reader import PostgresReader
from mltrail.collector.store.postgres_writer import NOTIFY_CHANNEL, PostgresWriter
from mltrail.collector.store.series_reads import PagedSeriesReads
from mltrail.common.errors import MltrailError, PermanentError
from mltrail.proto import collector_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_POOL_SIZE = 8
CONNECT_TIMEOUT = 10.0


class PostgresStore(PagedSeriesReads, Store):
    _series_reader = PostgresReader

    def __init__(self, conninfo: str, artifacts: ArtifactStore, where: str,
                 pool_size: int = DEFAULT_POOL_SIZE) -> None:
        import psycopg
        import psycopg_pool

        self.where = where  # the URL without its password, for messages
        self._conninfo = conninfo
        self._artifacts = artifacts
        try:
            with psycopg.connect(conninfo, autocommit=True,
                                 connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                schema.ensure_schema(conn, where)
        except psycopg.Error as exc:
            raise PermanentError(
                f"cannot open store {where} ({schema.translate_error(exc, 'connect')}); "
                "nothing was stored; check that PostgreSQL is running and the URL's user, "
                "host, port and database") from None
        self._pool = psycopg_pool.ConnectionPool(
            conninfo, min_size=1, max_size=pool_size, kwargs={"autocommit": True},
            check=psycopg_pool.ConnectionPool.check_connection, timeout=CONNECT_TIMEOUT,
            open=False, name="mltrail-store")
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        self._writer = PostgresWriter(artifacts)
        self._listener: _Listener | None = None
        self._closed = False

    def write_batch(self, batches: Sequence[ValidBatch]) -> WriteSummary:
        import psycopg
        import psycopg_pool

        try:
            with self._pool.connection() as conn, conn.transaction():
                return self._writer.write(conn, batches)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise schema.translate_error(exc, f"writing store {self.where}") from exc

    def _read(self, method: Callable[..., T], *args: Any) -> T:
        return self._on_connection(lambda conn: method(PostgresReader(conn), *args), "reading")

    def _on_connection(self, call: Callable[[Any], T], what: str) -> T:
        """``call`` with a pooled connection; driver errors translated."""
        import psycopg
        import psycopg_pool

        try:
            with self._pool.connection() as conn:
                return call(conn)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise schema.translate_error(exc, f"{what} store {self.where}") from exc

    def import_marks(self, marks: dict[str, int], workspace: str = DEFAULT_WORKSPACE) -> None:
        """Stream marks of ``workspace`` from another store (``store copy``), kept where
        they are higher."""
        def run(conn: Any) -> None:
            with conn.transaction():
                conn.execute("INSERT INTO streams (workspace, stream_id, hwm) SELECT %s, u.s, "
                             "u.h FROM unnest(%s::text[], %s::bigint[]) AS u(s, h) "
                             "ON CONFLICT (workspace, stream_id) DO UPDATE SET "
                             "hwm = GREATEST(streams.hwm, excluded.hwm)",
                             (workspace, list(marks), list(marks.values())))
        self._on_connection(run, "writing")

    def delete_runs(self, run_ids: Sequence[str], workspace: str = DEFAULT_WORKSPACE
                    ) -> collector_pb2.DeleteRunsResponse:
        """Every row of the runs of ``workspace`` in one transaction (``run_delete``), then
        each artifact object no run of any replica still refers to."""
        from mltrail.collector.store.run_delete import (
            POSTGRES_TABLES,
            delete_run_rows,
            unreferenced,
        )

        def run(conn: Any) -> tuple[collector_pb2.DeleteRunsResponse, list[str]]:
            with conn.transaction():
                answer, shas = delete_run_rows(conn, run_ids, workspace, mark="%s",
                                               tables=POSTGRES_TABLES, lock=" FOR UPDATE")
            return answer, unreferenced(conn, shas, mark="%s")

        answer, gone = self._on_connection(run, "deleting from")
        self._writer.forget()  # cached keys of the deleted runs
        for sha in gone:
            self._artifacts.remove(sha)
        return answer

    def watch(self, callback: Callable[[set[str]], None]) -> None:
        if self._listener is None:
            self._listener = _Listener(self._conninfo, callback)
            self._listener.start()

    def list_runs(self, request: collector_pb2.ListRunsRequest,
                  workspace: str = DEFAULT_WORKSPACE) -> list[collector_pb2.RunInfo]:
        return self._read(PostgresReader.list_runs, request, workspace)

    def get_run(self, run_id: str, workspace: str = DEFAULT_WORKSPACE, counts: bool = True
                ) -> collector_pb2.RunInfo | None:
        """``counts=False`` leaves the counts 0 (integ's Store.get_run takes it)."""
        return self._read(PostgresReader.get_run, run_id, workspace, counts)

    def run_status(self, run_id: str, workspace: str = DEFAULT_WORKSPACE) -> int | None:
        return self._read(PostgresReader.run_status, run_id, workspace)

    def other_metrics(self, run_id: str) -> list[collector_pb2.MetricRecord]:
        return self._read(PostgresReader.other_metrics, run_id)

    def read_logs(self, query: LogQuery) -> list[collector_pb2.LogLine]:
        return self._read(PostgresReader.read_logs, query)

    def log_positions(self, run_id: str) -> dict[str, int]:
        return self._read(PostgresReader.log_positions, run_id)

    def list_artifacts(self, run_id: str, after: str = "", limit: int = 0
                       ) -> list[collector_pb2.ArtifactInfo]:
        return self._read(PostgresReader.list_artifacts, run_id, after, limit)

    def get_artifact(self, run_id: str, path: str) -> collector_pb2.ArtifactInfo | None:
        return self._read(PostgresReader.get_artifact, run_id, path)

    def read_artifact(self, info: collector_pb2.ArtifactInfo, chunk: int
                      ) -> Generator[bytes, None, None]:
        return self._artifacts.read(info.sha256, chunk)

    # ---- tokens (shared by every replica) ---------------------------------------

    def put_token(self, token: TokenRecord) -> None:
        self._on_connection(lambda conn: tokens.put_token(conn, token), "writing")

    def revoke_token(self, name: str, when: int) -> TokenRecord | None:
        return self._on_connection(lambda conn: tokens.revoke_token(conn, name, when),
                                   "writing")

    def find_token(self, token_id: str) -> TokenRecord | None:
        return self._on_connection(lambda conn: tokens.find_token(conn, token_id), "reading")

    def list_tokens(self, workspace: str = "") -> list[TokenRecord]:
        return self._on_connection(lambda conn: tokens.list_tokens(conn, workspace), "reading")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.stop()
        self._pool.close()


class _Listener(threading.Thread):
    """LISTEN on its own connection; each notification's run id goes to ``callback``."""

    BACKOFF_MAX = 5.0

    def __init__(self, conninfo: str, callback: Callable[[set[str]], None]) -> None:
        super().__init__(name="mltrail-store-listener", daemon=True)
        self._conninfo = conninfo
        self._callback = callback
        self._stopping = threading.Event()
        self._failures = 0

    def run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True,
                                     connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._failures = 0
                    self._serve(conn)
            except psycopg.Error as exc:
                self._failures += 1
                if self._failures == 1:
                    log.warning("log wake-ups from other replicas paused (%s); followers "
                                "poll until PostgreSQL answers again",
                                str(exc).strip().splitlines()[0] if str(exc) else exc)
                self._stopping.wait(min(self.BACKOFF_MAX, 0.2 * 2 ** self._failures))

    def _serve(self, conn: Any) -> None:
        while not self._stopping.is_set():
            runs = set()
            for note in conn.notifies(timeout=0.5, stop_after=256):
                runs.add(note.payload.partition(" ")[2])
            if runs:
                try:
                    self._callback(runs)
                except (RuntimeError, MltrailError):  # the event loop closed: shutting down
                    return

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)
