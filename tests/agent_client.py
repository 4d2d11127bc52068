"""An SDK-side client of the agent for tests and benches: Append over the unix socket.

``AgentClient.append`` pipelines requests (``window`` ahead of the acks) on
one Append stream and yields acks as they come. ``ReliableSender`` is what
an SDK does: it resends from the first unacknowledged batch whenever the
stream breaks (an agent killed and restarted), and remembers the highest seq
the agent acknowledged: the records the pipeline must never lose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from mltrail.common.rpc import MAX_MESSAGE
from mltrail.proto import agent_pb2, agent_pb2_grpc, records_pb2
from tests import builders
from tests.procs import Service


def append_request(batch: records_pb2.Batch, droppable: bool = False) -> agent_pb2.AppendRequest:
    seqs = [r.seq for r in batch.records]
    return agent_pb2.AppendRequest(stream_id=batch.stream_id, first_seq=seqs[0],
                                   last_seq=seqs[-1], batch=batch.SerializeToString(),
                                   droppable=droppable)


def scalar_requests(run_id: str, stream_id: str, count: int, per_batch: int = 1000,
                    first_seq: int = 1, started: bool = True) -> list[agent_pb2.AppendRequest]:
    """A run's RunStarted (seq 1) then scalar "loss" records with step = seq."""
    requests = []
    seq = first_seq
    if started:
        requests.append(append_request(builders.batch(stream_id, [builders.started(seq, run_id)])))
        seq += 1
    for batch in builders.scalar_batches(run_id, stream_id, count, per_batch, first_seq=seq):
        requests.append(append_request(batch))
    return requests


class AgentClient:
    def __init__(self, socket_path: str) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket_path}", options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 500),
        ])
        self.stub = agent_pb2_grpc.AgentStub(self.channel)

    def append(self, requests: Sequence[agent_pb2.AppendRequest], window: int = 8,
               timeout: float = 60.0, sent_at: list[float] | None = None,
               ) -> Iterator[agent_pb2.AppendAck]:
        """Acks in order; raises grpc.RpcError when the stream breaks."""
        cond = threading.Condition()
        state = {"acked": 0, "done": False}

        def requests_in_window() -> Iterator[agent_pb2.AppendRequest]:
            for i, request in enumerate(requests):
                with cond:
                    while i >= state["acked"] + window and not state["done"]:
                        cond.wait(0.5)
                    if state["done"]:
                        return
                if sent_at is not None:
                    sent_at.append(time.perf_counter())
                yield request

        try:
            for ack in self.stub.Append(requests_in_window(), timeout=timeout,
                                        wait_for_ready=True):
                with cond:
                    state["acked"] += 1
                    cond.notify_all()
                yield ack
        finally:
            with cond:
                state["done"] = True
                cond.notify_all()

    def wait_forwarded(self, stream_id: str, seq: int, timeout: float = 30.0
                       ) -> agent_pb2.WaitForwardedResponse:
        return self.stub.WaitForwarded(
            agent_pb2.WaitForwardedRequest(stream_id=stream_id, seq=seq, timeout_seconds=timeout),
            timeout=timeout + 10, wait_for_ready=True)

    def info(self) -> agent_pb2.AgentInfo:
        return self.stub.Info(agent_pb2.AgentInfoRequest(), timeout=10, wait_for_ready=True)

    def close(self) -> None:
        self.channel.close()


@dataclass
class ReliableSender:
    """Sends ``requests`` until all are acked, resending after a broken stream."""

    client: AgentClient
    requests: list[agent_pb2.AppendRequest]
    acked_seq: int = 0
    next_index: int = 0
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    pace: float = 0.0  # seconds to pause after each ack (spreads a test over time)

    def run(self, deadline: float, stop: threading.Event | None = None) -> None:
        while self.next_index < len(self.requests) and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return
            try:
                pending = self.requests[self.next_index:]
                for ack in self.client.append(pending, timeout=deadline - time.monotonic()):
                    if ack.error:
                        self.errors.append(ack.error)
                        raise RuntimeError(ack.error)  # resend from here after a pause
                    self.acked_seq = ack.acked_seq
                    self.next_index += 1
                    if self.pace:
                        time.sleep(self.pace)
            except (grpc.RpcError, RuntimeError):
                self.reconnects += 1
                time.sleep(0.05)


def scalar_steps(collector_address: str, run_id: str, name: str = "loss") -> list[int]:
    """The steps of a run's scalar metric as the collector stores them, in order."""
    from mltrail.proto import collector_pb2, collector_pb2_grpc

    with grpc.insecure_channel(collector_address, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE)]) as channel:
        stub = collector_pb2_grpc.QueryStub(channel)
        try:
            response = stub.GetMetrics(collector_pb2.GetMetricsRequest(run_id=run_id, name=name),
                                       timeout=60)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return []  # the run's first record has not arrived yet
            raise
    return [r.metric.scalar.step for r in response.records]


def agent_service(workdir: Path, collector_address: str, *extra: str) -> Service:
    """An agent process (not started) with its socket, spool and port 0 in ``workdir``."""
    return Service(
        "agent",
        [
            "--socket", str(workdir / "agent.sock"),
            "--collector", collector_address,
            "--spool", str(workdir / "spool"),
            "--http", "127.0.0.1:0",
            *extra,
        ],
        workdir,
    )
