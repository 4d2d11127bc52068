"""The SDK's one memory bound (MLTRAIL_MEMORY_MIB), with real processes.

A script logs 28 MiB of distinct strings, 3.5 times the bound of 8 MiB, while
its agent is away (a socket nobody listens on, or a real agent stopped with
SIGSTOP so that a send hangs mid-stream). Its peak RSS (VmHWM, read by the
script itself) must stay within the bound plus ``margin(bound)`` over its RSS
before the first call (after imports and the run's start); then a real agent
is started (or continued) and every record must reach the real collector
once, in order, with the run completed, and the spill directory left empty.
The bound is small so that the collector ingests little, and the strings go
to NAMES series (string i to ``text{i % NAMES}``, step i). What is proved
holds at any bound.

The margin: a log call past the bound spills the oldest 1/16 of it (0.5 MiB
at 8 MiB); the batch being encoded and written exists up to three times
(items, protobuf, frame: 3 x 256 KiB, the smallest batch), a send holds up to
1 MiB (its budget, at least 1 MiB) and a batch read back to probe the agent
twice; the strings freed stay in the C allocator's heaps as holes that later
values fill; gRPC, protobuf and the interpreter allocate a few MiB of their
own while the run goes on, whatever the bound. Measured 3.3 to 4.3 MiB over an
8 MiB bound (away; python tests/log_strings.py 448 64 bench with
MLTRAIL_MEMORY_MIB=8) and 5 to 15 MiB over 16 and 32 MiB bounds
(bench/sdk_memory.py): a quarter of the bound plus 8 MiB (10 MiB at 8 MiB) leaves
room for a loaded machine and is below what the strings alone take without
the bound (28 MiB).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mltrail.query.client import QueryClient
from mltrail.query.metrics_view import page_records
from tests.agent_client import agent_service
from tests.conftest import require
from tests.procs import Service

MIB = 1 << 20
STRING_KIB = 64
BLOCK = "x" * (STRING_KIB * 1024 - 16)
BOUND_MIB = 8  # MLTRAIL_MEMORY_MIB of the script
LOGGED_MIB = 28  # 3.5 times the bound
NAMES = 8
STALL = 300.0  # seconds without progress that mean a hang, not a slow machine
READ_STEPS = 128  # read back 8 MiB at a time (one answer of the collector's is at most 64)


def margin(bound_mib: int) -> int:
    return bound_mib * MIB // 4 + 8 * MIB

SCRIPT = Path(__file__).resolve().parent.parent / "log_strings.py"


def start_script(tmp_path: Path, socket: Path, mode: str, bound_mib: int, logged_mib: int
                 ) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTRAIL_")}
    env.update(MLTRAIL_HOME=str(tmp_path / "home"), MLTRAIL_AGENT=str(socket),
               MLTRAIL_MEMORY_MIB=str(bound_mib), MLTRAIL_RECORD_ENVIRONMENT="0")
    count = logged_mib * 1024 // STRING_KIB
    with open(tmp_path / "script.err", "w") as err:
        return subprocess.Popen([sys.executable, str(SCRIPT), str(count), str(STRING_KIB),
                                 mode, str(NAMES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env, stderr=err)


def stop_script(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def read_json(proc: subprocess.Popen[str], tmp_path: Path) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the script is killed by the test's timeout if it hangs
    assert line, f"the script exited: {(tmp_path / 'script.err').read_text()[-3000:]}"
    return dict(json.loads(line))


def tell(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def check_within_bound(out: dict[str, object], bound_mib: int) -> None:
    grown = int(str(out["peak"])) - int(str(out["before"]))
    assert grown <= bound_mib * MIB + margin(bound_mib), (
        f"peak RSS grew {grown / MIB:.0f} MiB under a {bound_mib} MiB bound")


def spool_state(spool: Path) -> tuple[str, int]:
    """What moves while the agent forwards: its ledger (the position the collector
    confirmed) and the bytes of its segments."""
    ledger = spool / "ledger.json"
    return (ledger.read_text() if ledger.exists() else "",
            sum(f.stat().st_size for f in (spool / "segments").glob("*") if f.is_file()))


def check_every_record_once(collector: Service, run_id: str, logged_mib: int,
                            spool: Path) -> None:
    """Waits while the agent's spool drains (strings take the collector a while on a
    loaded machine); fails only if nothing moves for STALL seconds."""
    count = logged_mib * 1024 // STRING_KIB
    last, moved = ("", -1), time.monotonic()
    with QueryClient(collector.grpc) as client:
        while client.get_run(run_id).status != "Completed":  # the agent forwards it
            now = spool_state(spool)
            if now != last:
                last, moved = now, time.monotonic()
            assert time.monotonic() - moved < STALL, (
                f"the agent's spool stayed at {now} for {STALL} s")
            time.sleep(0.5)
        for name in range(NAMES):
            steps = []
            for first in range(0, count + READ_STEPS, READ_STEPS):
                pages = client.read_series(run_id, f"text{name}", step_min=first,
                                           step_max=first + READ_STEPS - 1)
                for record in (r for page in pages for r in page_records(page)):
                    step = record.metric.scalar.step
                    assert record.metric.scalar.value.text == f"{step:016d}{BLOCK}"
                    steps.append(step)
            assert steps == list(range(name, count, NAMES))  # each once, in order


def finish(proc: subprocess.Popen[str], tmp_path: Path, out: dict[str, object],
           bound_mib: int) -> None:
    tell(proc)
    done = read_json(proc, tmp_path)
    assert proc.wait(timeout=300) == 0
    assert done["pending"] == 0
    # the peak of the whole run: sending back from disk stays within the bound too
    check_within_bound({**out, "peak": done["peak"]}, bound_mib)
    assert not Path(str(out["spill_dir"])).exists()  # delivered: nothing left for `mltrail sync`


def test_strings_logged_while_no_agent_listens_stay_within_the_bound_and_arrive_once(
        tmp_path: Path, collector: Service) -> None:
    proc = start_script(tmp_path, tmp_path / "agent.sock", "away", BOUND_MIB, LOGGED_MIB)
    try:
        out = read_json(proc, tmp_path)
        check_within_bound(out, BOUND_MIB)
        assert int(str(out["spilled"])) > 0
        assert (Path(str(out["spill_dir"])) / "segments").is_dir()
        agent = agent_service(tmp_path, collector.grpc).start()  # on the script's socket
        try:
            finish(proc, tmp_path, out, BOUND_MIB)
            check_every_record_once(collector, str(out["run"]), LOGGED_MIB, tmp_path / "spool")
        finally:
            agent.stop()
    finally:
        stop_script(proc)


def test_a_stopped_agent_holding_a_send_costs_no_memory_and_no_log_call_waits_for_it(
        tmp_path: Path, collector: Service) -> None:
    """SIGSTOP: the agent's socket still accepts, a send hangs with batches in it. 28 MiB
    of log calls under an 8 MiB bound go on (none waits for the agent: the script ends
    its loop) and spill; what the hung send delivers once the agent goes on is not sent
    again."""
    agent = agent_service(tmp_path, collector.grpc).start()
    assert agent.proc is not None
    proc = start_script(tmp_path, tmp_path / "agent.sock", "sync", BOUND_MIB, LOGGED_MIB)
    try:
        assert read_json(proc, tmp_path) == {"ready": True}
        os.kill(agent.proc.pid, signal.SIGSTOP)
        try:
            tell(proc)
            out = read_json(proc, tmp_path)  # every log call returned, agent stopped
            check_within_bound(out, BOUND_MIB)
            assert int(str(out["spilled"])) > 0
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        finish(proc, tmp_path, out, BOUND_MIB)
        check_every_record_once(collector, str(out["run"]), LOGGED_MIB, tmp_path / "spool")
    finally:
        stop_script(proc)
        agent.stop()


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    require(Path("/proc/self/status").exists(), "Linux /proc (the peak RSS is read there)")
