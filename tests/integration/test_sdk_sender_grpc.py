"""The SDK's AgentSink + Sender against a real agent process forwarding to a real collector.

Every condition is the real one: an agent killed and started again on the
same socket, a batch the agent refuses (bigger than its whole spool cap), an
agent that takes requests and never answers (SIGSTOP of its process), so
the sender's reconnect, re-send, refusal count and cancel are tested against
what the agent really does, and the records are counted where they end up:
in the collector's store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mltrail.agent.spool import Spool
from mltrail.pipeline.offline import SpoolOverflow, read_records
from mltrail.pipeline.sender import AgentSink, Sender
from mltrail.pipeline.values import RUN_EVENT, SCALAR
from mltrail.proto import records_pb2
from mltrail.query.client import QueryClient
from tests.agent_client import agent_service, scalar_steps
from tests.procs import Service, collector_service, mltrail_cli


@pytest.fixture(scope="module")
def shared_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One collector for the module: each test writes its own run."""
    svc = collector_service(tmp_path_factory.mktemp("collector")).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory,
                 shared_collector: Service) -> Iterator[Service]:
    """One agent for the tests that leave it as they found it (stopped ones are resumed)."""
    svc = agent_service(tmp_path_factory.mktemp("agent"), shared_collector.grpc).start()
    yield svc
    svc.stop()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex


def started(run_id: str) -> tuple[object, ...]:
    event = records_pb2.RunEvent(started=records_pb2.RunStarted(experiment="sender"))
    return (RUN_EVENT, run_id, time.time_ns(), event)


def scalar(run_id: str, i: int, value: object = None) -> tuple[object, ...]:
    return (SCALAR, run_id, time.time_ns(), "loss", "", float(i) if value is None else value, i)


def wait_until(condition: object, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition()`` until it holds; a generous deadline, not a timing check."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still waiting for {what} after {timeout} s"
        time.sleep(0.02)


def stored_steps(collector: Service, run_id: str, count: int) -> list[int]:
    """The run's stored steps, once ``count`` of them arrived (or the deadline passed)."""
    steps: list[int] = []

    def arrived() -> bool:
        steps[:] = scalar_steps(collector.grpc, run_id)
        return len(steps) >= count

    wait_until(arrived, f"{count} steps in the collector")
    return steps


@contextmanager
def stopped(proc: Service) -> Iterator[None]:
    """The process frozen by SIGSTOP (it holds its sockets and answers nothing); resumed
    after, whatever happens."""
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)


def test_batches_reach_the_collector_and_the_agent_answers_info(
        shared_collector: Service, shared_agent: Service, run_id: str) -> None:
    sink = AgentSink(shared_agent.info["socket"])
    sender = Sender(sink, interval=0.01)
    try:
        sender.enqueue(started(run_id))
        for i in range(7000):
            sender.enqueue(scalar(run_id, i))
        assert sender.flush(60) == 0
        assert sink.info().collector == shared_collector.grpc
        done = sink.wait_forwarded(sender.stream_id, 7001, 60.0)
        assert done.done and done.forwarded_seq >= 7001
        assert scalar_steps(shared_collector.grpc, run_id) == list(range(7000))
    finally:
        sender.close(1)


def test_a_restarted_agent_gets_what_it_had_not_acknowledged(
        tmp_path: Path, shared_collector: Service, run_id: str) -> None:
    agent = agent_service(tmp_path, shared_collector.grpc).start()
    sender = Sender(AgentSink(agent.info["socket"]), interval=0.01)
    try:
        sender.enqueue(started(run_id))
        sender.enqueue(scalar(run_id, 0))
        assert sender.flush(60) == 0
        agent.kill()  # SIGKILL: what it acknowledged is in its spool
        for i in range(1, 500):
            sender.enqueue(scalar(run_id, i))  # never blocks while the agent is gone
        assert sender.flush(0.5) == 499  # nobody can acknowledge them
        agent.start()  # the same socket, the same spool
        assert sender.flush(60) == 0
        assert sender.stats.send_failures >= 1
        # re-sent in order, and nothing the first agent acknowledged is stored twice
        assert stored_steps(shared_collector, run_id, 500) == list(range(500))
    finally:
        sender.close(1)
        agent.stop()


def test_a_refused_batch_is_counted_not_retried(tmp_path: Path, shared_collector: Service,
                                                run_id: str) -> None:
    # The agent refuses for good a batch that can never fit in its spool (SpoolRefusedError).
    agent = agent_service(tmp_path, shared_collector.grpc)
    agent.env = {"MLTRAIL_AGENT_MAX_SPOOL_BYTES": "100000"}
    agent.start()
    sender = Sender(AgentSink(agent.info["socket"]), interval=0.01)
    try:
        sender.enqueue(started(run_id))
        assert sender.flush(60) == 0
        sender.enqueue(scalar(run_id, 0, "x" * 200_000))  # one record, twice the whole spool
        assert sender.flush(60) == 0
        assert sender.stats.records_refused == 1
        sender.enqueue(scalar(run_id, 1))
        assert sender.flush(60) == 0
        assert sender.stats.records_refused == 1  # refused once, never sent again
        assert stored_steps(shared_collector, run_id, 1) == [1]
        with urllib.request.urlopen(f"http://{agent.http}/metrics", timeout=30) as page:
            metrics = page.read().decode()
        assert 'mltrail_agent_refused_batches_total{reason="invalid"} 1.0' in metrics
    finally:
        sender.close(1)
        agent.stop()


