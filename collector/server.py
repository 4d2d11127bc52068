"""CollectorServer: the gRPC server (Ingest + Query), the HTTP endpoint and the store.

Threads: the event loop (gRPC), one store writer thread (every write, so
SQLite has one writer connection), a few store reader threads, and the HTTP
thread (/metrics, /healthz).

Shutdown (SIGTERM/SIGINT): ``closing`` is set, so each Ingest stream stops
reading after the request in hand, which is stored and acknowledged; the
server stops accepting RPCs and gives in-flight ones ``shutdown_grace``
seconds; then the writer thread drains and the store closes.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.ingest import IngestPipeline, IngestService
from mltrail.collector.metrics import CollectorMetrics
from mltrail.collector.notify import LogNotifier
from mltrail.collector.query import ManageService, QueryService
from mltrail.collector.settings import CollectorSettings
from mltrail.collector.store import Store, open_store
from mltrail.common.errors import PermanentError
from mltrail.common.http import HttpEndpoint
from mltrail.common.lifecycle import Component
from mltrail.common.net import parse_hostport
from mltrail.common.rpc import BULK_READS, MESSAGE_LIMITS
from mltrail.proto import collector_pb2_grpc

log = logging.getLogger(__name__)


class CollectorServer(Component):
    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings.resolved()
        self.metrics = CollectorMetrics(self.settings.max_metric_series)
        self.grpc_address = ""
        self.http_address = ""
        self._store: Store | None = None
        self._server: grpc.aio.Server | None = None
        self._http: HttpEndpoint | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="mltrail-store-writer")
        self._readers = ThreadPoolExecutor(self.settings.reader_threads,
                                           thread_name_prefix="mltrail-store-reader")
        self._closing = asyncio.Event()
        self._stopped = False

    async def start(self) -> None:
        s = self.settings
        grpc_host, grpc_port = _address(s.grpc, "--grpc")
        http_host, http_port = _address(s.http, "--http")
        artifacts = ArtifactStore(s.artifacts)
        artifacts.prepare()
        self._store = open_store(s.store, artifacts)
        self._server = self._build_grpc(self._store)
        try:
            bound = self._server.add_insecure_port(f"{grpc_host}:{grpc_port}")
        except RuntimeError:
            bound = 0
        if not bound:
            raise PermanentError(f"cannot listen for gRPC on {s.grpc} (port in use?); nothing "
                                 "was started; pass --grpc HOST:PORT with a free port")
        self._http = _http_endpoint(http_host, http_port, self)
        await self._server.start()
        self._http.start()
        self.grpc_address = f"{grpc_host}:{bound}"
        self.http_address = self._http.address
        log.info("collector listening: grpc %s, http %s, store %s", self.grpc_address,
                 self.http_address, s.store)

    def _build_grpc(self, store: Store) -> grpc.aio.Server:
        server = grpc.aio.server(options=[
            *MESSAGE_LIMITS, *BULK_READS,
            # gRPC turns SO_REUSEPORT on by default: a second collector on the same
            # port would silently take half the streams instead of failing to start.
            ("grpc.so_reuseport", 0),
        ])
        notifier = LogNotifier()
        self._notifier = notifier
        ingest = IngestService(IngestPipeline(store, self.metrics), self._writer, notifier,
                               self._closing)
        server.add_generic_rpc_handlers((ingest.handler(),))
        query = QueryService(store, self._readers, notifier, self._closing)
        collector_pb2_grpc.add_QueryServicer_to_server(query, server)
        manage = ManageService(store, self._writer)
        collector_pb2_grpc.add_ManageServicer_to_server(manage, server)
        return server

    def health(self) -> tuple[bool, str]:
        if self._closing.is_set():
            return False, "shutting down"
        return self._store is not None, "ok" if self._store is not None else "starting"

    async def shutdown(self, timeout: float) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._closing.set()
        if self._server is not None:
            self._notifier.wake_all()
            await self._server.stop(grace=min(timeout, self.settings.shutdown_grace))
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        if self._store is not None:
            self._store.close()
        if self._http is not None:
            self._http.shutdown()


def _address(value: str, flag: str) -> tuple[str, int]:
    try:
        return parse_hostport(value, flag)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None


def _http_endpoint(host: str, port: int, server: CollectorServer) -> HttpEndpoint:
    try:
        return HttpEndpoint(host, port, server.metrics.registry, server.health)
    except OSError as exc:
        raise PermanentError(f"cannot listen for HTTP on {host}:{port} ({exc.strerror}); "
                             "nothing was started; pass --http HOST:PORT with a free port"
                             ) from None
