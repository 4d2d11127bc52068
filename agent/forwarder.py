"""Sends spooled batches to the collector over one pipelined Ingest.Write stream.

The forwarder implements only sending; retries are ``RetryPolicy``'s job.
A session opens one stream and runs two loops::

    pump:     spool.read(cursor) -> IngestRequest bytes -> call.write   (<= window in flight)
    receive:  call.read -> BatchResult per frame -> spool.ack(frame.end), in order

Requests are built by concatenation (``encode_request``): the encoded Batch
bytes from the SDK go out as they are, never decoded. Per batch result:
OK advances the ack position; a permanent code (INVALID_ARGUMENT,
UNAUTHENTICATED, PERMISSION_DENIED) puts the frame in the dead-letter file,
counts it and moves on; anything else ends the session with a
``RetryableError`` and the next session resends from the ack position (the
collector skips what it already committed). A stream aborted with
INVALID_ARGUMENT (a batch the collector cannot decode) makes the next
session send the frames that were in flight one per request, so the bad one
is found and set aside instead of retried forever.

``drain_spool(spool_dir, collector_address, timeout) -> DrainResult``
forwards everything in a spool directory (an offline run written by the
SDK, for ``mltrail sync DIR``) and returns the counts; what is not
acknowledged by the deadline stays on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from mltrail.agent.retry import RetryPolicy
from mltrail.agent.sources.encode import varint
from mltrail.agent.spool import Position, Spool, SpoolFrame
from mltrail.common.errors import PERMANENT_CODES, RetryableError, code_from_number
from mltrail.common.rpc import MESSAGE_LIMITS
from mltrail.proto import collector_pb2

log = logging.getLogger("mltrail.agent.forwarder")

INGEST_WRITE = "/mltrail.v1.Ingest/Write"
_BATCH_PERMANENT = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
     grpc.StatusCode.PERMISSION_DENIED}
)
CHANNEL_OPTIONS = [
    *MESSAGE_LIMITS,
    # reconnect fast after a collector restart (gRPC's default waits up to 120 s)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


def encode_request(request_id: int, batches: Sequence[bytes]) -> bytes:
    """IngestRequest bytes: field 1 (varint) then field 2 per already-encoded Batch."""
    parts = [b"\x08", varint(request_id)]
    for batch in batches:
        parts += [b"\x12", varint(len(batch)), batch]
    return b"".join(parts)


class ForwardListener:
    """What the forwarder reports; the agent's metrics subclass it. No-op here."""

    def connected(self, up: bool) -> None:
        """The stream to the collector opened (True) or broke (False)."""

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        """The collector committed ``frame`` (its stream is at ``acked_seq``)."""

    def sent(self, frames: Sequence[SpoolFrame], seconds: float) -> None:
        """A request was answered ``seconds`` after it was written."""

    def retrying(self, error: BaseException, delay: float) -> None:
        """A send failed and will be retried after ``delay`` seconds."""

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        """The collector refused ``frame`` for good; it is set aside."""

    def superseded(self, frame: SpoolFrame, records: int) -> None:
        """``records`` of ``frame`` were lost to an out-of-order commit (see _apply)."""


class ForwardTally(ForwardListener):
    """Counts what was forwarded (``drain_spool`` and tests)."""

    def __init__(self) -> None:
        self.records = 0
        self.batches = 0
        self.bytes = 0
        self.dead_records = 0
        self.dead_batches = 0
        self.retries = 0
        self.superseded_records = 0

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        self.records += frame.records
        self.batches += 1
        self.bytes += frame.batch_size

    def retrying(self, error: BaseException, delay: float) -> None:
        self.retries += 1

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        self.dead_records += frame.records
        self.dead_batches += 1

    def superseded(self, frame: SpoolFrame, records: int) -> None:
        self.superseded_records += records


@dataclass
class _Inflight:
    request_id: int
    frames: list[SpoolFrame]
    sent_at: float


class _StreamAborted(RetryableError):
    """The collector aborted the whole stream with a permanent code."""


COMPRESSIONS = ("auto", "gzip", "none")


def wants_compression(mode: str, address: str) -> bool:
    """Whether to gzip requests to ``address``: "gzip", "none", or "auto" (gzip unless the
    collector is on this host, where compressing costs CPU and saves nothing)."""
    if mode != "auto":
        return mode == "gzip"
    host = address.removeprefix("dns:///").rpartition(":")[0].strip("[]")
    local = address.startswith("unix:") or host in ("localhost", "::1")
    return not (local or host.startswith("127."))


