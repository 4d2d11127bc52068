"""Items 2 and 3 of issue 13: the local services can be seen, stopped and restarted,
read commands find (or start) them as the SDK does, and printed hints work as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrail.pipeline.embedded import stop_embedded

VENV_BIN = Path(sys.executable).parent
MLTRAIL = str(VENV_BIN / "mltrail")


def shell_env(home: Path) -> dict[str, str]:
    """A user's shell: this venv not activated, nothing but MLTRAIL_HOME set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLTRAIL_COLLECTOR", "MLTRAIL_AGENT", "VIRTUAL_ENV")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN]
    env["PATH"] = os.pathsep.join(path)
    env["MLTRAIL_HOME"] = str(home)
    return env


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    stop_embedded(home)


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_local_status_start_stop_and_read_commands_that_restart_them(
        home: Path, tmp_path: Path) -> None:
    env = shell_env(home)
    status = run([MLTRAIL, "local", "status"], env, tmp_path)
    assert status.returncode == 3, status
    assert re.search(r"^collector\s+stopped", status.stdout, re.M)
    assert re.search(r"^agent\s+stopped", status.stdout, re.M)
    assert f"Start them with `{MLTRAIL} local start`" in status.stdout

    # A read command starts the local collector, as the SDK would.
    listed = run([MLTRAIL, "runs"], env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "mltrail: started the local collector at 127.0.0.1:" in listed.stderr
    assert f"`{MLTRAIL} local stop` stops it" in listed.stderr

    made = run([MLTRAIL, "run", "--summary", "--experiment", "local", "--", sys.executable,
                "-c", "print('hello local')"], env, tmp_path)
    assert made.returncode == 0, made.stderr
    run_id = re.search(r"^Run:\s+(\S+)", made.stdout, re.M)[1]  # type: ignore[index]

    status = run([MLTRAIL, "local", "status"], env, tmp_path)
    assert status.returncode == 0, status.stdout
    pids = re.findall(r"^(?:collector|agent)\s+running\s+(\d+)", status.stdout, re.M)
    assert len(pids) == 2
    assert re.search(rf"^Store:\s+{home / 'collector' / 'store.db'} \(\d", status.stdout, re.M)
    assert re.search(rf"^Data:\s+{home}$", status.stdout, re.M)

    stopped = run([MLTRAIL, "local", "stop"], env, tmp_path)
    assert stopped.returncode == 0
    assert stopped.stdout.splitlines()[:2] == [f"stopped the local collector (pid {pids[0]})",
                                               f"stopped the local agent (pid {pids[1]})"]
    assert run([MLTRAIL, "local", "status"], env, tmp_path).returncode == 3

    # The ready file now names a stopped collector: the next read starts it again,
    # on the same store.
    again = run([MLTRAIL, "runs", "-q"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [run_id]
    assert "started the local collector" in again.stderr

    logs = run([MLTRAIL, "local", "logs", "collector", "-n", "3"], env, tmp_path)
    assert logs.returncode == 0
    assert len(logs.stdout.splitlines()) == 3 and "collector" in logs.stdout

    started = run([MLTRAIL, "local", "start"], env, tmp_path)
    assert started.returncode == 0
    assert "started the local agent (pid" in started.stderr
    assert re.search(r"^agent\s+running", started.stdout, re.M)


def test_the_summary_hints_work_as_printed_in_a_shell_without_the_venv(
        home: Path, tmp_path: Path) -> None:
    env = shell_env(home)
    made = run([MLTRAIL, "run", "--summary", "--", sys.executable, "-c", "print('hi')"],
               env, tmp_path)
    assert made.returncode == 0, made.stderr
    out = made.stdout
    hints = [line.strip() for line in out.split("Look further", 1)[1].splitlines()[1:]
             if line.startswith("  ")]
    assert len(hints) == 5 and all(h.startswith(MLTRAIL + " ") for h in hints), out
    assert f"mltrail is not on your PATH: `. {VENV_BIN / 'activate'}` puts it there." in out
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for hint in hints:
        done = run(["bash", "-c", hint], env, elsewhere)
        assert done.returncode == 0, (hint, done.stderr)
    # With mltrail on PATH the hints are the bare command.
    on_path = {**env, "PATH": f"{VENV_BIN}{os.pathsep}{env['PATH']}"}
    made = run(["mltrail", "run", "--summary", "--", sys.executable, "-c", "print('hi')"],
               on_path, tmp_path)
    assert "\n  mltrail show " in made.stdout and "not on your PATH" not in made.stdout


def test_an_explicit_collector_that_is_down_gives_a_hint_that_works(tmp_path: Path) -> None:
    env = shell_env(tmp_path / "home")
    done = run([MLTRAIL, "runs", "--collector", "127.0.0.1:1"], env, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "mltrail: error: cannot reach the collector at 127.0.0.1:1 (connection refused); "
        "check the address, or start a collector there with `mltrail collector --grpc "
        "127.0.0.1:1`; without --collector and MLTRAIL_COLLECTOR the local collector is used")
