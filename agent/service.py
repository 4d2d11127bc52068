"""The agent process: SDK receiver -> spool -> forwarder, plus /metrics.

Lifecycle (``common.lifecycle.Component``): ``start()`` opens the spool
(cutting a torn tail, never refusing to start), listens on the unix socket
and the HTTP port and starts forwarding. ``shutdown(timeout)`` stops
accepting, drains the spool to the collector until ``timeout``, then stops
and leaves the rest on disk for the next start.

Health (``common.health``): HTTP answers only once the socket listens, so
``/healthz`` (alive) doubles as a startup probe; ready (``/readyz`` and
``grpc.health.v1`` on the socket) while started, not stopping, and the
collector has not refused sends for longer than ``unhealthy_after_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import grpc
from grpc_health.v1 import health_pb2_grpc

from mltrail.agent.bundle import SendLog, agent_bundle
from mltrail.agent.forward_listener import ForwardListener
from mltrail.agent.forwarder import GrpcForwarder
from mltrail.agent.metrics import AgentMetrics
from mltrail.agent.retry import RetryPolicy
from mltrail.agent.run_watch import RunWatch, watch_socket_path
from mltrail.agent.settings import AgentSettings
from mltrail.agent.sources.registry import start_sources, stop_sources
from mltrail.agent.sources.sdk import ForwardTracker, SdkReceiver
from mltrail.agent.sources.tail import TailSource
from mltrail.agent.spool import Spool, SpoolFrame
from mltrail.agent.targets import wants_compression
from mltrail.common import log_ring
from mltrail.common.errors import MltrailError
from mltrail.common.health import Health
from mltrail.common.http import HttpEndpoint
from mltrail.common.lifecycle import Component
from mltrail.common.net import parse_hostport
from mltrail.common.request_decode import DecodeCheck
from mltrail.common.rpc import BULK_READS, MESSAGE_LIMITS
from mltrail.common.service_bundle import support_route
from mltrail.proto import agent_pb2, agent_pb2_grpc

log = logging.getLogger("mltrail.agent")

VERSION = "0.1.0"


class AgentStartError(MltrailError):
    """The agent cannot start (socket, spool or port unusable)."""


class _Fanout(ForwardListener):
    def __init__(self, listeners: Sequence[ForwardListener]) -> None:
        self._listeners = listeners

    def connected(self, up: bool) -> None:
        for listener in self._listeners:
            listener.connected(up)

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        for listener in self._listeners:
            listener.forwarded(frame, acked_seq)

    def sent(self, frames: Sequence[SpoolFrame], seconds: float) -> None:
        for listener in self._listeners:
            listener.sent(frames, seconds)

    def retrying(self, error: BaseException, delay: float) -> None:
        for listener in self._listeners:
            listener.retrying(error, delay)

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        for listener in self._listeners:
            listener.dead_lettered(frame, message)

    def gap_sent(self, frame: SpoolFrame, reason: str) -> None:
        for listener in self._listeners:
            listener.gap_sent(frame, reason)

    def gap_filled(self, stream_id: str, first_seq: int, last_seq: int) -> None:
        for listener in self._listeners:
            listener.gap_filled(stream_id, first_seq, last_seq)

    def credentials_refused(self, message: str) -> None:
        for listener in self._listeners:
            listener.credentials_refused(message)

    def credentials_accepted(self) -> None:
        for listener in self._listeners:
            listener.credentials_accepted()


def _check_socket_path(path: Path) -> None:
    """Fail early and clearly; remove a stale socket left by a killed agent."""
    directory = path.parent
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise AgentStartError(
            f"cannot create the agent socket {path}: directory {directory} is not writable; "
            "choose another path with --socket or MLTRAIL_AGENT_SOCKET"
        )
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: left over from a crash
        else:
            raise AgentStartError(f"another agent already listens on {path}; stop it first")
        finally:
            probe.close()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return cast(Callable[[int], int], libc.malloc_trim)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


class AgentService(Component):
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.socket_path = Path(settings.socket)
        self._append_pool = ThreadPoolExecutor(16, "mltrail-spool-append")
        self._started = False
        self._stopped = False
        self.spool: Spool | None = None
        self.forwarder: GrpcForwarder | None = None
        self.metrics: AgentMetrics | None = None
        self.http: HttpEndpoint | None = None
        self._server: grpc.aio.Server | None = None
        self._forward_task: asyncio.Task[None] | None = None
        self._trim_task: asyncio.Task[None] | None = None
        self.run_watch: RunWatch | None = None
        self.sources: list[TailSource] = []  # log files, containers (agent/sources/registry.py)
        self.health = Health(self._ready)
        self.send_log = SendLog()  # the last send errors, for support bundles
        log_ring.install()

    async def start(self) -> None:
        s = self.settings
        _check_socket_path(self.socket_path)
        try:
            spool = await asyncio.to_thread(
                Spool, s.spool_dir, fsync=s.fsync, fsync_interval=s.fsync_interval_ms / 1000,
                max_bytes=s.max_spool_bytes, full_policy=s.full_policy,
                segment_bytes=s.segment_bytes, on_append=self._notify,
            )
        except OSError as exc:
            raise AgentStartError(f"cannot open the spool at {s.spool_dir}: {exc}") from None
        self.spool = spool
        report = spool.scan_report
        log.info("spool %s: %d frames (%d bytes) to forward, %d bytes (%d records) cut",
                 s.spool_dir, report.frames, spool.pending_bytes, report.cut_bytes,
                 report.cut_records)
        self.metrics = AgentMetrics(spool, s.unhealthy_after_seconds)
        tracker = ForwardTracker(report.streams)
        listener = _Fanout([self.metrics, tracker, self.send_log])
        self.forwarder = GrpcForwarder(
            spool, s.collector, batch_max_bytes=s.batch_max_bytes,
            batch_max_delay=s.batch_max_delay_ms / 1000, listener=listener,
            retry=RetryPolicy(on_retry=listener.retrying),
            compress=wants_compression(s.compression, s.collector),
            security=s.security,
            rebalance_seconds=s.rebalance_seconds,
        )
        self._check_http()
        await self._start_grpc(tracker)
        self.run_watch = RunWatch(spool, watch_socket_path(self.socket_path),
                                  s.socket_permissions, on_failed=self.metrics.runs_failed.inc)
        await self.run_watch.start()
        self._forward_task = asyncio.create_task(self.forwarder.run())
        self._trim_task = asyncio.create_task(self._trim_when_idle())
        self.sources = await start_sources(
            s.sources, spool, s.spool_dir, fsync=s.fsync != "never",
            registry=self.metrics.registry, on_appended=self.metrics.received)
        self._started = True
        await self.health.start()
        assert self.http is not None
        self.http.start()

    async def _ready(self) -> tuple[bool, str]:
        if self._stopped:
            return False, "shutting down"
        if not self._started or self.metrics is None:
            return False, "starting"
        return self.metrics.health()

    async def _trim_when_idle(self) -> None:
        """Give freed buffers back to the OS once the spool is drained.

        A burst leaves glibc's heap at its peak (several MB per in-flight
        request); a sidecar should shrink back while it waits.
        """
        trim = _malloc_trim()
        last_sent = -1
        while trim is not None and self.spool is not None:
            await asyncio.sleep(2.0)
            sent = self.spool.counters.appended_bytes
            if sent != last_sent and self.spool.empty():
                trim(0)
                last_sent = sent

    def _notify(self) -> None:
        if self.forwarder is not None:
            self.forwarder.notify()

    def _check_http(self) -> None:
        """Bind the HTTP port (a busy port fails the start); it serves once started."""
        assert self.metrics is not None
        host, port = parse_hostport(self.settings.http, "http")
        try:
            self.http = HttpEndpoint(host, port, self.metrics.registry, self.health.live,
                                     ready=self.health.ready,
                                     routes={"/-/support": support_route(agent_bundle, self)})
        except OSError as exc:
            raise AgentStartError(f"cannot listen on http {self.settings.http}: {exc}") from None

    async def _start_grpc(self, tracker: ForwardTracker) -> None:
        assert self.spool is not None and self.metrics is not None
        receiver = SdkReceiver(
            self.spool, tracker, self._append_pool, self.info,
            on_received=self.metrics.received, on_refused=self.metrics.refused_batch,
        )
        self._server = grpc.aio.server(options=MESSAGE_LIMITS + BULK_READS,
                                       interceptors=[DecodeCheck(self.metrics.bad_request)])
        agent_pb2_grpc.add_AgentServicer_to_server(receiver, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._server)
        old_umask = os.umask(0o177)  # the socket is never open to others, even briefly
        try:
            bound = self._server.add_insecure_port(f"unix:{self.socket_path}")
        finally:
            os.umask(old_umask)
        if not bound:
            raise AgentStartError(f"cannot listen on the agent socket {self.socket_path}")
        await self._server.start()
        os.chmod(self.socket_path, self.settings.socket_permissions)

    def info(self) -> agent_pb2.AgentInfo:
        metrics = self.metrics
        return agent_pb2.AgentInfo(
            # the collector of the current session: one address a query client can use
            collector=self.forwarder.current if self.forwarder else self.settings.collector,
            spool_dir=self.settings.spool_dir,
            version=VERSION,
            spool_bytes=self.spool.bytes if self.spool else 0,
            collector_connected=bool(metrics and metrics.is_connected),
            http=self.http.address if self.http else "",
        )

    def ready_info(self) -> dict[str, object]:
        assert self.http is not None
        return {"socket": str(self.socket_path), "http": self.http.address,
                "collector": self.settings.collector, "pid": os.getpid(),
                "spool": str(self.settings.spool_dir)}

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, drain up to ``timeout`` seconds, keep the rest on disk."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.stopping()
        await stop_sources(self.sources, timeout=5.0)  # before the spool closes
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self.run_watch is not None:
            await self.run_watch.shutdown()
        drained = await self._drain(timeout)
        if self._trim_task is not None:
            self._trim_task.cancel()
        if self._forward_task is not None:
            self._forward_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._forward_task
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.spool is not None:
            left = self.spool.pending_bytes
            await asyncio.to_thread(self.spool.close)
            if not drained:
                log.warning("stopping with %d bytes not yet forwarded; they stay in %s for the "
                            "next start", left, self.settings.spool_dir)
        self._append_pool.shutdown(wait=False, cancel_futures=True)
        if self.http is not None:
            self.http.shutdown()
        await self.health.shutdown()
        if self._server is not None:  # never remove another agent's socket
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    async def _drain(self, timeout: float) -> bool:
        spool = self.spool
        if spool is None or not self._started:
            return True
        deadline = time.monotonic() + timeout
        while not spool.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return spool.empty()
