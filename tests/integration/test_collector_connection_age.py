"""max_connection_age: the collector closes long-lived connections (so agents behind a
Kubernetes Service spread over the replicas as they reconnect), and nothing is lost."""

from __future__ import annotations

import time
from pathlib import Path

from tests.agent_client import AgentClient, agent_service, scalar_requests, scalar_steps
from tests.procs import collector_service


def test_connections_are_recycled_without_losing_a_record(tmp_path: Path) -> None:
    collector = collector_service(tmp_path)
    collector.env = {"MLTRAIL_COLLECTOR_MAX_CONNECTION_AGE": "1",
                     "MLTRAIL_COLLECTOR_SHUTDOWN_GRACE": "0.5"}
    collector.start()
    agent = agent_service(tmp_path, collector.grpc).start()
    try:
        client = AgentClient(agent.info["socket"])
        seq = 1
        for part in range(6):  # about 3 s of sending: past several connection ages
            list(client.append(scalar_requests("run-age", "s-age", 100, per_batch=25,
                                               first_seq=seq, started=part == 0)))
            seq += 101 if part == 0 else 100
            time.sleep(0.5)
        client.close()
        deadline = time.monotonic() + 60
        while len(scalar_steps(collector.grpc, "run-age")) < 600 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scalar_steps(collector.grpc, "run-age") == list(range(2, 602))
        assert "reconnecting" in agent.output() or "retrying" in agent.output(), agent.output()
    finally:
        agent.stop()
        collector.stop()
