"""`mltrail run` end to end: a real collector, a real agent, a real script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mltrail.common.lines import LINE_SPLIT_MARKER, join_split_lines
from mltrail.query.client import QueryClient
from tests.procs import MLTRAIL, Service

NOISY_SCRIPT = textwrap.dedent(r"""
    import subprocess, sys
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for i in range(300):
        out.write(b"out %d\n" % i); out.flush()
        err.write(b"err %d\n" % i); err.flush()
    for p in range(0, 101, 5):
        out.write(b"\r%3d%%|%s|" % (p, b"#" * (p // 10))); out.flush()
    out.write(b"\n")
    out.write(b"invalid \xff\xfe utf-8\n")
    out.write(b"L" * (5 * 1024 * 1024) + b"\n"); out.flush()
    subprocess.run([sys.executable, "-c", "print('from a child process', flush=True)"])
    out.write(b"last line without newline"); out.flush()
    err.write(b"fatal: giving up\n"); err.flush()
    sys.exit(3)
""")


def run_env(agent: Service, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
            "MLTRAIL_HOME": str(tmp_path / "home")}


def stream_text(client: QueryClient, run_id: str, stream: str) -> str:
    return "".join(line.text + "\n" for line in client.tail_logs(run_id, [stream]))


def test_console_is_recorded_whole_and_the_exit_code_decides(
        agent: Service, collector: Service, tmp_path: Path) -> None:
    script = tmp_path / "noisy.py"
    script.write_text(NOISY_SCRIPT)
    done = subprocess.run(
        [*MLTRAIL, "run", "--experiment", "e2e", "--run-id", "noisy-1", "--",
         sys.executable, str(script)],
        capture_output=True, env=run_env(agent, tmp_path), timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    # The user saw the console unchanged.
    assert done.stdout.startswith(b"out 0\nout 1\n")
    assert b"\xff\xfe" in done.stdout and done.stdout.endswith(b"last line without newline")

    with QueryClient(collector.grpc) as client:
        run = client.get_run("noisy-1")
        assert run.status == "Failed"
        assert run.error is not None and "exited with code 3" in run.error.message
        assert "fatal: giving up" in run.error.message
        out = stream_text(client, "noisy-1", "stdout")
        err = stream_text(client, "noisy-1", "stderr")
    expected = "".join(f"out {i}\n" for i in range(300))
    expected += "100%|##########|\n" + "invalid \ufffd\ufffd utf-8\n"
    expected += "L" * (5 * 1024 * 1024) + "\n"
    expected += "from a child process\nlast line without newline\n"
    marker = LINE_SPLIT_MARKER.decode()
    assert out.count(marker) == 5, "a 5 MiB line is split in six pieces of at most 1 MiB"
    assert join_split_lines(out.encode()).decode() == expected
    assert err == "".join(f"err {i}\n" for i in range(300)) + "fatal: giving up\n"


def test_sigterm_cancels_the_run_and_stops_the_command(
        agent: Service, collector: Service, tmp_path: Path) -> None:
    code = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n"
    with subprocess.Popen(
        [*MLTRAIL, "run", "--run-id", "stopped-1", "--grace", "5", "--",
         sys.executable, "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=run_env(agent, tmp_path),
    ) as proc:
        assert proc.stdout is not None
        child_pid = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "the command outlived `mltrail run`"
    with QueryClient(collector.grpc) as client:
        assert client.get_run("stopped-1").status == "Canceled"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; its parent (mltrail run) has exited.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"