class GrpcForwarder:
    """Forwards a spool to one collector; ``run()`` until cancelled."""

    def __init__(
        self,
        spool: Spool,
        address: str,
        *,
        batch_max_bytes: int = 2 << 20,
        batch_max_delay: float = 0.02,
        window: int = 4,
        listener: ForwardListener | None = None,
        retry: RetryPolicy | None = None,
        executor: Executor | None = None,
        compress: bool = True,
    ) -> None:
        self.spool = spool
        self.address = address
        self.batch_max_bytes = batch_max_bytes
        self.batch_max_delay = batch_max_delay
        self.window = window
        self.listener = listener or ForwardListener()
        self.retry = retry or RetryPolicy(on_retry=self.listener.retrying)
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, "mltrail-forwarder-io")
        self._data = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._request_id = 0
        self._isolate_until = Position(0, 0)
        self._not_stored: set[tuple[str, int, int]] = set()  # answered UNAVAILABLE
        self._progressed = False
        self._channel = grpc.aio.insecure_channel(
            address, options=CHANNEL_OPTIONS,
            compression=grpc.Compression.Gzip if compress else grpc.Compression.NoCompression,
        )
        self._write = self._channel.stream_stream(
            INGEST_WRITE,
            request_serializer=_identity,
            response_deserializer=collector_pb2.IngestResponse.FromString,
        )

    def notify(self) -> None:
        """New data in the spool; safe to call from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._data.set)

    async def run(self) -> None:
        """Forward forever; a bug in one session is logged, never the end of forwarding."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await self.retry.call(self._attempt)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("forwarder failed unexpectedly; restarting it in 1s")
                self.listener.connected(False)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        await self._channel.close(None)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    async def _attempt(self) -> None:
        """One session; a failure after progress starts a fresh backoff sequence."""
        self._progressed = False
        try:
            await self._session()
        except RetryableError as exc:
            self.listener.connected(False)
            if not self._progressed:
                raise
            self.listener.retrying(exc, exc.retry_after or 0.0)
            log.warning("forwarding interrupted (%s); reconnecting", exc)
            await asyncio.sleep(exc.retry_after or 0.0)

    async def _session(self) -> None:
        call = self._write(None)
        inflight: deque[_Inflight] = deque()
        slots = asyncio.Semaphore(self.window)
        pump = asyncio.create_task(self._pump(call, inflight, slots))
        receive = asyncio.create_task(self._receive(call, inflight, slots))
        try:
            done, _ = await asyncio.wait({pump, receive}, return_when=asyncio.FIRST_COMPLETED)
            if receive in done:
                receive.result()
            pump.result()
        except grpc.aio.AioRpcError as exc:
            raise await self._stream_error(exc, inflight) from None
        finally:
            for task in (pump, receive):
                task.cancel()
            call.cancel()
            await asyncio.gather(pump, receive, return_exceptions=True)

    # ---- sending -------------------------------------------------------

    async def _pump(
        self, call: grpc.aio.StreamStreamCall, inflight: deque[_Inflight],
        slots: asyncio.Semaphore,
    ) -> None:
        cursor = self.spool.ack_position
        while True:
            await slots.acquire()
            isolate = cursor < self._isolate_until
            if isolate:
                while inflight:  # one frame per request, one request at a time
                    await asyncio.sleep(0.005)
            frames = await self._next_frames(cursor, 1 if isolate else 10_000, bool(inflight))
            cursor = frames[-1].end
            self._request_id += 1
            request = encode_request(self._request_id, [f.batch for f in frames])
            # keep only headers in flight: the batches are in the spool if needed again
            headers = [f.without_batch() for f in frames]
            del frames
            inflight.append(_Inflight(self._request_id, headers, time.monotonic()))
            await call.write(request)
            del request

    async def _next_frames(self, cursor: Position, max_frames: int, busy: bool
                           ) -> list[SpoolFrame]:
        """Frames from ``cursor``; waits for data, and lingers briefly while busy."""
        deadline = time.monotonic() + self.batch_max_delay
        while True:
            self._data.clear()
            frames = await self._read(cursor, max_frames)
            size = sum(len(f.batch) for f in frames)
            full = size >= self.batch_max_bytes // 2 or len(frames) >= max_frames
            if frames and (full or not busy or time.monotonic() >= deadline):
                return frames
            if frames:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._data.wait(), deadline - time.monotonic())
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._data.wait(), 1.0)  # 1 s: a missed notify

    async def _read(self, cursor: Position, max_frames: int) -> list[SpoolFrame]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self.spool.read, cursor, self.batch_max_bytes, max_frames
        )

    # ---- receiving -----------------------------------------------------

    async def _receive(
        self, call: grpc.aio.StreamStreamCall, inflight: deque[_Inflight],
        slots: asyncio.Semaphore,
    ) -> None:
        await call.wait_for_connection()
        self.listener.connected(True)
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                raise RetryableError("the collector closed the ingest stream")
            if not inflight:
                raise RetryableError("the collector answered a request never sent")
            entry = inflight.popleft()
            slots.release()
            await self._apply(entry, response)

    async def _apply(self, entry: _Inflight, response: collector_pb2.IngestResponse) -> None:
        """Map per-batch results to spool positions; ack in order."""
        if response.request_id != entry.request_id or len(response.results) != len(entry.frames):
            raise RetryableError(
                f"collector response {response.request_id} with {len(response.results)} "
                f"results does not match request {entry.request_id} of {len(entry.frames)}"
            )
        done: Position | None = None
        failure: RetryableError | None = None
        set_aside = False
        for frame, result in zip(entry.frames, response.results, strict=True):
            code = code_from_number(result.code)
            if result.code == 0:
                self._check_superseded(frame, result)
                self.listener.forwarded(frame, result.acked_seq)
            elif code in _BATCH_PERMANENT:
                await self._set_aside(frame, f"{code.name}: {result.message}")
                set_aside = True
            else:
                self._not_stored.add(_frame_key(frame))
                failure = RetryableError(
                    f"collector answered {code.name} for a batch: {result.message}",
                    retry_after=result.retry_after_ms / 1000 or None,
                )
                break
            done = frame.end
        if done is not None:
            await self._ack(done, durable=set_aside)
        self.listener.sent(entry.frames, time.monotonic() - entry.sent_at)
        if failure is not None:
            raise failure

    def _check_superseded(self, frame: SpoolFrame, result: collector_pb2.BatchResult) -> None:
        """Count records lost because a later batch of their stream was committed first.

        A pipelined request can be committed after an earlier one was answered
        UNAVAILABLE; the stream's high-water mark then passes the earlier batch,
        and its resend is skipped as duplicates. The collector said it stored
        nothing of that batch, so those duplicates are records lost: counted
        and logged, never silent (invariant 5).
        """
        if not self._not_stored or _frame_key(frame) not in self._not_stored:
            return
        self._not_stored.discard(_frame_key(frame))
        if result.duplicates:
            log.error(
                "%d records of stream %s (seq %d-%d) were skipped by the collector after it "
                "had refused them as UNAVAILABLE: a later batch of the stream was committed "
                "first; they are lost and counted as dropped (reason superseded)",
                result.duplicates, frame.stream_id, frame.first_seq, frame.last_seq)
            self.listener.superseded(frame, result.duplicates)

    async def _ack(self, position: Position, durable: bool = False) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.spool.ack, position, durable)
        self._progressed = True

    async def _set_aside(self, header: SpoolFrame, message: str) -> None:
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._executor, self.spool.read, header.start, 1, 1)
        frame = found[0] if found and found[0].start == header.start else header
        log.error(
            "collector refused a batch of stream %s (seq %d-%d): %s; it is kept in %s/dead "
            "and forwarding goes on", frame.stream_id, frame.first_seq, frame.last_seq,
            message, self.spool.directory,
        )
        await loop.run_in_executor(self._executor, self.spool.dead_letter, frame, message)
        self.listener.dead_lettered(frame, message)

    async def _stream_error(
        self, exc: grpc.aio.AioRpcError, inflight: deque[_Inflight]
    ) -> RetryableError:
        """Translate a broken stream; find and set aside a batch that aborts it."""
        code = exc.code()
        message = f"{code.name}: {exc.details()}"
        if code is grpc.StatusCode.INVALID_ARGUMENT and inflight:
            frames = [f for entry in inflight for f in entry.frames]
            if len(frames) == 1 and frames[0].start < self._isolate_until:
                await self._set_aside(frames[0], message)
                await self._ack(frames[0].end, durable=True)
                return RetryableError(f"set aside a batch the collector cannot read ({message})")
            self._isolate_until = frames[-1].end
            return _StreamAborted(f"collector aborted the stream ({message}); "
                                  "resending those batches one by one")
        if code in PERMANENT_CODES:
            return RetryableError(
                f"collector refuses the agent ({message}); the spool keeps every batch",
                retry_after=10.0,
            )
        return RetryableError(message)


