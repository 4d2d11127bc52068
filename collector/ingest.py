"""Ingest.Write: validate, dedupe, store, then acknowledge (design.md invariants 2-4).

The stream's requests arrive as raw bytes (an identity deserializer), so
bytes that do not decode get a clear INVALID_ARGUMENT instead of gRPC's
INTERNAL, and so that decoding happens where we choose: for a large request
in the ingest worker processes (``prepare_pool.PreparePool``: decode,
validate, points gathered per series), a few requests of a stream ahead of
the one being written; a small one on the writer thread with its write. The
store transaction and encoding the response run on the store's single writer
thread (``IngestPipeline.write``), one request at a time, in each stream's
order; the event loop only moves bytes, so queries and followers stay
responsive.

Per request: every batch is validated; invalid ones are answered code 3 and
contribute nothing; the valid ones go to ``Store.write_batch`` in one
transaction; the response (one BatchResult per batch, in request order) is
sent only after that commit. A busy store answers code 14 with
``retry_after_ms`` for every valid batch of the request, and then the
stream is closed (UNAVAILABLE): the agent pipelines requests, and a later
request of the same stream committed after an earlier one failed would
raise the high-water mark over the failed records, so their resend would be
skipped as duplicates. Closing makes the client resend in order from the
first unacknowledged request.

Credentials (collector/auth.py) are checked when the stream opens and again
for every request (from a cache, looked up anew every few seconds), so a
revoked token stops a long-lived stream within seconds. The workspace every
record is stored in is the token's. A refusal aborts the stream
(UNAUTHENTICATED or PERMISSION_DENIED) before anything of the request is
stored; a batch for a run of another workspace is answered
PERMISSION_DENIED. The agent keeps such batches and waits for a fixed token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from mltrail.collector.auth import WRITE, Authenticator, Principal, authorize
from mltrail.collector.metrics import CollectorMetrics
from mltrail.collector.notify import LogNotifier
from mltrail.collector.prepare import PreparedRequest, prepare_request
from mltrail.collector.prepare_pool import PreparePool
from mltrail.collector.store import (
    DEFAULT_WORKSPACE,
    BatchOutcome,
    Store,
    ValidBatch,
    WriteSummary,
)
from mltrail.common.credentials import AUTH_OK_HEADER
from mltrail.common.errors import MltrailError, RetryableError, code_number
from mltrail.proto import collector_pb2

log = logging.getLogger(__name__)

_INVALID = code_number(grpc.StatusCode.INVALID_ARGUMENT)
_UNAVAILABLE = code_number(grpc.StatusCode.UNAVAILABLE)
_DENIED = code_number(grpc.StatusCode.PERMISSION_DENIED)
_ABORTED = code_number(grpc.StatusCode.ABORTED)
DEFAULT_RETRY_AFTER_MS = 500


class IngestPipeline:
    """One prepared request in, one encoded response out; runs on the store writer thread."""

    def __init__(self, store: Store, metrics: CollectorMetrics) -> None:
        self._store = store
        self._metrics = metrics

    @property
    def metrics(self) -> CollectorMetrics:
        return self._metrics

    def write(self, request: PreparedRequest | bytes, workspace: str = DEFAULT_WORKSPACE
              ) -> tuple[bytes, WriteSummary | None, bool]:
        """The encoded response, what was written, and whether the store failed
        (every valid batch answered retryable). A request still in bytes is prepared
        here first (DecodeError: the caller aborts)."""
        if isinstance(request, bytes):
            request = prepare_request(request)
        results: list[collector_pb2.BatchResult | None] = [None] * request.size
        for refusal in request.refused:
            self._metrics.rejected.labels(refusal.reason).inc()
            results[refusal.position] = collector_pb2.BatchResult(
                stream_id=refusal.stream_id, code=_INVALID, message=refusal.message)
        valid = request.batches(workspace)
        positions = [position for position, _ in request.valid]
        summary = self._write(valid, positions, results) if valid else None
        response = collector_pb2.IngestResponse(request_id=request.request_id, results=results)
        return response.SerializeToString(), summary, bool(valid) and summary is None

    def _write(self, valid: list[ValidBatch], positions: list[int],
               results: list[collector_pb2.BatchResult | None]) -> WriteSummary | None:
        started = time.perf_counter()
        try:
            summary = self._store.write_batch(valid)
        except (MltrailError, OSError) as exc:  # the store failed as a whole: retry later
            log.error("store write failed, answering UNAVAILABLE: %s", exc)
            self._metrics.retryable.inc()
            retry_ms = _retry_after_ms(exc)
            for index, batch in zip(positions, valid, strict=True):
                results[index] = collector_pb2.BatchResult(
                    stream_id=batch.stream_id, code=_UNAVAILABLE, retry_after_ms=retry_ms,
                    message=f"store unavailable ({exc}); nothing of this batch was stored; "
                            "retry")
            return None
        self._metrics.store_seconds.observe(time.perf_counter() - started)
        for index, outcome in zip(positions, summary.outcomes, strict=True):
            results[index] = self._result(outcome)
        self._metrics.latest.update(summary.latest, summary.workspaces)
        return summary

    def count_undecodable(self) -> None:
        self._metrics.rejected.labels("undecodable").inc()
        self._metrics.bad_request("/mltrail.v1.Ingest/Write")

    def count_internal(self) -> None:
        self._metrics.rejected.labels("internal").inc()

    def _result(self, outcome: BatchOutcome) -> collector_pb2.BatchResult:
        metrics = self._metrics
        if outcome.denied:
            metrics.rejected.labels("foreign_run").inc()
            return collector_pb2.BatchResult(
                stream_id=outcome.stream_id, acked_seq=outcome.acked_seq, code=_DENIED,
                message=f"batch for stream {outcome.stream_id!r} refused: {outcome.error}; "
                        "nothing of this batch was stored")
        if outcome.error is not None:
            metrics.rejected.labels("store").inc()
            return collector_pb2.BatchResult(
                stream_id=outcome.stream_id, acked_seq=outcome.acked_seq, code=_INVALID,
                message=f"batch for stream {outcome.stream_id!r} rejected: {outcome.error}; "
                        "nothing of this batch was stored")
        if outcome.expected_seq:
            metrics.out_of_order.inc()
            return collector_pb2.BatchResult(
                stream_id=outcome.stream_id, acked_seq=outcome.acked_seq, code=_ABORTED,
                expected_seq=outcome.expected_seq, retry_after_ms=0,
                message=f"batch for stream {outcome.stream_id!r} is out of order: the stream "
                        f"needs seq {outcome.expected_seq} next; nothing of this batch was "
                        f"stored; resend from seq {outcome.expected_seq}")
        metrics.batches.inc()
        metrics.duplicates.inc(outcome.duplicates)
        if outcome.gap:
            metrics.gaps.inc()
        for kind, count in outcome.kinds.items():
            metrics.records.labels(kind).inc(count)
        return collector_pb2.BatchResult(
            stream_id=outcome.stream_id, acked_seq=outcome.acked_seq, code=0,
            stored=outcome.stored, duplicates=outcome.duplicates)


def _retry_after_ms(exc: BaseException) -> int:
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        return int(exc.retry_after * 1000)
    return DEFAULT_RETRY_AFTER_MS


class IngestService:
    """The mltrail.v1.Ingest service on a grpc.aio server."""

    def __init__(self, pipeline: IngestPipeline, writer: Executor, notifier: LogNotifier,
                 closing: asyncio.Event, auth: Authenticator | None = None,
                 readers: Executor | None = None, pool: PreparePool | None = None) -> None:
        self._pipeline = pipeline
        self._writer = writer
        self._notifier = notifier
        self._closing = closing
        self._auth = auth or Authenticator(None)
        self._readers = readers or writer
        self._pool = pool or PreparePool(0, pipeline.metrics)

    def handler(self) -> grpc.GenericRpcHandler:
        write = grpc.stream_stream_rpc_method_handler(
            self.write, request_deserializer=None, response_serializer=None)
        return grpc.method_handlers_generic_handler("mltrail.v1.Ingest", {"Write": write})

    async def write(self, requests: AsyncIterator[bytes],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        number = 0
        caller = await self._caller(context)
        await context.send_initial_metadata(((AUTH_OK_HEADER, "ok"),))
        depth = max(self._pool.workers, 1)
        async for preparing in _prepared_in_order(requests, self._closing, context,
                                                  self._pool.prepare, depth):
            number += 1
            caller = await self._caller(context)
            try:
                prepared = await preparing
                response, summary, store_failed = await loop.run_in_executor(
                    self._writer, self._pipeline.write, prepared, caller.workspace)
            except DecodeError as exc:
                self._pipeline.count_undecodable()
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request {number} on this /mltrail.v1.Ingest/Write stream is not an "
                    f"IngestRequest (its bytes do not decode: {exc}); nothing "
                    "of it was stored; the stream is closed")
            except Exception as exc:  # a bug: UNKNOWN would be retried by the agent forever
                log.exception("request %d failed unexpectedly; refusing it", number)
                self._pipeline.count_internal()
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request {number} on this stream failed in the collector "
                    f"({type(exc).__name__}: {exc}); nothing of it was stored; set it aside "
                    "and report this as a bug; the stream is closed")
            if summary is not None:
                self._notifier.notify(summary.log_runs | summary.ended_runs)
            yield response
            if store_failed:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the store failed on request {number}; requests after it on this stream "
                    "were not processed; reconnect and resend from the first unacknowledged one")

    async def _caller(self, context: grpc.aio.ServicerContext) -> Principal:
        return await authorize(self._auth, context, WRITE, self._readers)


_END, _CLOSING = object(), object()  # markers in a stream's queue of preparations


async def _prepared_in_order(
        requests: AsyncIterator[bytes], closing: asyncio.Event,
        context: grpc.aio.ServicerContext,
        prepare: Callable[[bytes], Awaitable[PreparedRequest | bytes]], depth: int,
) -> AsyncIterator[asyncio.Future[PreparedRequest | bytes]]:
    """The stream's requests in order, each as its preparation under way: up to ``depth``
    are read and prepared while the one before them is written (the queue is the
    stream's share of memory; full, it stops reading, and gRPC's flow control holds the
    sender). Ends with the stream, or when shutdown begins (after the requests read
    before it, which are stored and acknowledged)."""
    ahead: asyncio.Queue[object] = asyncio.Queue(depth)
    reader = asyncio.ensure_future(_read_ahead(requests, closing, prepare, ahead))
    try:
        while True:
            item = await ahead.get()
            if item is _END:
                return
            if item is _CLOSING:
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    "collector is shutting down; every acknowledged batch is "
                                    "stored; resend the rest to another replica or later")
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        reader.cancel()
        while not ahead.empty():  # read ahead, never written nor acknowledged
            left = ahead.get_nowait()
            if isinstance(left, asyncio.Future):
                left.cancel()
                left.add_done_callback(_retrieve)


async def _read_ahead(requests: AsyncIterator[bytes], closing: asyncio.Event,
                      prepare: Callable[[bytes], Awaitable[PreparedRequest | bytes]],
                      ahead: asyncio.Queue[object]) -> None:
    iterator = requests.__aiter__()
    closed = asyncio.ensure_future(closing.wait())
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({pending, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                await ahead.put(_CLOSING)
                return
            done, pending = pending, None
            try:
                raw = done.result()
            except StopAsyncIteration:
                await ahead.put(_END)
                return
            except Exception as exc:  # the stream failed: the writer side raises it
                await ahead.put(exc)
                return
            await ahead.put(asyncio.ensure_future(prepare(raw)))
    finally:
        closed.cancel()
        if pending is not None:  # the RPC was cancelled (the client went) mid-wait
            pending.cancel()
            pending.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Collect the outcome of a future nobody waits for any more (no 'never retrieved')."""
    if not future.cancelled():
        future.exception()
