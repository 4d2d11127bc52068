"""Three collector replicas on one PostgreSQL, one agent that knows all three.

Two senders stream 200,000 scalar records and a third 20,000 console lines
through the agent while the replicas are SIGKILLed and restarted in turn and
PostgreSQL itself is restarted once. Afterwards every record is stored
exactly once, in order, and a ``mltrail logs --follow`` connected to one
replica the whole time printed every line once, in order.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mltrail.proto import agent_pb2
from tests import builders
from tests.agent_client import (
    AgentClient,
    ReliableSender,
    agent_service,
    append_request,
    scalar_requests,
    scalar_steps,
)
from tests.conftest import require
from tests.postgres_env import PostgresServer, available, free_port
from tests.procs import MLTRAIL, Service

POINTS_PER_STREAM = 100_000
LINES = 20_000
LINES_PER_BATCH = 100


def replica(port: int, workdir: Path, store: str, index: int) -> Service:
    home = workdir / f"replica{index}"
    home.mkdir()
    return Service("collector", ["--store", store, "--grpc", f"127.0.0.1:{port}",
                                 "--http", "127.0.0.1:0",
                                 "--artifacts", str(workdir / "artifacts")], home)


def log_requests(run_id: str, stream_id: str) -> list[agent_pb2.AppendRequest]:
    """RunStarted, LINES console lines "line N" in batches, then RunCompleted."""
    requests = [append_request(builders.batch(stream_id, [builders.started(1, run_id)]))]
    seq = 2
    for first in range(0, LINES, LINES_PER_BATCH):
        records = [builders.log(seq + i, run_id, f"line {first + i}\n".encode())
                   for i in range(LINES_PER_BATCH)]
        requests.append(append_request(builders.batch(stream_id, records)))
        seq += LINES_PER_BATCH
    requests.append(append_request(builders.batch(stream_id, [builders.ended(seq, run_id)])))
    return requests


@pytest.mark.slow
@pytest.mark.postgres
def test_replicas_killed_in_turn_and_postgres_restarted_lose_and_double_nothing(
        tmp_path: Path) -> None:
    require(available(), "PostgreSQL 15 (package postgresql-15, run as root)")
    server = PostgresServer().init().start()
    ports = [free_port() for _ in range(3)]
    store = server.new_database()
    replicas = [replica(port, tmp_path, store, n) for n, port in enumerate(ports)]
    agent = None
    follower = None
    senders: list[ReliableSender] = []
    try:
        for svc in replicas:
            svc.start()
        agent = agent_service(tmp_path, ",".join(f"127.0.0.1:{p}" for p in ports))
        agent.env["MLTRAIL_AGENT_REBALANCE_SECONDS"] = "1"
        agent.start()
        runs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(3)]
        log_run, log_stream = runs[2]
        senders = [ReliableSender(AgentClient(str(tmp_path / "agent.sock")),
                                  scalar_requests(run_id, sid, POINTS_PER_STREAM), pace=0.4)
                   for run_id, sid in runs[:2]]
        senders.append(ReliableSender(AgentClient(str(tmp_path / "agent.sock")),
                                      log_requests(log_run, log_stream), pace=0.2))
        deadline = time.monotonic() + 240
        threads = [threading.Thread(target=s.run, args=(deadline,)) for s in senders]
        for thread in threads:
            thread.start()
        follower = _follow(log_run, replicas[0], tmp_path)
        printed: list[str] = []
        reader = threading.Thread(target=lambda: printed.extend(follower.stdout or ()))
        reader.start()
        _wait_for(lambda: bool(printed), "the follower printed nothing")
        probe = AgentClient(str(tmp_path / "agent.sock"))
        try:
            _chaos(replicas, server, threads, probe)
        finally:
            probe.close()
        for sender in senders:  # paced only to be still sending while the chaos lasts
            sender.pace = 0.0
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        for sender in senders:
            assert sender.next_index == len(sender.requests), "sender did not finish"
            assert sender.errors == []
        client = AgentClient(str(tmp_path / "agent.sock"))
        try:
            for (_, sid), sender in zip(runs, senders, strict=True):
                assert client.wait_forwarded(sid, sender.acked_seq, timeout=120).done
        finally:
            client.close()
        for run_id, _ in runs[:2]:
            for svc in replicas:  # every replica reads the same, complete history
                assert scalar_steps(svc.grpc, run_id) == list(range(2, POINTS_PER_STREAM + 2))
        failovers = agent.log_file.read_text().count("failing over to another")
        assert failovers >= 3, "the kills did not hit the agent's collector"
        assert follower.wait(timeout=120) == 0, (tmp_path / "follow.err").read_text()[-2000:]
        reader.join(timeout=60)
        assert [line.rstrip("\n") for line in printed] == [f"line {n}" for n in range(LINES)]
    finally:
        if follower is not None:
            if follower.poll() is None:
                follower.kill()
                follower.wait(timeout=30)
            if follower.stdout is not None:
                follower.stdout.close()
        for sender in senders:
            sender.client.close()
        if agent is not None:
            agent.stop()
        for svc in replicas:
            svc.stop()
        server.destroy()


def _wait_for(condition: Callable[[], bool], failure: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def _follow(run_id: str, svc: Service, workdir: Path) -> subprocess.Popen[str]:
    """``mltrail logs RUN --follow`` against one replica, once the run exists."""
    _wait_for(lambda: run_id in subprocess.run(
        [*MLTRAIL, "runs", "--collector", svc.grpc, "--json"], capture_output=True, text=True,
        timeout=30).stdout, "the log run never arrived")
    with open(workdir / "follow.err", "wb") as err:
        return subprocess.Popen([*MLTRAIL, "logs", run_id, "--follow", "--collector", svc.grpc],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=workdir)


def _chaos(replicas: list[Service], server: PostgresServer,
           threads: list[threading.Thread], agent: AgentClient) -> None:
    """Each replica SIGKILLed and restarted twice, in turn, each time while the agent
    forwards to it (it moves to the next one every second); PostgreSQL restarted once
    in the middle. Everything happens while the senders are still sending."""
    events: list[int | str] = [0, 1, 2, "postgres", 0, 1, 2]
    for event in events:
        time.sleep(random.uniform(0.2, 0.6))
        assert any(t.is_alive() for t in threads), "the chaos came too late to matter"
        if event == "postgres":
            server.restart()
            continue
        svc = replicas[int(event)]
        deadline = time.monotonic() + 10
        while agent.info().collector != svc.grpc and time.monotonic() < deadline:
            time.sleep(0.02)
        svc.kill()
        svc.start(timeout=60)
