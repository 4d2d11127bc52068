"""The agent's and the collector's own bundles, taken from running processes."""

from __future__ import annotations

import json
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mltrail.proto import agent_pb2
from tests import builders
from tests.agent_client import AgentClient, ReliableSender, agent_service, scalar_requests
from tests.procs import Service, mltrail_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read(path: Path, name: str) -> Any:
    return json.loads(zipfile.ZipFile(path).read(name))


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def agent_bundle(agent: Service, tmp_path: Path, seconds: float) -> Path:
    out = tmp_path / "agent.zip"
    done = mltrail_cli("agent", "bundle", "--http", agent.http, "-o", str(out),
                       "--seconds", str(seconds))
    assert done.returncode == 0, done.stderr
    return out


def test_agent_bundle_with_the_collector_down_shows_the_spool_growing(tmp_path: Path) -> None:
    down = f"127.0.0.1:{free_port()}"  # nothing listens here
    agent = agent_service(tmp_path, down).start()
    client = AgentClient(agent.info["socket"])
    stop = threading.Event()
    sender = ReliableSender(client, scalar_requests("down-1", "s-down", 200_000, per_batch=200),
                            pace=0.01)
    writer = threading.Thread(target=sender.run, args=(time.monotonic() + 120, stop))
    writer.start()
    try:
        wait_until(lambda: sender.acked_seq > 0)  # the spool has records before the window
        out = agent_bundle(agent, tmp_path, seconds=2)
    finally:
        stop.set()
        writer.join(timeout=60)
        client.close()
        agent.stop()
    start, end = read(out, "state-start.json"), read(out, "state-end.json")
    assert end["spool"]["bytes"] > start["spool"]["bytes"] > 0
    assert end["numbers"]["failed_sends"] > 0
    assert any(e["event"] == "send failed" for e in end["send_errors"])
    assert end["collector"]["address"] == down and not end["collector"]["connected"]
    assert "not reachable" in end["collector"]["probe"]
    archive = zipfile.ZipFile(out)
    metrics_start = archive.read("metrics-start.txt").decode()
    metrics_end = archive.read("metrics-end.txt").decode()
    assert (metric(metrics_end, "mltrail_agent_received_records_total")
            > metric(metrics_start, "mltrail_agent_received_records_total"))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["summary"]["changed_in_window"]["spool_bytes"] > 0
    settings = read(out, "settings.json")
    assert settings["collector"] == down
    assert "agent" in archive.read("log.txt").decode()
    shown = mltrail_cli("bundle", "inspect", str(out))
    assert "UNHEALTHY" in shown.stdout or "healthy" in shown.stdout
    assert "spool_bytes" in shown.stdout and "send failed" in shown.stdout


def test_agent_bundle_lists_dead_letters_and_source_checkpoints(
        tmp_path: Path, collector: Service) -> None:
    log = tmp_path / "train.log"
    log.write_text("one\ntwo\n")
    agent = agent_service(tmp_path, collector.grpc,
                          "--source", f"file:{log}=src-run:trainer").start()
    try:
        checkpoints = tmp_path / "spool" / "sources"
        wait_until(lambda: bool(list(checkpoints.glob("*.json"))))
        out = agent_bundle(agent, tmp_path, seconds=0)
    finally:
        agent.stop()
    sources = read(out, "sources.json")
    (source,) = sources.values()
    (entry,) = source["files"]
    assert entry["path"] == str(log) and entry["current_size"] == log.stat().st_size
    assert "carry" not in entry
    dead = zipfile.ZipFile(out).read("dead-letters.txt").decode()
    assert "no dead letters" in dead


def test_agent_bundle_shows_a_refused_batch_with_the_collectors_message(
        agent: Service, collector: Service, tmp_path: Path) -> None:
    run_id, sid = "dead-1", "s-dead"
    good = scalar_requests(run_id, sid, 10, per_batch=10)  # seqs 1..11
    gap = builders.batch(sid, [builders.scalar(s, run_id, "loss", 1.0, step=s)
                               for s in (12, 13, 15)])  # a gap inside: refused for good
    bad = agent_pb2.AppendRequest(stream_id=sid, first_seq=12, last_seq=15,
                                  batch=gap.SerializeToString())
    client = AgentClient(agent.info["socket"])
    try:
        assert [a.error for a in client.append([*good, bad])] == ["", "", ""]
        assert client.wait_forwarded(sid, 15, timeout=30).done
    finally:
        client.close()
    out = agent_bundle(agent, tmp_path, seconds=0)
    dead = zipfile.ZipFile(out).read("dead-letters.txt").decode()
    assert f"{sid} 12-15: " in dead and "INVALID_ARGUMENT" in dead
    end = read(out, "state-end.json")
    assert end["spool"]["counters"]["dead_letters"] == 1
    assert end["spool"]["dead_letter_bytes"] > 0
    assert any(e["event"] == "dead letter" for e in end["send_errors"])


def test_collector_bundle(collector: Service, tmp_path: Path) -> None:
    out = tmp_path / "collector.zip"
    done = mltrail_cli("collector", "bundle", "--http", collector.http, "-o", str(out),
                       "--seconds", "0.2")
    assert done.returncode == 0, done.stderr
    end = read(out, "state-end.json")
    assert end["health"]["healthy"] and end["grpc"] == collector.grpc
    assert read(out, "settings.json")["store"].startswith("sqlite:///")
    assert "collector listening" in zipfile.ZipFile(out).read("log.txt").decode()
    bad = mltrail_cli("collector", "bundle", "--http", collector.http, "-o", str(out),
                      "--seconds", "600")
    assert bad.returncode == 1 and "--seconds must be within 0 and 60" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_agent_bundle_of_no_agent_says_so(tmp_path: Path) -> None:
    done = mltrail_cli("agent", "bundle", "--http", f"127.0.0.1:{free_port()}",
                       "-o", str(tmp_path / "x.zip"), "--seconds", "0")
    assert done.returncode == 1
    assert "nothing was written" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.zip").exists()
