"""A real agent and collector: outages, damaged spools, a full spool, refusals, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from mltrail.agent.spool import Spool
from mltrail.common.rpc import MAX_APPEND_BYTES
from mltrail.proto import agent_pb2
from mltrail.query.client import QueryClient
from tests import builders
from tests.agent_client import (
    AgentClient,
    ReliableSender,
    agent_service,
    scalar_requests,
    scalar_steps,
)
from tests.integration.test_agent_chaos import collector_on, free_port
from tests.procs import MLTRAIL, Service, mltrail_cli


def metric(svc: Service, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://{svc.http}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def send_all(socket_path: Path, requests: list[agent_pb2.AppendRequest]) -> list[str]:
    client = AgentClient(str(socket_path))
    try:
        return [ack.error for ack in client.append(requests)]
    finally:
        client.close()


def wait_until(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_collector_down_spool_grows_then_drains(tmp_path: Path) -> None:
    port = free_port()
    collector = collector_on(port, tmp_path)
    agent = agent_service(tmp_path, f"127.0.0.1:{port}").start()
    try:
        run_id, sid = uuid.uuid4().hex, uuid.uuid4().hex
        assert send_all(tmp_path / "agent.sock", scalar_requests(run_id, sid, 20_000)) == [""] * 21
        assert wait_until(lambda: metric(agent, "mltrail_agent_retries_total") >= 1)
        assert metric(agent, "mltrail_agent_spool_pending_bytes") > 100_000
        assert metric(agent, "mltrail_agent_collector_connected") == 0
        client = AgentClient(str(tmp_path / "agent.sock"))
        # answers at its own timeout (the call's gRPC deadline is 10 s later), not done
        waited = client.wait_forwarded(sid, 20_001, timeout=0.5)
        assert not waited.done and waited.forwarded_seq < 20_001
        collector.start()
        assert client.wait_forwarded(sid, 20_001, timeout=30).done
        client.close()
        assert scalar_steps(collector.grpc, run_id) == list(range(2, 20_002))
        assert metric(agent, "mltrail_agent_spool_pending_bytes") == 0
        assert metric(agent, "mltrail_agent_sent_records_total") == 20_001
    finally:
        agent.stop()
        collector.stop()


def damaged_spool(directory: Path, run_id: str, sid: str, damage: str) -> int:
    """A spool of 10 batches of 100 records; returns how many batches stay intact."""
    spool = Spool(directory, segment_bytes=1 << 30)
    for request in scalar_requests(run_id, sid, 1000, per_batch=100, started=False):
        spool.append(request.stream_id, request.first_seq, request.last_seq, request.batch)
    spool.close()
    segment = next((directory / "segments").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    if damage == "torn":
        segment.write_bytes(bytes(data[:-50]))  # the last frame is cut short
    else:
        data[len(data) // 2] ^= 0x40  # a flipped bit in the middle frame
        segment.write_bytes(bytes(data))
    return 9


def test_damaged_spools_start_cleanly_and_keep_every_intact_record(
    tmp_path: Path, collector: Service
) -> None:
    for damage in ("torn", "flip"):
        workdir = tmp_path / damage
        workdir.mkdir()
        run_id, sid = uuid.uuid4().hex, uuid.uuid4().hex
        intact = damaged_spool(workdir / "spool", run_id, sid, damage)
        agent = agent_service(workdir, collector.grpc).start()
        try:
            assert wait_until(lambda a=agent, n=intact * 100:
                              metric(a, "mltrail_agent_sent_records_total") >= n)
            steps = scalar_steps(collector.grpc, run_id)
            assert len(steps) == intact * 100 and steps == sorted(set(steps))
            assert metric(agent, "mltrail_agent_spool_cut_bytes_total") > 0
            assert metric(agent, "mltrail_agent_spool_cut_records_total") == 100
            assert "cut 100 records" in agent.output() and sid in agent.output()
        finally:
            assert agent.terminate() == 0


def test_full_spool_blocks_the_sender_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    collector = collector_on(port, tmp_path)
    agent = agent_service(tmp_path, f"127.0.0.1:{port}")
    agent.env = {"MLTRAIL_AGENT_MAX_SPOOL_BYTES": "300000",
                 "MLTRAIL_AGENT_SEGMENT_BYTES": "60000"}
    agent.start()
    run_id, sid = uuid.uuid4().hex, uuid.uuid4().hex
    sender = ReliableSender(AgentClient(str(tmp_path / "agent.sock")),
                            scalar_requests(run_id, sid, 20_000, per_batch=500))
    thread = threading.Thread(target=sender.run, args=(time.monotonic() + 40,))
    try:
        thread.start()
        assert wait_until(lambda: metric(agent, "mltrail_agent_spool_blocked_waits_total") >= 1)
        assert thread.is_alive() and sender.next_index < len(sender.requests)  # blocked
        collector.start()
        thread.join(40)
        assert sender.acked_seq == 20_001 and sender.errors == []
        client = AgentClient(str(tmp_path / "agent.sock"))
        assert client.wait_forwarded(sid, 20_001, timeout=30).done
        client.close()
        assert scalar_steps(collector.grpc, run_id) == list(range(2, 20_002))
        assert metric(agent, "mltrail_agent_dropped_records_total", '{reason="spool_full"}') == 0
    finally:
        sender.client.close()
        agent.stop()
        collector.stop()


FLOOD_SCRIPT = """
import sys
from mltrail import Run
run = Run.get_context()
for i in range(1000):
    run.log("loss", float(i), step=i)
