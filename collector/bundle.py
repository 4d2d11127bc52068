"""The collector's bundles: a run's (``Query.GetRunBundle``) and its own (``/-/support``).

A run's bundle is built by ``mltrail.bundle.run_bundle`` reading through a
Query client connected to this collector's own Query service (on a unix
socket of its own, see server.py) with the caller's token, so it sees exactly
what the caller may read, paged and streamed as every reader sees it. It is written
to a temporary file on a thread of its own (not the store readers, which the
reads it makes need), then streamed in 1 MiB chunks.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

import grpc

from mltrail.common.bundle_writer import DEFAULT_MAX_BYTES, BundleWriter
from mltrail.common.errors import MltrailError, PermanentError
from mltrail.common.redact import Redactor
from mltrail.common.service_bundle import registry_numbers, service_bundle
from mltrail.proto import collector_pb2

CHUNK = 1024 * 1024

COLLECTOR_README = """\
mltrail support bundle of a collector

manifest.json     versions, who and when, every file (size, sha256), cuts, redactions
settings.json     the collector's settings as loaded (secrets redacted; store URL passwords too)
metrics-*.txt     its /metrics at the start and at the end of the capture window
state-*.json      health, addresses, store, counters at the start and end of the window
log.txt           its last log lines
"""


def loopback(address: str) -> str:
    """An address this host can dial for a listening address (0.0.0.0 -> 127.0.0.1)."""
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


class RunBundles:
    """Builds run bundles for ``Query.GetRunBundle``."""

    def __init__(self, address: Callable[[], str]) -> None:
        self._address = address
        self._builders = ThreadPoolExecutor(2, thread_name_prefix="mltrail-bundle")

    def close(self) -> None:
        self._builders.shutdown(wait=False, cancel_futures=True)

    async def stream(self, request: collector_pb2.RunBundleRequest,
                     context: grpc.aio.ServicerContext) -> AsyncIterator[collector_pb2.BundleChunk]:
        loop = asyncio.get_running_loop()
        metadata = dict(context.invocation_metadata() or ())
        bearer = str(metadata.get("authorization", ""))
        with tempfile.TemporaryFile() as out:
            try:
                await loop.run_in_executor(self._builders, self._build, request, out, bearer)
            except ValueError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except PermanentError as exc:
                await context.abort(exc.code, str(exc))
            except MltrailError as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            out.seek(0)
            while piece := await loop.run_in_executor(self._builders, out.read, CHUNK):
                yield collector_pb2.BundleChunk(data=piece)

    def _build(self, request: collector_pb2.RunBundleRequest, out: IO[bytes],
               bearer: str) -> None:
        from mltrail.bundle.run_bundle import RunBundleOptions, write_run_bundle
        from mltrail.query.client import RunNotFound

        writer = BundleWriter(out, "run", Redactor(request.redact),
                              max_bytes=request.max_bytes or DEFAULT_MAX_BYTES,
                              requested_by=dict(request.requested_by))
        options = RunBundleOptions(with_artifacts=request.with_artifacts,
                                   agent_seconds=request.agent_seconds or 2.0)
        try:
            with loopback_client(self._address(), bearer) as client:
                write_run_bundle(client, request.run_id, writer, options)
        except RunNotFound:
            raise PermanentError(f"run {request.run_id!r} not found",
                                 code=grpc.StatusCode.NOT_FOUND) from None
        writer.close()


def loopback_client(address: str, bearer: str = "") -> Any:
    """The Query client the bundle builder reads through: this collector's own Query
    service with the caller's ``authorization`` (``Bearer TOKEN``), so a bundle shows
    only what the caller may read."""
    from mltrail.common.credentials import ClientSecurity
    from mltrail.query.client import QueryClient

    token = bearer.removeprefix("Bearer ").strip()
    return QueryClient(loopback(address), timeout=60.0, security=ClientSecurity(token=token))


def collector_bundle(server: Any, seconds: float) -> bytes:
    """The collector's own bundle (``server`` is the CollectorServer)."""

    def snapshot() -> dict[str, Any]:
        healthy, message = server.health.ready()
        return {"health": {"healthy": healthy, "message": message},
                "grpc": server.grpc_address, "http": server.http_address,
                "store": server.settings.store, "pid": os.getpid(),
                "numbers": registry_numbers(server.metrics.registry)}

    return service_bundle("collector", server.settings, server.metrics.registry, snapshot,
                          seconds, readme=COLLECTOR_README)
