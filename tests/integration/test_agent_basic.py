"""A real agent between a client on its unix socket and a real collector."""

from __future__ import annotations

import stat
import urllib.request
import uuid
from pathlib import Path

from tests.agent_client import AgentClient, scalar_requests, scalar_steps
from tests.procs import Service


def metrics_text(svc: Service) -> str:
    with urllib.request.urlopen(f"http://{svc.http}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_records_reach_the_collector_once_in_order(agent: Service, collector: Service) -> None:
    run_id, stream_id = uuid.uuid4().hex, uuid.uuid4().hex
    requests = scalar_requests(run_id, stream_id, 5000, per_batch=500)
    client = AgentClient(agent.info["socket"])
    acks = list(client.append(requests))
    assert [a.error for a in acks] == [""] * len(requests)
    assert acks[-1].acked_seq == 5001
    done = client.wait_forwarded(stream_id, 5001, timeout=20)
    assert done.done and done.forwarded_seq >= 5001
    assert scalar_steps(collector.grpc, run_id) == list(range(2, 5002))
    info = client.info()
    assert info.collector == collector.grpc
    assert "mltrail_agent_sent_records_total 5001.0" in metrics_text(agent)
    client.close()


def test_socket_is_private_and_info_matches_ready_file(agent: Service) -> None:
    mode = stat.S_IMODE(Path(agent.info["socket"]).stat().st_mode)
    assert mode == 0o600
    assert agent.info["pid"] == agent.proc.pid  # type: ignore[union-attr]
