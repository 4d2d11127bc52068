"""Each way an SDK process can end leaves its run ended with the right status
(issue 11, item 6): a script that returns, one that dies of an exception, and
one killed with SIGKILL (the agent sees its connection and process end)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mltrail.query.client import QueryClient
from tests.procs import Service, mltrail_cli

START = textwrap.dedent("""
    import sys, time
    from mltrail import Experiment
    run = Experiment("endings").start_logging()
    run.log("loss", 1.0)
    print(run.id, flush=True)
""")
ENDINGS = {
    "returns": "",
    "raises": "raise RuntimeError('diverged at step 7')\n",
    "killed": "run.flush()\nprint('READY', flush=True)\ntime.sleep(600)\n",
}


def start(kind: str, agent: Service, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / f"{kind}.py"
    script.write_text(START + ENDINGS[kind])
    env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
           "MLTRAIL_HOME": str(tmp_path / "home")}
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_status(client: QueryClient, run_id: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = client.get_run(run_id).status
        except Exception:  # not at the collector yet
            status = "Unknown"
        if status not in ("Running", "Unknown") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_a_run_ends_however_its_process_ends(agent: Service, collector: Service,
                                            tmp_path: Path) -> None:
    returns, raises, killed = (start(k, agent, tmp_path) for k in ENDINGS)
    returned_id, _ = returns.communicate(timeout=60)
    raised_id, raised_err = raises.communicate(timeout=60)
    assert (returns.returncode, raises.returncode) == (0, 1)
    assert "diverged at step 7" in raised_err  # Python's traceback, as without mltrail
    assert killed.stdout is not None
    killed_id = killed.stdout.readline().strip()
    assert killed.stdout.readline().strip() == "READY"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=30)
    with QueryClient(collector.grpc) as client:
        assert wait_status(client, returned_id.strip()) == "Completed"
        assert wait_status(client, raised_id.strip()) == "Failed"
        error = client.get_run(raised_id.strip()).error
        assert error is not None and "diverged at step 7" in error.message
        assert wait_status(client, killed_id) == "Failed"
        error = client.get_run(killed_id).error
        assert error is not None and f"pid {killed.pid}" in error.message
        assert "exited without ending" in error.message
    shown = mltrail_cli("show", killed_id, "--collector", collector.grpc)
    assert shown.returncode == 0 and "Delivered:  " in shown.stdout, shown.stderr


OFFLINE = textwrap.dedent("""
    import time
    from mltrail import Run
    run = Run.get_context()
    run.log("loss", 1.0)
    run.flush()
    print(run.id, flush=True)
    time.sleep(600)
""")


def test_an_offline_run_killed_is_ended_as_failed_by_sync(collector: Service,
                                                          tmp_path: Path) -> None:
    script = tmp_path / "offline.py"
    script.write_text(OFFLINE)
    env = {k: v for k, v in os.environ.items() if k not in ("MLTRAIL_AGENT", "MLTRAIL_RUN_ID")}
    env["MLTRAIL_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    synced = mltrail_cli("sync", str(tmp_path / "home" / "offline"), "--collector",
                         collector.grpc, env=env)
    assert synced.returncode == 0, synced.stderr
    assert f"run {run_id} was never ended" in synced.stdout
    with QueryClient(collector.grpc) as client:
        info = client.get_run(run_id)
        assert info.status == "Failed"
        assert info.error is not None and "exited without ending it" in info.error.message
