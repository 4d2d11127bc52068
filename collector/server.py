"""CollectorServer: the gRPC server (Ingest + Query), the HTTP endpoint and the store.

Threads: the event loop (gRPC), one store writer thread (every write, so
SQLite has one writer connection; large ingest requests reach it decoded and
validated by ``ingest_workers`` processes, small ones it prepares itself), a
few store reader threads, and the HTTP
threads (/metrics, /healthz, /readyz, the web UI and its JSON API, whose store
calls go to the reader threads). Health (``common.health``): alive while the
event loop turns; ready while the store passes its check (``Store.check``
every two seconds on a reader thread) and the server is not shutting down,
on HTTP and on ``grpc.health.v1`` at the gRPC port.

Exposure (collector/auth.py, collector/tls.py): with ``auth = "none"`` the
collector refuses to listen on an address that is not loopback unless
``insecure`` says so; with ``auth = "token"`` every RPC and every HTTP path
but /healthz needs a bearer token; with ``tls_cert`` the gRPC port serves
TLS (mutual with ``tls_client_ca``) and the HTTP port HTTPS, certificates
reloaded on change.

Shutdown (SIGTERM/SIGINT): ``closing`` is set, so each Ingest stream stops
reading after the request in hand, which is stored and acknowledged; the
server stops accepting RPCs and gives in-flight ones ``shutdown_grace``
seconds; then the writer thread drains and the store closes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2_grpc

from mltrail.collector.admin import AdminService
from mltrail.collector.artifacts import open_artifacts
from mltrail.collector.auth import (
    Authenticator,
    Principal,
    http_bearer_check,
    http_caller,
    load_key,
)
from mltrail.collector.bundle import RunBundles, collector_bundle
from mltrail.collector.ingest import IngestPipeline, IngestService
from mltrail.collector.metrics import CollectorMetrics
from mltrail.collector.notify import LogNotifier
from mltrail.collector.prepare_pool import PreparePool
from mltrail.collector.query import ManageService, QueryService
from mltrail.collector.settings import CollectorSettings
from mltrail.collector.store import Store, open_store, redact_url
from mltrail.collector.tls import ReloadingCertificates
from mltrail.collector.web import Api, WebApp
from mltrail.common import log_ring
from mltrail.common.errors import MltrailError, PermanentError
from mltrail.common.health import Health
from mltrail.common.http import HttpEndpoint
from mltrail.common.lifecycle import Component
from mltrail.common.net import parse_hostport
from mltrail.common.request_decode import DecodeCheck
from mltrail.common.rpc import BULK_READS, MESSAGE_LIMITS
from mltrail.common.service_bundle import support_route
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
        self._prepare = PreparePool(max(self.settings.ingest_workers, 0), self.metrics)
        self._closing = asyncio.Event()
        self._stopped = False
        self.auth = Authenticator(None)
        self.tls: ReloadingCertificates | None = None
        self.health = Health(self._ready)
        # Run bundles read through this collector's own Query service, on a unix socket in
        # a private directory (no TLS to set up, no port), with the caller's token.
        self._internal = tempfile.mkdtemp(prefix="mltrail-collector-")
        self._bundles = RunBundles(lambda: f"unix:{self._internal}/query.sock")
        log_ring.install()

    async def start(self) -> None:
        s = self.settings
        grpc_host, grpc_port = _address(s.grpc, "--grpc")
        http_host, http_port = _address(s.http, "--http")
        _check_exposure(s, grpc_host, http_host)
        if s.tls_cert or s.tls_key:
            self.tls = ReloadingCertificates(s.tls_cert, s.tls_key, s.tls_client_ca)
        elif s.tls_client_ca:
            raise PermanentError("tls_client_ca needs tls_cert and tls_key: mutual TLS is TLS "
                                 "first; nothing was started")
        if s.ingest_workers < 0:
            raise PermanentError(f"ingest_workers must be 0 or more, not {s.ingest_workers}; "
                                 "nothing was started")
        artifacts = open_artifacts(s.artifacts)
        artifacts.prepare()
        self._store = open_store(s.store, artifacts)
        if s.auth == "token":
            self.auth = Authenticator(self._store, load_key(Path(s.auth_key_file)))
            self.auth.bootstrap(Path(s.admin_token_file))
        self._server = self._build_grpc(self._store)
        target = f"{grpc_host}:{grpc_port}"
        loop = asyncio.get_running_loop()
        notifier = self._notifier  # lines committed through other replicas wake followers too
        self._store.watch(lambda runs: loop.call_soon_threadsafe(notifier.notify, runs))
        try:
            bound = (self._server.add_secure_port(target, self.tls.credentials()) if self.tls
                     else self._server.add_insecure_port(target))
        except RuntimeError:
            bound = 0
        if not bound:
            raise PermanentError(f"cannot listen for gRPC on {s.grpc} (port in use?); nothing "
                                 "was started; pass --grpc HOST:PORT with a free port")
        self._server.add_insecure_port(f"unix:{self._internal}/query.sock")
        self._http = _http_endpoint(http_host, http_port, self, self._store)
        await self._server.start()
        await self.health.start()
        self._http.start()
        self.grpc_address = f"{grpc_host}:{bound}"
        self.http_address = self._http.address
        log.info("collector listening: grpc %s%s, http %s, store %s, auth %s",
                 self.grpc_address, " (TLS)" if self.tls else "", self.http_address,
                 redact_url(s.store), s.auth)

    def _build_grpc(self, store: Store) -> grpc.aio.Server:
        server = grpc.aio.server(options=[
            *MESSAGE_LIMITS, *BULK_READS,
            # gRPC turns SO_REUSEPORT on by default: a second collector on the same
            # port would silently take half the streams instead of failing to start.
            ("grpc.so_reuseport", 0),
            *_connection_age(self.settings),
        ], interceptors=[DecodeCheck(self.metrics.bad_request)])
        notifier = LogNotifier()
        self._notifier = notifier
        ingest = IngestService(IngestPipeline(store, self.metrics), self._writer, notifier,
                               self._closing, self.auth, self._readers, self._prepare)
        server.add_generic_rpc_handlers((ingest.handler(),))
        query = QueryService(store, self._readers, notifier, self._closing, self.auth,
                             self._bundles)
        collector_pb2_grpc.add_QueryServicer_to_server(query, server)
        admin = AdminService(self.auth, self._writer, self._readers)
        collector_pb2_grpc.add_AdminServicer_to_server(admin, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        manage = ManageService(store, self._writer, self._readers, self.auth)
        collector_pb2_grpc.add_ManageServicer_to_server(manage, server)
        return server

    async def _ready(self) -> tuple[bool, str]:
        if self._closing.is_set():
            return False, "shutting down"
        store = self._store
        if store is None:
            return False, "starting"
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._readers, store.check), 10.0)
        except TimeoutError:
            return False, "the store did not answer its check within 10s"
        except (MltrailError, OSError) as exc:
            return False, str(exc)
        return True, "ready"

    async def shutdown(self, timeout: float) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._closing.set()
        await self.health.stopping()
        if self._server is not None:
            self._notifier.wake_all()
            await self._server.stop(grace=min(timeout, self.settings.shutdown_grace))
        self._prepare.shutdown()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._bundles.close()
        if self._store is not None:
            self._store.close()
        if self._http is not None:
            self._http.shutdown()
        await self.health.shutdown()
        shutil.rmtree(self._internal, ignore_errors=True)


def _connection_age(s: CollectorSettings) -> list[tuple[str, int]]:
    """Close a connection after ``max_connection_age`` (GOAWAY, then ``shutdown_grace`` for
    its calls), so agents spread over the replicas behind a Service as they reconnect."""
    if s.max_connection_age <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(s.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(s.shutdown_grace * 1000))]


def _address(value: str, flag: str) -> tuple[str, int]:
    try:
        return parse_hostport(value, flag)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _check_exposure(s: CollectorSettings, grpc_host: str, http_host: str) -> None:
    exposed = [h for h in (grpc_host, http_host) if not is_loopback(h)]
    if not exposed:
        return
    if s.auth == "none" and not s.insecure:
        raise PermanentError(
            f"refusing to listen on {exposed[0]} with auth = \"none\": anyone who can reach "
            "it could read and write every run; nothing was started; start with --auth token "
            "(and --tls-cert/--tls-key), or pass --insecure if only trusted hosts can reach it")
    if s.auth == "token" and not s.tls_cert:
        log.warning("tokens will cross the network in clear text to %s: serve TLS with "
                    "--tls-cert and --tls-key", exposed[0])


def _http_endpoint(host: str, port: int, server: CollectorServer, store: Store
                   ) -> HttpEndpoint:
    latest = server.metrics.latest

    def scope(caller: Principal) -> None:  # an admin's scrape sees every workspace
        latest.scope_to(None if caller.role == "admin" else caller.workspace)

    authorize = http_bearer_check(server.auth, on_pass=scope) if server.auth.enabled else None
    web = WebApp(Api(store, server._readers, server._notifier, server._closing.is_set),
                 http_caller(server.auth) if server.auth.enabled else None)
    try:
        return HttpEndpoint(host, port, server.metrics.registry, server.health.live,
                            ready=server.health.ready, authorize=authorize,
                            tls=server.tls.ssl_context if server.tls else None, pages=web,
                            routes={"/-/support": support_route(collector_bundle, server)})
    except OSError as exc:
        raise PermanentError(f"cannot listen for HTTP on {host}:{port} ({exc.strerror}); "
                             "nothing was started; pass --http HOST:PORT with a free port"
                             ) from None
