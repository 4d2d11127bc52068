"""The SDK's AgentSink + Sender against a small real grpc.aio Agent server on a unix socket.

The fake agent keeps what it acknowledged; it can refuse a batch (AppendAck
with an error) and be stopped and started again on the same socket, so the
sender's reconnect and re-send are tested over real gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from mltrail.agent.spool import Spool
from mltrail.pipeline.offline import SpoolOverflow, read_records
from mltrail.pipeline.sender import AgentSink, Sender
from mltrail.pipeline.values import SCALAR
from mltrail.proto import agent_pb2, agent_pb2_grpc, records_pb2


class FakeAgent(agent_pb2_grpc.AgentServicer):
    def __init__(self) -> None:
        self.records: list[records_pb2.Record] = []
        self.refuse_first_seq: set[int] = set()

    async def Append(self, request_iterator: AsyncIterator[agent_pb2.AppendRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[agent_pb2.AppendAck]:
        async for request in request_iterator:
            if request.first_seq in self.refuse_first_seq:
                yield agent_pb2.AppendAck(stream_id=request.stream_id, error="refused: test")
                continue
            self.records.extend(records_pb2.Batch.FromString(request.batch).records)
            yield agent_pb2.AppendAck(stream_id=request.stream_id, acked_seq=request.last_seq)

    async def WaitForwarded(self, request: agent_pb2.WaitForwardedRequest,
                            context: grpc.aio.ServicerContext) -> agent_pb2.WaitForwardedResponse:
        seq = max((r.seq for r in self.records), default=0)
        return agent_pb2.WaitForwardedResponse(forwarded_seq=seq, done=seq >= request.seq)

    async def Info(self, request: agent_pb2.AgentInfoRequest,
                   context: grpc.aio.ServicerContext) -> agent_pb2.AgentInfo:
        return agent_pb2.AgentInfo(collector="127.0.0.1:9", version="fake")


async def serve(agent: FakeAgent, socket_path: Path) -> grpc.aio.Server:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServicer_to_server(agent, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    return server


def scalar(i: int) -> tuple[object, ...]:
    return (SCALAR, "run-1", time.time_ns(), "loss", "", float(i), i)


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "agent.sock"


async def test_batches_reach_the_agent_and_its_info_answers(socket_path: Path) -> None:
    agent = FakeAgent()
    server = await serve(agent, socket_path)
    sink = AgentSink(str(socket_path))
    sender = Sender(sink, interval=0.01)
    try:
        for i in range(7000):
            sender.enqueue(scalar(i))
        assert await asyncio.to_thread(sender.flush, 10) == 0
        assert [r.seq for r in agent.records] == list(range(1, 7001))
        info = await asyncio.to_thread(sink.info)
        assert info.collector == "127.0.0.1:9"
        done = await asyncio.to_thread(sink.wait_forwarded, sender.stream_id, 7000, 1.0)
        assert done.done and done.forwarded_seq == 7000
    finally:
        await asyncio.to_thread(sender.close, 1)
        await server.stop(None)


async def test_a_restarted_agent_gets_what_it_had_not_acknowledged(socket_path: Path) -> None:
    first = FakeAgent()
    server = await serve(first, socket_path)
    sender = Sender(AgentSink(str(socket_path)), interval=0.01)
    try:
        sender.enqueue(scalar(0))
        assert await asyncio.to_thread(sender.flush, 5) == 0
        await server.stop(None)
        for i in range(1, 500):
            sender.enqueue(scalar(i))  # never blocks while the agent is gone
        assert await asyncio.to_thread(sender.flush, 0.5) == 499
        second = FakeAgent()
        server = await serve(second, socket_path)
        assert await asyncio.to_thread(sender.flush, 15) == 0
        assert [r.seq for r in first.records] == [1]
        assert [r.seq for r in second.records] == list(range(2, 501))  # re-sent, in order
        assert sender.stats.send_failures >= 1
    finally:
        await asyncio.to_thread(sender.close, 1)
        await server.stop(None)


async def test_a_refused_batch_is_counted_not_retried(socket_path: Path) -> None:
    agent = FakeAgent()
    agent.refuse_first_seq = {1}
    server = await serve(agent, socket_path)
    sender = Sender(AgentSink(str(socket_path)), interval=0.01)
    try:
        sender.enqueue(scalar(0))
        assert await asyncio.to_thread(sender.flush, 5) == 0
        sender.enqueue(scalar(1))
        assert await asyncio.to_thread(sender.flush, 5) == 0
        assert sender.stats.records_refused == 1
        assert [r.seq for r in agent.records] == [2]
    finally:
        await asyncio.to_thread(sender.close, 1)
        await server.stop(None)


class BlockedAgent(FakeAgent):
    """An agent whose spool is full under `block`: Append takes requests, never acks."""

    async def Append(self, request_iterator: AsyncIterator[agent_pb2.AppendRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[agent_pb2.AppendAck]:
        async for _request in request_iterator:
            await asyncio.sleep(60)
            yield agent_pb2.AppendAck()


async def test_close_cancels_a_send_the_agent_blocks_and_spills_it(socket_path: Path,
                                                                   tmp_path: Path) -> None:
    server = await serve(BlockedAgent(), socket_path)
    sender = Sender(AgentSink(str(socket_path)), overflow=SpoolOverflow(tmp_path / "spill"),
                    interval=0.01)
    try:
        for i in range(10):
            sender.enqueue(scalar(i))
        await asyncio.sleep(0.3)  # the send is under way and blocked
        started = time.monotonic()
        assert await asyncio.to_thread(sender.close, 0.1) == 10
        assert time.monotonic() - started < 4.0
        assert not sender._thread.is_alive()
        with Spool(tmp_path / "spill") as spool:
            assert [r.seq for r in read_records(spool)] == list(range(1, 11))
    finally:
        await server.stop(None)
