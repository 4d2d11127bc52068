"""Sends spooled batches to the collector over one pipelined Ingest.Write stream.

With several collectors (``agent/targets.py``), each session goes to one of
them: a session that fails fails over to the next at once, and a session
older than ``rebalance_seconds`` ends once its requests are answered, so the
next goes to the next collector. A stream's batches are never in flight to
two collectors at once: a later batch committed first would raise the
high-water mark over an earlier one.

The forwarder implements only sending; retries are ``RetryPolicy``'s job.
A session opens one stream and runs two loops::

    pump:     spool.read(cursor) -> IngestRequest bytes -> call.write   (<= window in flight)
    receive:  call.read -> BatchResult per frame -> spool.ack(frame.end), in order

Requests are built by concatenation (``encode_request``): the encoded Batch
bytes from the SDK go out as they are, never decoded. Per batch result:

- OK advances the ack position.
- INVALID_ARGUMENT puts the frame in the dead-letter file and ends the
  session; the next one sends a gap record in the frame's place (which
  seqs, and why), and the frame is acknowledged once the collector
  committed that.
- UNAUTHENTICATED or PERMISSION_DENIED (for a batch or for the whole
  stream) is the agent's credentials, not the data: nothing is set aside,
  the session ends with ``AuthRefused``, the listener hears
  ``credentials_refused`` (health turns bad at once), the reason is logged
  once, and the forwarder waits until the token file changes (or
  ``AUTH_RETRY_SECONDS``) and resumes from the ack position. Each session
  reads the token anew (``TokenSource``), so a rotated token file is used
  from the next connection on.
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

``mltrail.agent.drain.drain_spool`` forwards a whole spool directory with it
(``mltrail sync DIR``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace

import grpc

from mltrail.agent.forward_listener import ForwardListener
from mltrail.agent.gap_records import request_parts
from mltrail.agent.retry import RetryPolicy
from mltrail.agent.sources.encode import varint
from mltrail.agent.spool import Position, Spool, SpoolFrame
from mltrail.agent.targets import CollectorTargets, plain_targets
from mltrail.common.credentials import (
    AUTH_OK_HEADER,
    ClientSecurity,
    CredentialsError,
    TokenSource,
    call_metadata,
    collector_channel,
    file_stamps,
    tls_failure_hint,
)
from mltrail.common.errors import (
    PERMANENT_CODES,
    MltrailError,
    RetryableError,
    code_from_number,
)
from mltrail.common.rpc import MESSAGE_LIMITS
from mltrail.proto import collector_pb2

log = logging.getLogger("mltrail.agent.forwarder")

INGEST_WRITE = "/mltrail.v1.Ingest/Write"
_BATCH_PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
_AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
AUTH_RETRY_SECONDS = 10.0  # a refused agent tries again this often, and when its token changes
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


class AuthRefused(MltrailError):
    """The collector refuses the credentials (or they cannot be read); not retried by
    the retry policy: the forwarder waits for new credentials instead."""


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
        security: ClientSecurity | None = None,
        targets: CollectorTargets | None = None,
        rebalance_seconds: float = 0.0,
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
        security = security or ClientSecurity()
        if security.uses_tls(address.split(",")[0].strip()) and not security.tls:
            security = replace(security, tls=True)  # https:// on the setting: every target
        self.security = security
        self.tokens = TokenSource(self.security.token, self.security.token_file)
        self._told = ""  # the refusal last logged (said once, not per retry)
        self._compression = (grpc.Compression.Gzip if compress
                             else grpc.Compression.NoCompression)
        self._tls_stamps = file_stamps(*self.security.tls_files)
        self._targets = targets or CollectorTargets(plain_targets(address))
        self.rebalance_seconds = rebalance_seconds
        self.current = self._targets.entries[0]  # the collector of the latest session
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._rotate_at = 0.0

    def _stream(self, address: str) -> grpc.aio.StreamStreamMultiCallable:
        """Ingest.Write on the channel to ``address`` (one channel per address, kept)."""
        channel = self._channels.get(address)
        if channel is None:
            try:
                channel = collector_channel(address, self.security, CHANNEL_OPTIONS, aio=True,
                                            compression=self._compression)
            except CredentialsError as exc:
                raise AuthRefused(str(exc)) from None
            self._channels[address] = channel
        return channel.stream_stream(
            INGEST_WRITE,
            request_serializer=_identity,
            response_deserializer=collector_pb2.IngestResponse.FromString,
        )

    async def _reopen_if_tls_changed(self) -> None:
        """A renewed client certificate or CA on disk is used from the next session."""
        stamps = file_stamps(*self.security.tls_files)
        if stamps == self._tls_stamps:
            return
        self._tls_stamps = stamps
        old, self._channels = self._channels, {}
        log.info("TLS files changed; reconnecting with them")
        for channel in old.values():
            await channel.close(None)

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
            except AuthRefused as exc:
                await self._wait_for_credentials(str(exc))
            except Exception:
                log.exception("forwarder failed unexpectedly; restarting it in 1s")
                self.listener.connected(False)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        if self._own_executor:
            self._executor.shutdown(wait=False)

    async def _attempt(self) -> None:
        """One session; a failure after progress starts a fresh backoff sequence, and
        a failure with another collector usable fails over to it at once."""
        self._progressed = False
        target = self.current = await self._targets.pick()
        several = self._targets.several
        self._rotate_at = (time.monotonic() + self.rebalance_seconds
                           if several and self.rebalance_seconds > 0 else 0.0)
        try:
            await self._session(target)
            self._targets.succeeded(target)  # ended to rebalance: the next goes elsewhere
        except _Restart as exc:  # planned: the next session sends a gap record first
            self._targets.succeeded(target)
            log.info("new ingest session: %s", exc)
        except RetryableError as exc:
            self.listener.connected(False)
            if (several and not isinstance(exc, _StreamAborted)
                    and self._targets.failed(target)):
                log.warning("collector %s failed (%s); failing over to another", target, exc)
                self.listener.retrying(exc, 0.0)
                return
            if self._progressed:
                self._targets.succeeded(target)
            if not self._progressed:
                raise
            self.listener.retrying(exc, exc.retry_after or 0.0)
            log.warning("forwarding interrupted (%s); reconnecting", exc)
            await asyncio.sleep(exc.retry_after or 0.0)

    async def _wait_for_credentials(self, reason: str) -> None:
        """Stop sending until the token file changes or AUTH_RETRY_SECONDS pass."""
        self.listener.connected(False)
        self.listener.credentials_refused(reason)
        if reason != self._told:
            self._told = reason
            where = f"the token file {self.tokens.path}" if self.tokens.path else "the token"
            log.error("the collector refuses this agent (%s); nothing is set aside: every "
                      "record stays in the spool (%d bytes) and is sent once %s is fixed; "
                      "checking again when it changes and every %.0fs", reason,
                      self.spool.pending_bytes, where, AUTH_RETRY_SECONDS)
        files = tuple(p for p in (self.tokens.path, *self.security.tls_files) if p)
        before = file_stamps(*files)
        deadline = time.monotonic() + AUTH_RETRY_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if file_stamps(*files) != before:
                log.info("credential files changed; reconnecting")
                return

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        try:
            token = self.tokens.get()
        except CredentialsError as exc:
            raise AuthRefused(str(exc)) from None
        return call_metadata(token, self.security.workspace)

    async def _session(self, target: str) -> None:
        await self._reopen_if_tls_changed()
        call = self._stream(target)(None, metadata=self._metadata())
        inflight: deque[_Inflight] = deque()
        slots = asyncio.Semaphore(self.window)
        pump = asyncio.create_task(self._pump(call, inflight, slots))
        receive = asyncio.create_task(self._receive(call, inflight, slots))
        try:
            done, _ = await asyncio.wait({pump, receive}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done and pump.exception() is None:  # ended to rebalance
                with contextlib.suppress(RetryableError, grpc.aio.AioRpcError, TimeoutError):
                    await asyncio.wait_for(receive, 10)  # the collector closes its side
                return
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
            if self._rotate_at and time.monotonic() >= self._rotate_at:
                await self._end_for_rebalance(call, inflight)
                return
            isolate = cursor < self._isolate_until
            if isolate:
                while inflight:  # one frame per request, one request at a time
                    await asyncio.sleep(0.005)
            frames = await self._next_frames(cursor, 1 if isolate else 10_000, bool(inflight))
            cursor = frames[-1].end
            self._request_id += 1
            # keep only headers in flight: the batches are in the spool if needed again
            headers, batches, gaps = request_parts(self.spool, self._fills, frames)
            del frames
            request = encode_request(self._request_id, batches)
            del batches
            inflight.append(_Inflight(self._request_id, headers, time.monotonic(), gaps))
            await call.write(request)
            del request

    async def _end_for_rebalance(self, call: grpc.aio.StreamStreamCall,
                                 inflight: deque[_Inflight]) -> None:
        """Close the stream once every request in flight is answered, so the next
        session goes to the next collector: no agent stays pinned to one replica
        (a restarted replica gets its share back)."""
        while inflight:
            await asyncio.sleep(0.005)
        await call.done_writing()
        log.debug("session to %s ended to rebalance", self.current)

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
        if any(key == AUTH_OK_HEADER for key, _ in (await call.initial_metadata() or ())):
            self._told = ""
            self.listener.credentials_accepted()
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
        failure: MltrailError | None = None
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
                       gap: str | None) -> MltrailError | None:
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
        if code in _AUTH_CODES:  # the credentials, not the data: keep it, wait
            return AuthRefused(f"{code.name}: {result.message}")
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
    ) -> MltrailError:
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
        if code in _AUTH_CODES:
            return AuthRefused(message)
        hint = tls_failure_hint(exc.details() or "") if code is grpc.StatusCode.UNAVAILABLE \
            else None
        if hint is not None and self.security.uses_tls(self.address):
            return RetryableError(f"{hint} ({message})")
        if code in PERMANENT_CODES:
            return RetryableError(
                f"collector refuses the agent ({message}); the spool keeps every batch",
                retry_after=10.0,
            )
        return RetryableError(message)


def _identity(data: bytes) -> bytes:
    return data