run.flush(timeout_seconds=60)
out = sys.stdout
for i in range(200_000):
    out.write("line %06d %s\\n" % (i, "z" * 90))
out.flush()
for i in range(1000, 2000):
    run.log("loss", float(i), step=i)
"""


def test_drop_newest_drops_console_output_only_and_counts_it(tmp_path: Path) -> None:
    # `mltrail run` floods its console into an 8 MB spool under drop_newest with the
    # collector down: console batches are dropped and counted, each leaving a gap
    # record; the metrics before and after the flood wait for room and all arrive. The
    # spool is larger than one of the SDK's console batches (up to 4 MiB), which a smaller
    # spool refuses outright (counted and named by the SDK, not a drop_newest drop).
    port = free_port()
    collector = collector_on(port, tmp_path)
    agent = agent_service(tmp_path, f"127.0.0.1:{port}")
    agent.env = {"MLTRAIL_AGENT_MAX_SPOOL_BYTES": "8000000",
                 "MLTRAIL_AGENT_FULL_POLICY": "drop_newest"}
    agent.start()
    script = tmp_path / "flood.py"
    script.write_text(FLOOD_SCRIPT)
    env = {**os.environ, "MLTRAIL_AGENT": str(tmp_path / "agent.sock"),
           "MLTRAIL_HOME": str(tmp_path / "home"), "MLTRAIL_EXIT_TIMEOUT": "300"}
    launched = subprocess.Popen(
        [*MLTRAIL, "run", "--experiment", "flood", "--run-id", "flood-1", "--",
         sys.executable, str(script)], stdout=subprocess.DEVNULL, env=env)
    try:
        dropped = '{reason="spool_full"}'
        assert wait_until(lambda: metric(agent, "mltrail_agent_dropped_records_total",
                                         dropped) > 0, timeout=120)
        collector.start()
        assert launched.wait(timeout=300) == 0
        assert wait_until(lambda: metric(agent, "mltrail_agent_spool_pending_bytes") == 0,
                          timeout=120)
        with QueryClient(collector.grpc) as client:
            assert client.get_run("flood-1").status == "Completed"
            steps = [r.metric.scalar.step for r in client.get_metric_records("flood-1", "loss")]
            assert steps == list(range(2000))  # no metric dropped
            # stdout only: on a loaded machine the script's flush also prints its progress
            # line ("mltrail: waiting for ...") to its stderr, which is the run's too
            numbers = [int(line.text.split()[1])
                       for line in client.tail_logs("flood-1", streams=["stdout"])]
        assert numbers == sorted(numbers) and 0 < len(numbers) < 200_000

        def explained() -> int:
            with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as db:
                return int(db.execute("SELECT COALESCE(SUM(records), 0) FROM stream_gaps "
                                      "WHERE reason LIKE '%drop_newest%'").fetchone()[0])

        # every drop is explained by a gap record (the last ones may still be on the way)
        assert wait_until(lambda: explained() == metric(
            agent, "mltrail_agent_dropped_records_total", dropped), timeout=60)
    finally:
        if launched.poll() is None:
            launched.kill()
        agent.stop()
        collector.stop()


def test_refused_batch_is_set_aside_without_a_retry_loop(agent: Service,
                                                         collector: Service) -> None:
    run_id, sid = uuid.uuid4().hex, uuid.uuid4().hex
    good = scalar_requests(run_id, sid, 200, per_batch=100)  # seqs 1..201
    gap = builders.batch(sid, [builders.scalar(s, run_id, "loss", 1.0, step=s)
                               for s in (202, 203, 205)])  # a gap inside the batch
    bad = agent_pb2.AppendRequest(stream_id=sid, first_seq=202, last_seq=205,
                                  batch=gap.SerializeToString())
    after = scalar_requests(run_id, sid, 100, first_seq=206, started=False)
    assert send_all(Path(agent.info["socket"]), [*good, bad, *after]) == [""] * 5
    client = AgentClient(agent.info["socket"])
    assert client.wait_forwarded(sid, 305, timeout=20).done
    client.close()
    assert scalar_steps(collector.grpc, run_id) == [*range(2, 202), *range(206, 306)]
    assert metric(agent, "mltrail_agent_dead_lettered_batches_total") == 1
    assert metric(agent, "mltrail_agent_retries_total") == 0
    spool_dir = Path(agent.args[agent.args.index("--spool") + 1])
    assert "INVALID_ARGUMENT" in (spool_dir / "dead" / "reasons.log").read_text()


def test_bad_append_requests_get_an_error_and_the_stream_goes_on(agent: Service) -> None:
    sid = uuid.uuid4().hex
    ok = scalar_requests("r", sid, 10, started=False)[0]
    errors = send_all(Path(agent.info["socket"]), [
        agent_pb2.AppendRequest(stream_id="", first_seq=1, last_seq=1, batch=b"x"),
        agent_pb2.AppendRequest(stream_id=sid, first_seq=5, last_seq=4, batch=b"x"),
        agent_pb2.AppendRequest(stream_id=sid, first_seq=1, last_seq=1,
                                batch=b"x" * (MAX_APPEND_BYTES + 1)),
        ok,
    ])
    assert "empty stream_id" in errors[0]
    assert "bad seq range" in errors[1]
    assert "over the agent's limit" in errors[2]
    assert errors[3] == ""
    assert metric(agent, "mltrail_agent_refused_batches_total", '{reason="invalid"}') == 3


def test_sigterm_drains_and_exits_zero(agent: Service, collector: Service) -> None:
    run_id, sid = uuid.uuid4().hex, uuid.uuid4().hex
    assert send_all(Path(agent.info["socket"]), scalar_requests(run_id, sid, 30_000)) == [""] * 31
    assert agent.terminate(timeout=40) == 0
    assert scalar_steps(collector.grpc, run_id) == list(range(2, 30_002))


def test_sigterm_with_collector_down_keeps_the_spool_for_next_start(tmp_path: Path) -> None:
    port = free_port()
    collector = collector_on(port, tmp_path)
    agent = agent_service(tmp_path, f"127.0.0.1:{port}", "--drain-timeout", "1").start()
    run_id, sid = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        assert send_all(tmp_path / "agent.sock", scalar_requests(run_id, sid, 5000)) == [""] * 6
        # --drain-timeout 1 ends the drain: the default (30 s) would outlast this wait
        assert agent.terminate(timeout=25) == 0
        assert "stay in" in agent.output()
        collector.start()
        agent.start()
        assert wait_until(lambda: len(scalar_steps(collector.grpc, run_id)) == 5000)
        assert scalar_steps(collector.grpc, run_id) == list(range(2, 5002))
    finally:
        agent.stop()
        collector.stop()


def test_unwritable_socket_directory_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = mltrail_cli("agent", "--socket", str(blocker / "agent.sock"),
                         "--spool", str(tmp_path / "spool"), "--http", "127.0.0.1:0",
                         env={"MLTRAIL_HOME": str(tmp_path)}, timeout=30)
    assert result.returncode == 1
    assert "not writable" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_while_a_sender_waits_on_a_full_spool(tmp_path: Path) -> None:
    port = free_port()
    agent = agent_service(tmp_path, f"127.0.0.1:{port}", "--drain-timeout", "1")
    agent.env = {"MLTRAIL_AGENT_MAX_SPOOL_BYTES": "100000"}
    agent.start()
    sender = ReliableSender(AgentClient(str(tmp_path / "agent.sock")),
                            scalar_requests(uuid.uuid4().hex, uuid.uuid4().hex, 20_000))
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(time.monotonic() + 30, stop))
    try:
        thread.start()
        assert wait_until(lambda: metric(agent, "mltrail_agent_spool_blocked_waits_total") >= 1)
        # the blocked append does not hold the exit: the default drain (30 s) would
        assert agent.terminate(timeout=25) == 0
        assert "stay in" in agent.output()
    finally:
        stop.set()
        sender.client.close()
        thread.join(10)
        agent.stop()
    spool = Spool(tmp_path / "spool")
    assert spool.scan_report.frames >= 1 and spool.scan_report.cut_bytes == 0
    spool.close()
