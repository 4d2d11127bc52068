"""Items 4 to 6 of issue 13: `mltrail run`, `show` and `logs` as a user sees them,
with a real agent and collector."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import MLTRAIL, Service, mltrail_cli


@pytest.fixture
def env(agent: Service, collector: Service, tmp_path: Path) -> dict[str, str]:
    return {"MLTRAIL_AGENT": agent.info["socket"], "MLTRAIL_COLLECTOR": collector.grpc,
            "MLTRAIL_HOME": str(tmp_path / "home")}


def mltrail_run(env: dict[str, str], code: str, *flags: str) -> tuple[str, subprocess.
                                                                      CompletedProcess[str]]:
    done = mltrail_cli("run", *flags, "--", sys.executable, "-c", code, env=env)
    assert "Traceback" not in done.stderr.replace("Traceback (most recent", ""), done.stderr
    found = re.search(r"^mltrail: run (\S+) \(experiment", done.stderr, re.M)
    assert found, done.stderr
    return found[1], done


def test_run_says_which_run_it_made_unless_quiet(env: dict[str, str]) -> None:
    from tests.e2e.test_local_services import shell_env

    env = {**env, "PATH": shell_env(Path(env["MLTRAIL_HOME"]))["PATH"]}  # venv not on PATH
    run_id, done = mltrail_run(env, "print('hi')", "--experiment", "says")
    first = done.stderr.splitlines()[0]
    assert first == (f"mltrail: run {run_id} (experiment says); follow it with "
                     f"`{Path(sys.executable).parent / 'mltrail'} logs {run_id} --follow`")
    quiet = mltrail_cli("run", "--quiet", "--", sys.executable, "-c", "print('hi')", env=env)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "hi\n"


def test_show_names_the_error_and_the_last_lines_of_stderr(env: dict[str, str]) -> None:
    code = "import sys; print('loading', file=sys.stderr); sys.exit('boom: bad data')"
    run_id, done = mltrail_run(env, code)
    assert done.returncode == 1
    shown = mltrail_cli("show", run_id, env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    error = lines.index("Error:      the command exited with code 1 (ExitCode, exit code 1)")
    assert lines[error + 1:error + 3] == ["Stderr:     loading", "            boom: bad data"]
    followed = mltrail_cli("logs", run_id, "--follow", env=env)
    assert followed.returncode == 1
    assert followed.stderr.splitlines()[-1] == (
        f"mltrail: error: run {run_id!r} failed: the command exited with code 1 (ExitCode, "
        "exit code 1); last line of stderr: boom: bad data")


# Two pipes have no order of their own: the order is the launcher's reads. Each line is
# written once the launcher has read the one before (its pipe empty, then a pause for
# the read to be stamped), so the reads follow the writes however loaded the machine.
INTERLEAVED = (
    "import fcntl, struct, sys, termios, time\n"
    "def read(stream):\n"
    "    while struct.unpack('i', fcntl.ioctl(stream.fileno(), termios.FIONREAD,\n"
    "                                         b'\\0' * 4))[0]:\n"
    "        time.sleep(0.001)\n"
    "    time.sleep(0.1)\n"
    "for i in range(6):\n"
    "    print(f'tick {i}', flush=True); read(sys.stdout)\n"
    "    if i % 2: print(f'oops {i}', file=sys.stderr, flush=True); read(sys.stderr)\n"
)
WRITTEN = ["[stdout] tick 0", "[stdout] tick 1", "[stderr] oops 1", "[stdout] tick 2",
           "[stdout] tick 3", "[stderr] oops 3", "[stdout] tick 4", "[stdout] tick 5",
           "[stderr] oops 5"]


def test_logs_and_logs_follow_show_lines_in_the_order_they_were_written(
        env: dict[str, str]) -> None:
    run_id, done = mltrail_run(env, INTERLEAVED)
    assert done.returncode == 0
    stored = mltrail_cli("logs", run_id, env=env)
    assert stored.stdout.splitlines() == WRITTEN
    followed = mltrail_cli("logs", run_id, "--follow", env=env)
    assert followed.returncode == 0
    assert followed.stdout.splitlines() == WRITTEN


def test_logs_follow_of_a_running_command_keeps_the_written_order(env: dict[str, str]
                                                                   ) -> None:
    imports, rest = INTERLEAVED.split("\n", 1)
    code = f"{imports}\nsys.stdin.readline()\n{rest}"  # waits until the follower is attached
    runner = subprocess.Popen([*MLTRAIL, "run", "--", sys.executable, "-c", code],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert runner.stderr is not None and runner.stdin is not None
    run_id = re.search(r"^mltrail: run (\S+) ", runner.stderr.readline())[1]  # type: ignore[index]
    # --prefix: without it the follower prefixes lines once it has seen a second stream,
    # and whether it attaches before or after stderr's first line is a race
    follower = subprocess.Popen([*MLTRAIL, "logs", run_id, "--follow", "--prefix"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env})
    runner.communicate("go\n", timeout=60)
    assert runner.returncode == 0
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out.splitlines() == WRITTEN


def test_logs_says_the_log_stream_repeats_stderr_and_console_leaves_it_out(
        env: dict[str, str]) -> None:
    code = ("import logging\n"
            "from mltrail import LogHandler, Run\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "logging.getLogger().addHandler(LogHandler(Run.get_context()))\n"
            "logging.getLogger('train').info('data loaded')\n"
            "print('epoch 1')\n")
    run_id, done = mltrail_run(env, code)
    assert done.returncode == 0, done.stderr
    every = mltrail_cli("logs", run_id, env=env)
    assert "[log] data loaded" in every.stdout and "[stderr] INFO:train:data loaded" in every.stdout
    assert every.stderr.splitlines() == [
        "mltrail: the 'log' stream holds Python logging records, which often also went to "
        "stderr; --console shows only stdout and stderr, --stream log only the records"]
    console = mltrail_cli("logs", run_id, "--console", env=env)
    assert console.stderr == ""
    assert sorted(console.stdout.splitlines()) == ["[stderr] INFO:train:data loaded",
                                                   "[stdout] epoch 1"]


def test_a_command_ignoring_sigint_is_told_about_then_killed(env: dict[str, str],
                                                              collector: Service) -> None:
    code = ("import signal, time\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n")
    runner = subprocess.Popen([*MLTRAIL, "run", "--grace", "3", "--", sys.executable, "-c",
                               code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **env})
    assert runner.stdout is not None
    assert runner.stdout.readline() == "ready\n"
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGKILL
    assert "mltrail: the command is still running after SIGINT; it is killed in 2 s " \
           "(--grace 3)" in err
    run_id = re.search(r"^mltrail: run (\S+) ", err, re.M)[1]  # type: ignore[index]
    shown = mltrail_cli("show", run_id, "--json", env=env)
    assert '"status": "Canceled"' in shown.stdout


def test_cancel_stops_a_mltrail_run_in_another_process(env: dict[str, str]) -> None:
    code = ("import time\n"
            "print('working', flush=True)\n"
            "time.sleep(120)\n")
    runner = subprocess.Popen([*MLTRAIL, "run", "--", sys.executable, "-c", code],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **env})
    assert runner.stdout is not None and runner.stderr is not None
    run_id = re.search(r"^mltrail: run (\S+) ", runner.stderr.readline())[1]  # type: ignore[index]
    assert runner.stdout.readline() == "working\n"
    canceled = mltrail_cli("cancel", run_id, env=env)
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout == f"run {run_id} canceled: its command was stopped\n"
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM
    assert "mltrail: `mltrail cancel` asked to stop this run; stopping the command" in err
    shown = mltrail_cli("show", run_id, "--json", env=env)
    assert '"status": "Canceled"' in shown.stdout
    again = mltrail_cli("cancel", run_id, env=env)
    assert again.stdout == f"run {run_id} already ended (Canceled); nothing to cancel\n"


def test_cancel_marks_an_interactive_run_canceled(env: dict[str, str]) -> None:
    code = ("import sys, time\n"
            "from mltrail import Experiment\n"
            "run = Experiment('inter').start_logging()\n"
            "run.flush()\n"
            "print(run.id, flush=True)\n"
            "sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    done = mltrail_cli("cancel", run_id, env=env)
    for _ in range(100):  # the run's record may still be on its way to the collector
        if "not found" not in done.stderr:
            break
        done = mltrail_cli("cancel", run_id, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"run {run_id} marked Canceled (an interactive run: no launcher "
                           "to stop, its process keeps running)\n")
    proc.communicate("\n", timeout=60)
    assert '"status": "Canceled"' in mltrail_cli("show", run_id, "--json", env=env).stdout
