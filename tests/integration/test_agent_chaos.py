"""The issue's bar: kill -9 of agent and collector at random moments loses nothing.

Two senders stream 200,000 scalar records (step = seq) through a real agent
to a real collector while the agent is SIGKILLed five times and the
collector three times, each restarted at once. Afterwards the collector
holds every record exactly once, in order, per stream.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.agent_client import (
    AgentClient,
    ReliableSender,
    agent_service,
    scalar_requests,
    scalar_steps,
)
from tests.procs import Service

RECORDS_PER_STREAM = 100_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def collector_on(port: int, workdir: Path) -> Service:
    """A collector on a fixed port, so the agent finds it again after a restart."""
    return Service(
        "collector",
        ["--store", f"sqlite:///{workdir / 'store.db'}", "--grpc", f"127.0.0.1:{port}",
         "--http", "127.0.0.1:0", "--artifacts", str(workdir / "artifacts")],
        workdir,
    )


@pytest.mark.slow
def test_kill_nine_of_agent_and_collector_loses_and_doubles_nothing(tmp_path: Path) -> None:
    port = free_port()
    collector = collector_on(port, tmp_path).start()
    agent = agent_service(tmp_path, f"127.0.0.1:{port}").start()
    streams = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(2)]
    senders = [
        ReliableSender(AgentClient(str(tmp_path / "agent.sock")),
                       scalar_requests(run_id, sid, RECORDS_PER_STREAM, per_batch=1000),
                       pace=0.08)  # about 8 s of sending: the kills land in the middle
        for run_id, sid in streams
    ]
    deadline = time.monotonic() + 45
    threads = [threading.Thread(target=s.run, args=(deadline,)) for s in senders]
    try:
        for t in threads:
            t.start()
        events = ["agent"] * 5 + ["collector"] * 3
        random.shuffle(events)
        kills_while_sending = 0
        for victim in events:
            time.sleep(random.uniform(0.05, 0.4))
            svc = agent if victim == "agent" else collector
            kills_while_sending += any(t.is_alive() for t in threads)
            svc.kill()
            svc.start()
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        for sender in senders:
            assert sender.next_index == len(sender.requests), "sender did not finish"
            assert sender.acked_seq == RECORDS_PER_STREAM + 1
            assert sender.errors == []
        assert kills_while_sending >= 4, "the chaos came too late to matter"
        assert sum(s.reconnects for s in senders) >= 1
        client = AgentClient(str(tmp_path / "agent.sock"))
        for run_id, sid in streams:
            assert client.wait_forwarded(sid, RECORDS_PER_STREAM + 1, timeout=30).done
            # exactly once and in order: steps 2..N+1 (seq 1 is the RunStarted event)
            assert scalar_steps(collector.grpc, run_id) == list(
                range(2, RECORDS_PER_STREAM + 2))
        client.close()
        assert agent.starts == 6 and collector.starts == 4
    finally:
        for sender in senders:
            sender.client.close()
        agent.stop()
        collector.stop()
