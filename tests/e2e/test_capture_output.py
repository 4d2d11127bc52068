"""start_logging(capture_output=True): what a process prints reaches its own stdout
unchanged and the run's streams in order (issue 13, item 8's speed-up kept it whole)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.procs import Service, mltrail_cli

SCRIPT = r"""
import sys, threading
from mltrail import Experiment
run = Experiment("capture").start_logging(capture_output=True)
print("hello")
print("err line", file=sys.stderr)
for i in range(3000):
    print("step", i)
sys.stdout.flush()
sys.stdout.buffer.write(b"raw \xff bytes\n")
threads = [threading.Thread(target=lambda n=n: [print(f"t{n} {i}") for i in range(200)])
           for n in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
print("é ünïcode")
print("partial", end="")
run.complete()
sys.__stderr__.write("RUN " + run.id + "\n")
"""


def test_captured_output_is_shown_unchanged_and_recorded_in_order(
        agent: Service, collector: Service, tmp_path: Path) -> None:
    env = {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
           "MLTRAIL_COLLECTOR": collector.grpc, "MLTRAIL_HOME": str(tmp_path / "home")}
    out = tmp_path / "out.txt"
    with open(out, "wb") as fh:
        done = subprocess.run([sys.executable, "-c", SCRIPT], stdout=fh, stderr=subprocess.PIPE,
                              env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    run_id = done.stderr.decode().split("RUN ")[1].strip()
    shown = out.read_bytes()
    assert shown.startswith(b"hello\nstep 0\n") and shown.endswith("é ünïcode\npartial".encode())
    assert b"raw \xff bytes\n" in shown
    lines = [json.loads(x) for x in mltrail_cli("logs", run_id, "--json",
                                                "--stream", "stdout", env=env).stdout.splitlines()]
    recorded = [line["text"] for line in lines]
    expected = shown.decode("utf-8", "replace").split("\n")
    assert recorded == expected
    assert "raw \ufffd bytes" in recorded
    stderr = mltrail_cli("logs", run_id, "--stream", "stderr", env=env).stdout
    assert stderr == "err line\n"
