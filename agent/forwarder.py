"""Sends spooled batches to the collector over one pipelined Ingest.Write stream.

The forwarder implements only sending; retries are ``RetryPolicy``'s job.
A session opens one stream and runs two loops::

    pump:     spool.read(cursor) -> IngestRequest bytes -> call.write   (<= window in flight)
    receive:  call.read -> BatchResult per frame -> spool.ack(frame.end), in order

Requests are built by concatenation (``encode_request``): the encoded Batch
bytes from the SDK go out as they are, never decoded. Per batch result:

- OK advances the ack position.
- A permanent code (INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED)
  puts the frame in the dead-letter file and ends the session; the next one
  sends a gap record in the frame's place (which seqs, and why), and the
  frame is acknowledged once the collector committed that.
- ABORTED with ``expected_seq``: out of order, the collector needs earlier
  seqs of that stream. Every frame before this one is acknowledged (results
  come in order, and any other failure ends the session first), so those
  seqs are not in this spool (cut from a damaged spool, lost before it): the
  next session sends a gap record for them first, then the frame. With
  ``fill_gaps=False`` (``mltrail sync``, where another spool may still hold
  them) it waits and retries instead.
- Anything else ends the session with a ``RetryableError``; the next one
  resends from the ack position (the collector skips what it committed).

The collector refuses a batch that does not start at its stream's mark + 1,
so a pipelined batch committed after an earlier one failed cannot skip
over it: no record is lost to reordering. A stream aborted with
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
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from mltrail.agent.retry import RetryPolicy
from mltrail.agent.sources.encode import varint
from mltrail.agent.spool import Position, Spool, SpoolFrame
from mltrail.common.errors import PERMANENT_CODES, RetryableError, code_from_number
from mltrail.common.gaps import gap_batch
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

    def gap_sent(self, frame: SpoolFrame, reason: str) -> None:
        """The gap record that replaces dead-lettered ``frame`` was committed."""

    def gap_filled(self, stream_id: str, first_seq: int, last_seq: int) -> None:
        """Seqs the collector needed were not in the spool; a gap record says so."""


class ForwardTally(ForwardListener):
    """Counts what was forwarded (``drain_spool`` and tests)."""

    def __init__(self) -> None:
        self.records = 0
        self.batches = 0
        self.bytes = 0
        self.dead_records = 0
        self.dead_batches = 0
        self.retries = 0
        self.missing_records = 0  # needed by the collector, not in the spool (gap records)

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        self.records += frame.records
        self.batches += 1
        self.bytes += frame.batch_size

    def retrying(self, error: BaseException, delay: float) -> None:
        self.retries += 1

    def dead_lettered(self, frame: SpoolFrame, message: str) -> None:
        self.dead_records += frame.records
        self.dead_batches += 1

    def gap_filled(self, stream_id: str, first_seq: int, last_seq: int) -> None:
        self.missing_records += last_seq - first_seq + 1


@dataclass
class _Inflight:
    request_id: int
    frames: list[SpoolFrame]
    sent_at: float
    gaps: dict[int, str]  # index in frames -> reason: a gap record went in its place


class _StreamAborted(RetryableError):
    """The collector aborted the whole stream with a permanent code."""


class _Restart(RetryableError):
    """End the session on purpose (not a failure): the next one sends a gap record."""


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
        fill_gaps: bool = True,
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
        self.fill_gaps = fill_gaps
        self._fills: dict[Position, int] = {}  # frame start -> the seq its stream needs first
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
        except _Restart as exc:  # planned: the next session sends a gap record first
            log.info("new ingest session: %s", exc)
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
            # keep only headers in flight: the batches are in the spool if needed again
            headers, batches, gaps = self._request_parts(frames)
            del frames
            request = encode_request(self._request_id, batches)
            del batches
            inflight.append(_Inflight(self._request_id, headers, time.monotonic(), gaps))
            await call.write(request)
            del request

    def _request_parts(self, frames: list[SpoolFrame]
                       ) -> tuple[list[SpoolFrame], list[bytes], dict[int, str]]:
        """Headers and batches to send; gap records where seqs are missing or set aside."""
        headers: list[SpoolFrame] = []
        batches: list[bytes] = []
        gaps: dict[int, str] = {}
        head = frames[0]
        expected = self._fills.pop(head.start, None) if self._fills else None
        if expected is not None:  # an empty header at the frame's start: acks nothing
            missing = (f"not in the agent's spool {self.spool.directory} when the collector "
                       "needed them (cut from a damaged spool, or lost before it)")
            gaps[0] = missing
            headers.append(SpoolFrame(head.start, head.start, head.stream_id, expected,
                                      head.first_seq - 1, False, b""))
            batches.append(gap_batch(head.stream_id, expected, head.first_seq - 1, missing,
                                     head.first_seq - expected))
        dead = self.spool.dead
        for frame in frames:
            reason = dead.get(frame.start) if dead else None
            if reason is None:
                batches.append(frame.batch)
            else:
                gaps[len(headers)] = reason
                batches.append(gap_batch(frame.stream_id, frame.first_seq, frame.last_seq,
                                         f"set aside as a dead letter: {reason}",
                                         frame.records))
            headers.append(frame.without_batch())
        return headers, batches, gaps

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
        gap_done = False
        for index, (frame, result) in enumerate(zip(entry.frames, response.results,
                                                    strict=True)):
            gap = entry.gaps.get(index)
            if result.code != 0:
                failure = await self._refused(frame, result, gap)
                if failure is not None:
                    break
            elif gap is None:
                self.listener.forwarded(frame, result.acked_seq)
            elif frame.start == frame.end:
                self.listener.gap_filled(frame.stream_id, frame.first_seq, frame.last_seq)
            else:
                self.listener.gap_sent(frame, gap)
                gap_done = True
            done = frame.end
        if done is not None:
            await self._ack(done, durable=gap_done)
        self.listener.sent(entry.frames, time.monotonic() - entry.sent_at)
        if failure is not None:
            raise failure

    async def _refused(self, frame: SpoolFrame, result: collector_pb2.BatchResult,
                       gap: str | None) -> RetryableError | None:
        """What a batch refused by the collector means; None: go on past it."""
        code = code_from_number(result.code)
        if code is grpc.StatusCode.ABORTED and result.expected_seq:
            if self.fill_gaps and result.expected_seq < frame.first_seq:
                self._fills[frame.start] = result.expected_seq
                log.error("the collector needs seqs %d-%d of stream %s, which are not in the "
                          "spool; sending a gap record for them (counted as dropped, reason "
                          "not_in_spool)", result.expected_seq, frame.first_seq - 1,
                          frame.stream_id)
                return _Restart(f"collector: batch out of order ({result.message})")
            return RetryableError(f"collector: batch out of order ({result.message})",
                                  retry_after=1.0)
        if code not in _BATCH_PERMANENT:
            return RetryableError(f"collector answered {code.name} for a batch: "
                                  f"{result.message}",
                                  retry_after=result.retry_after_ms / 1000 or None)
        if gap is not None:  # even the gap record was refused: nothing more can be said
            log.error("collector refused the gap record for seqs %d-%d of stream %s (%s: %s); "
                      "going on without it", frame.first_seq, frame.last_seq,
                      frame.stream_id, code.name, result.message)
            return None
        await self._set_aside(frame, f"{code.name}: {result.message}")
        return _Restart("set aside a batch the collector refused; its gap record follows")

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
                if frames[0].start in self.spool.dead:  # its gap record aborts it too
                    await self._ack(frames[0].end, durable=True)
                else:
                    await self._set_aside(frames[0], message)
                return _Restart(f"set aside a batch the collector cannot read ({message})")
            self._isolate_until = frames[-1].end
            return _StreamAborted(f"collector aborted the stream ({message}); "
                                  "resending those batches one by one")
        if code in PERMANENT_CODES:
            return RetryableError(
                f"collector refuses the agent ({message}); the spool keeps every batch",
                retry_after=10.0,
            )
        return RetryableError(message)


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
    missing_records: int = 0  # the collector needed them; not in the spool (gap records)


async def drain_spool(
    spool_dir: str | Path, collector_address: str, timeout: float = 60.0
) -> DrainResult:
    """Forward everything in ``spool_dir`` to ``collector_address`` within ``timeout``.

    Retries transient failures until the deadline; whatever the collector has
    not acknowledged by then stays in the spool for the next call. Seqs the
    collector needs before this spool's (an online run's records still in
    its agent's spool) are waited for, never declared missing.
    """
    spool = await asyncio.to_thread(Spool, spool_dir, fsync="never")
    tally = ForwardTally()
    forwarder = GrpcForwarder(spool, collector_address, listener=tally, fill_gaps=False)
    task = asyncio.create_task(forwarder.run())
    deadline = time.monotonic() + timeout
    try:
        while not spool.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await forwarder.close()
        complete = spool.empty()
        remaining = spool.pending_bytes
        await asyncio.to_thread(spool.close)
    return DrainResult(tally.records, tally.batches, tally.dead_records, tally.dead_batches,
                       tally.retries, remaining, complete, tally.missing_records)
