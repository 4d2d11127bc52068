"""The SDK receiver: the ``mltrail.v1.Agent`` service on the unix socket.

``Append`` reads only the ``AppendRequest`` envelope, spools ``batch`` as it
is and answers one ``AppendAck`` per request, in order, once the batch is in
the spool under the fsync policy. Two kinds of "no" (``AppendAck.code``):

- INVALID_ARGUMENT: the batch can never be spooled (too big, bad seqs). A
  gap record for its seqs is spooled instead, so the collector knows why
  they are missing, and the sender counts the records and goes on.
- UNAVAILABLE: not now (the disk is full, the agent is stopping). The sender
  keeps the batch and resends it; every later request of the same Append
  stream gets the same answer without being spooled, so a stream's batches
  reach the spool in seq order. ``WaitForwarded`` answers from ``ForwardTracker``:
what the collector acknowledged per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

import grpc

from mltrail.agent.forward_listener import ForwardListener
from mltrail.agent.spool import (
    Spool,
    SpoolClosedError,
    SpoolDiskFullError,
    SpoolFrame,
    SpoolRefusedError,
)
from mltrail.common.errors import code_number
from mltrail.common.rpc import MAX_APPEND_BYTES
from mltrail.proto import agent_pb2, agent_pb2_grpc

log = logging.getLogger("mltrail.agent.sdk")

_INVALID = code_number(grpc.StatusCode.INVALID_ARGUMENT)
_UNAVAILABLE = code_number(grpc.StatusCode.UNAVAILABLE)


def _gap_possible(req: agent_pb2.AppendRequest) -> bool:
    return (0 < len(req.stream_id.encode()) <= 255 and 1 <= req.first_seq <= req.last_seq
            and req.last_seq - req.first_seq < 1 << 40)


class ForwardTracker(ForwardListener):
    """Per stream: the seq the collector acknowledged and the frames still spooled.

    After a restart the agent does not know what it forwarded before; a
    stream with nothing left in the spool counts as fully forwarded.
    """

    def __init__(self, pending: Counter[str] | None = None) -> None:
        self._forwarded: dict[str, int] = {}
        self._pending: Counter[str] = Counter(pending or {})
        self._changed: asyncio.Future[None] | None = None  # resolved on the next change

    def appended(self, stream_id: str) -> None:
        """Called before the spool append, so a fast forward cannot precede it."""
        self._pending[stream_id] += 1

    def not_appended(self, stream_id: str) -> None:
        if self._pending[stream_id] > 1:
            self._pending[stream_id] -= 1
        else:
            self._pending.pop(stream_id, None)

    def forwarded(self, frame: SpoolFrame, acked_seq: int) -> None:
        self._done(frame, max(acked_seq, frame.last_seq))

    def gap_sent(self, frame: SpoolFrame, reason: str) -> None:
        self._done(frame, frame.last_seq)  # set aside: waiting longer would not help

    def _done(self, frame: SpoolFrame, seq: int) -> None:
        sid = frame.stream_id
        self._forwarded[sid] = max(self._forwarded.get(sid, 0), seq)
        if self._pending[sid] > 1:
            self._pending[sid] -= 1
        else:
            self._pending.pop(sid, None)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    def position(self, stream_id: str, seq: int) -> tuple[int, bool]:
        forwarded = self._forwarded.get(stream_id, 0)
        if forwarded >= seq:
            return forwarded, True
        if self._pending.get(stream_id, 0) == 0:
            return max(forwarded, seq), True
        return forwarded, False

    async def wait(self, stream_id: str, seq: int, timeout: float) -> tuple[int, bool]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.position(stream_id, seq)[1]:
                    if self._changed is None:
                        self._changed = asyncio.get_running_loop().create_future()
                    await asyncio.shield(self._changed)
        return self.position(stream_id, seq)


class SdkReceiver(agent_pb2_grpc.AgentServicer):
    """Spools what SDKs append; answers WaitForwarded and Info."""

    def __init__(
        self,
        spool: Spool,
        tracker: ForwardTracker,
        executor: Executor,
        info: Callable[[], agent_pb2.AgentInfo],
        max_batch_bytes: int = MAX_APPEND_BYTES,
        on_received: Callable[[int, int], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._spool = spool
        self._tracker = tracker
        self._executor = executor
        self._info = info
        self._max_batch_bytes = max_batch_bytes
        self._on_received = on_received or (lambda records, size: None)
        self._on_refused = on_refused or (lambda reason: None)

    async def Append(
        self, request_iterator: AsyncIterator[agent_pb2.AppendRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.AppendAck]:
        later: agent_pb2.AppendAck | None = None  # a retryable answer: the rest waits too
        async for request in request_iterator:
            if later is not None:
                yield agent_pb2.AppendAck(stream_id=request.stream_id, error=later.error,
                                          code=later.code, retry_after_ms=later.retry_after_ms)
                continue
            ack = await self._append(request)
            if ack.code == _UNAVAILABLE:
                later = ack
            yield ack

    def _problem(self, req: agent_pb2.AppendRequest) -> str | None:
        if not req.stream_id:
            return "empty stream_id: every batch needs its sender's stream id"
        if len(req.stream_id.encode()) > 255:
            return "stream_id longer than 255 bytes"
        if req.first_seq < 1 or req.last_seq < req.first_seq:
            return (f"bad seq range {req.first_seq}..{req.last_seq}: "
                    "need 1 <= first_seq <= last_seq")
        if len(req.batch) > self._max_batch_bytes:
            return (f"batch of {len(req.batch)} bytes is over the agent's limit of "
                    f"{self._max_batch_bytes}; send smaller batches")
        if not req.batch:
            return "empty batch"
        return None

    async def _append(self, req: agent_pb2.AppendRequest) -> agent_pb2.AppendAck:
        problem = self._problem(req)
        if problem is not None:
            return await self._refuse(req, problem)
        loop = asyncio.get_running_loop()
        self._tracker.appended(req.stream_id)
        try:
            await loop.run_in_executor(
                self._executor, self._spool.append, req.stream_id, req.first_seq,
                req.last_seq, req.batch, req.droppable,
            )
        except SpoolRefusedError as exc:
            self._tracker.not_appended(req.stream_id)
            return await self._refuse(req, str(exc))
        except (SpoolDiskFullError, SpoolClosedError) as exc:
            self._tracker.not_appended(req.stream_id)
            self._on_refused(type(exc).__name__)
            retry = exc.retry_after if isinstance(exc, SpoolDiskFullError) else None
            return agent_pb2.AppendAck(stream_id=req.stream_id, error=str(exc),
                                       code=_UNAVAILABLE,
                                       retry_after_ms=int((retry or 1.0) * 1000))
        self._on_received(req.last_seq - req.first_seq + 1, len(req.batch))
        return agent_pb2.AppendAck(stream_id=req.stream_id, acked_seq=req.last_seq)

    async def _refuse(self, req: agent_pb2.AppendRequest, problem: str) -> agent_pb2.AppendAck:
        """Refuse for good; a gap record takes the batch's seqs when they are sane."""
        self._on_refused("invalid")
        log.warning("refused an append from stream %r: %s", req.stream_id, problem)
        acked = 0
        if _gap_possible(req):
            loop = asyncio.get_running_loop()
            self._tracker.appended(req.stream_id)
            try:
                await loop.run_in_executor(
                    self._executor, self._spool.append_gap, req.stream_id, req.first_seq,
                    req.last_seq, f"refused by the agent: {problem}")
            except (SpoolDiskFullError, SpoolClosedError) as exc:  # try the whole thing later
                self._tracker.not_appended(req.stream_id)
                return agent_pb2.AppendAck(stream_id=req.stream_id, error=str(exc),
                                           code=_UNAVAILABLE, retry_after_ms=1000)
            acked = req.last_seq
        return agent_pb2.AppendAck(stream_id=req.stream_id, acked_seq=acked, error=problem,
                                   code=_INVALID)

    async def WaitForwarded(
        self, request: agent_pb2.WaitForwardedRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.WaitForwardedResponse:
        timeout = request.timeout_seconds if request.timeout_seconds > 0 else 30.0
        seq, done = await self._tracker.wait(request.stream_id, request.seq, timeout)
        return agent_pb2.WaitForwardedResponse(forwarded_seq=seq, done=done)

    async def Info(
        self, request: agent_pb2.AgentInfoRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.AgentInfo:
        return self._info()