def _frame_key(frame: SpoolFrame) -> tuple[str, int, int]:
    return (frame.stream_id, frame.first_seq, frame.last_seq)


def _identity(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class DrainResult:
    """What ``drain_spool`` forwarded, set aside and left on disk."""

    records: int
    batches: int
    dead_records: int
    dead_batches: int
    retries: int
    remaining_bytes: int
    complete: bool
    superseded_records: int = 0  # lost to an out-of-order commit (logged, counted)


async def drain_spool(
    spool_dir: str | Path, collector_address: str, timeout: float = 60.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> DrainResult:
    """Forward everything in ``spool_dir`` to ``collector_address`` within ``timeout``.

    Retries transient failures until the deadline; whatever the collector has
    not acknowledged by then stays in the spool for the next call.
    ``on_progress(acknowledged_bytes, total_bytes)`` is called as it goes.
    """
    spool = await asyncio.to_thread(Spool, spool_dir, fsync="never")
    total = spool.pending_bytes
    tally = ForwardTally()
    forwarder = GrpcForwarder(spool, collector_address, listener=tally)
    task = asyncio.create_task(forwarder.run())
    deadline = time.monotonic() + timeout
    try:
        while not spool.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if on_progress is not None:
                on_progress(max(0, total - spool.pending_bytes), total)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await forwarder.close()
        complete = spool.empty()
        remaining = spool.pending_bytes
        await asyncio.to_thread(spool.close)
    return DrainResult(tally.records, tally.batches, tally.dead_records, tally.dead_batches,
                       tally.retries, remaining, complete, tally.superseded_records)
