"""A full spool disk never drops a metric (issue 11, items 1 and 2).

The agent's spool lives on a 20 MiB tmpfs and the collector is down, so the
disk fills while a run logs 600,000 points and prints 100,000 console lines
through `mltrail run`. The agent answers "not now" (its disk is full); the
SDK keeps what it could not hand over and resends it. Once the collector is
back, the agent deletes acknowledged segments by itself (no one frees space
by hand), the senders get through, and every point and line arrives once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mltrail.query.client import QueryClient
from tests.conftest import require
from tests.procs import MLTRAIL, Service

POINTS = 600_000
LINES = 100_000

SCRIPT = textwrap.dedent(f"""
    import sys
    from mltrail import Run
    run = Run.get_context()
    for i in range({POINTS}):
        run.log("loss", i * 0.5, step=i)
    for i in range({LINES}):
        print("line %d %s" % (i, "y" * 150))
    sys.stdout.flush()
    print("LOGGED", file=sys.stderr, flush=True)
    run.flush(timeout_seconds=900)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs, unmounted afterwards (needs root, as in CI)."""
    require(os.geteuid() == 0, "root (to mount a 20 MiB tmpfs)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def scrape(agent: Service, name: str) -> float:
    with urllib.request.urlopen(f"http://{agent.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(check: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_full_spool_disk_loses_no_metric_and_no_line(tmp_path: Path, small_disk: Path
                                                       ) -> None:
    collector = Service("collector", [
        "--store", f"sqlite:///{tmp_path / 'store.db'}", "--grpc", f"127.0.0.1:{free_port()}",
        "--http", "127.0.0.1:0", "--artifacts", str(tmp_path / "artifacts")], tmp_path)
    agent = Service("agent", [
        "--socket", str(tmp_path / "agent.sock"), "--spool", str(small_disk / "spool"),
        "--http", "127.0.0.1:0", "--collector", collector.args[3]], tmp_path).start()
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "MLTRAIL_AGENT": str(tmp_path / "agent.sock"),
           "MLTRAIL_HOME": str(tmp_path / "home"), "MLTRAIL_EXIT_TIMEOUT": "900"}
    stderr = tmp_path / "run.err"
    with open(stderr, "wb") as err:
        launched = subprocess.Popen(
            [*MLTRAIL, "run", "--experiment", "disk", "--run-id", "disk-1", "--",
             sys.executable, str(script)],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        wait_for(lambda: b"LOGGED" in stderr.read_bytes(), "the script to log everything")
        wait_for(lambda: scrape(agent, "mltrail_agent_spool_disk_full") == 1,
                 "the spool disk to fill")
        assert launched.poll() is None  # still waiting for its records to be taken
        collector.start()
        assert launched.wait(timeout=900) == 0, stderr.read_text()[-3000:]
        wait_for(lambda: scrape(agent, "mltrail_agent_spool_pending_bytes") == 0,
                 "the agent to forward everything")
        assert scrape(agent, "mltrail_agent_spool_disk_full") == 0
        assert scrape(agent, "mltrail_agent_spool_disk_full_errors_total") > 0
        assert scrape(agent, "mltrail_agent_dropped_records_total") == 0
        with QueryClient(collector.grpc, timeout=300) as client:  # 600,000 points
            steps = [r.metric.scalar.step for r in client.get_metric_records("disk-1", "loss")]
            assert steps == list(range(POINTS))  # every point once, in order
            lines = [line.text for line in client.tail_logs("disk-1", ["stdout"])]
            assert len(lines) == LINES
            assert all(text.startswith(f"line {i} ") for i, text in enumerate(lines))
            assert client.get_run("disk-1").status == "Completed"
    finally:
        if launched.poll() is None:
            launched.kill()
        agent.stop()
        collector.stop()