def test_close_cancels_a_send_the_agent_blocks_and_spills_it(
        tmp_path: Path, shared_agent: Service, run_id: str) -> None:
    sender = Sender(AgentSink(shared_agent.info["socket"]),
                    overflow=SpoolOverflow(tmp_path / "spill"), interval=0.01)
    sender.enqueue(started(run_id))
    assert sender.flush(60) == 0  # connected: the next send goes to a live stream
    with stopped(shared_agent):
        for i in range(10):
            sender.enqueue(scalar(run_id, i))
        # built into a request, which the same cycle sends to the frozen agent
        wait_until(lambda: sender.stats.records_built == 11, "the request to be built")
        assert sender.close(0.1) == 10
        assert not sender._thread.is_alive()
    with Spool(tmp_path / "spill") as spool:
        assert [r.seq for r in read_records(spool)] == list(range(2, 12))


FLUSH_AGAINST_A_FROZEN_AGENT = textwrap.dedent("""
    import sys
    from mltrail import Experiment
    run = Experiment("frozen").start_logging()
    run.log("loss", 0.0, step=0)
    run.flush(timeout_seconds=60)
    print("READY", flush=True)
    sys.stdin.readline()  # the agent is stopped
    for i in range(1, 101):
        run.log("loss", float(i), step=i)
    run.flush(timeout_seconds=2)
    print("FLUSHED", flush=True)
    sys.stdin.readline()  # the agent runs again
    run.complete()
    print("RUN_ID=" + run.id, flush=True)
""")


def test_flush_against_a_stopped_agent_returns_at_its_timeout_and_loses_nothing(
        tmp_path: Path, shared_collector: Service, shared_agent: Service) -> None:
    agent, collector = shared_agent, shared_collector
    script = tmp_path / "frozen.py"
    script.write_text(FLUSH_AGAINST_A_FROZEN_AGENT)
    env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
           "MLTRAIL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        with stopped(agent):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            # flush gives up at its timeout although the agent never answers
            assert proc.stdout.readline().strip() == "FLUSHED"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "100 records are still on the way" in err and "after 2 s" in err
        run_id = out.split("RUN_ID=")[1].split()[0]
        wait_until(lambda: len(scalar_steps(collector.grpc, run_id)) >= 101, "101 steps")
        assert scalar_steps(collector.grpc, run_id) == list(range(101))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


EXIT_WHILE_THE_AGENT_IS_STOPPED = textwrap.dedent("""
    import sys
    from mltrail import Experiment
    run = Experiment("frozen-exit").start_logging()
    run.log("loss", 0.0, step=0)
    run.flush(timeout_seconds=60)
    print("RUN_ID=" + run.id, flush=True)
    sys.stdin.readline()  # the agent is stopped
    for i in range(1, 101):
        run.log("loss", float(i), step=i)
    # the interpreter exits: the run is completed, then MLTRAIL_EXIT_TIMEOUT bounds the wait
""")


def test_exit_against_a_stopped_agent_keeps_to_its_timeout_and_keeps_the_records(
        tmp_path: Path, shared_collector: Service, shared_agent: Service) -> None:
    script = tmp_path / "exit.py"
    script.write_text(EXIT_WHILE_THE_AGENT_IS_STOPPED)
    env = {**os.environ, "MLTRAIL_AGENT": shared_agent.info["socket"],
           "MLTRAIL_HOME": str(tmp_path / "home"), "MLTRAIL_EXIT_TIMEOUT": "2"}
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        run_id = proc.stdout.readline().strip().removeprefix("RUN_ID=")
        with stopped(shared_agent):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            # it exits although the agent never answers (the deadline is a generous bound
            # on that exit, far past the 2 s it keeps to)
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "records were not delivered before exit" in err, err
        kept = err.split("upload them with `mltrail sync ")[1].split("`")[0]
        synced = mltrail_cli("sync", kept, "--collector", shared_collector.grpc,
                             env={"MLTRAIL_HOME": str(tmp_path / "home")})
        assert synced.returncode == 0, synced.stdout + synced.stderr
        # every point once: what the resumed agent still had in its socket is deduplicated
        assert stored_steps(shared_collector, run_id, 101) == list(range(101))
        # the resumed agent found the process gone and inferred a failure; the process's
        # own end, kept on disk and delivered by sync, corrects it
        with QueryClient(shared_collector.grpc) as query:
            wait_until(lambda: query.get_run(run_id, counts=False).status == "Completed",
                       "the run completed by its own end")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
