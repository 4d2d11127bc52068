"""Experiment.submit, wait_for_completion and capture_output with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from mltrail.query.client import QueryClient
from tests.procs import Service

TICKER = textwrap.dedent("""
    import sys, time
    for i in range(6):
        print(f"tick {i} {time.time():.3f}", flush=True)
        time.sleep(0.4)
    sys.exit(int(sys.argv[1]))
""")

SUBMITTER = textwrap.dedent("""
    import sys
    from mltrail import ActivityFailedException, Experiment, ScriptRunConfig
    config = ScriptRunConfig(source_directory=sys.argv[1], script="ticker.py",
                             arguments=[sys.argv[2]])
    try:
        run = Experiment("submitted").submit(config, tags={"via": "submit"}, show_output=True)
        print("returned", run.id, flush=True)
        print("status", run.wait_for_completion()["status"], flush=True)
    except ActivityFailedException as exc:  # submit(show_output=True) waits, so it raises too
        print("failed", exc, flush=True)
""")


def env_for(agent: Service, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "MLTRAIL_AGENT": agent.info["socket"],
            "MLTRAIL_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}


def read_lines_with_arrival(proc: subprocess.Popen[str]) -> list[tuple[float, str]]:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
    return lines


def submit_ticker(agent: Service, tmp_path: Path, exit_code: int) -> list[tuple[float, str]]:
    (tmp_path / "ticker.py").write_text(TICKER)
    with subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, str(tmp_path), str(exit_code)], text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_for(agent, tmp_path),
    ) as proc:
        box: list[list[tuple[float, str]]] = []
        reader = threading.Thread(target=lambda: box.append(read_lines_with_arrival(proc)))
        reader.start()
        reader.join(timeout=90)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    return box[0]


def test_submit_show_output_streams_lines_live(agent: Service, collector: Service,
                                               tmp_path: Path) -> None:
    lines = submit_ticker(agent, tmp_path, exit_code=0)
    ticks = [(arrived, text) for arrived, text in lines if text.startswith("tick")]
    assert [t.split()[1] for _, t in ticks] == [str(i) for i in range(6)]
    delays = [arrived - float(text.split()[2]) for arrived, text in ticks]
    assert max(delays) < 1.0, f"lines reached the watcher late: {delays}"
    assert lines[-1][1] == "status Completed"
    run_id = next(t.split()[1] for _, t in lines if t.startswith("returned"))
    with QueryClient(collector.grpc) as client:
        run = client.get_run(run_id)
    assert run.status == "Completed" and run.tags == {"via": "submit"}
    assert run.run_type == "script"


def test_wait_for_completion_raises_with_the_error_details(agent: Service, tmp_path: Path
                                                           ) -> None:
    lines = submit_ticker(agent, tmp_path, exit_code=4)
    assert lines[-1][1].startswith("failed run ")
    assert "exited with code 4" in lines[-1][1]


CAPTURING = textwrap.dedent("""
    import sys
    from mltrail import Experiment
    print("before the run")
    with Experiment("capture").start_logging(capture_output=True) as run:
        print("inside on stdout")
        print("inside on stderr", file=sys.stderr)
        sys.stdout.write("no newline at the end")
    print("after the run")
    print("run", run.id)
""")


def test_capture_output_records_while_the_run_is_active(agent: Service, collector: Service,
                                                        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CAPTURING], capture_output=True, text=True,
                          env=env_for(agent, tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "inside on stdout\nno newline at the endafter the run\n" in done.stdout
    run_id = done.stdout.split()[-1]
    with QueryClient(collector.grpc) as client:
        out = [line.text for line in client.tail_logs(run_id, ["stdout"])]
        err = [line.text for line in client.tail_logs(run_id, ["stderr"])]
    assert out == ["inside on stdout", "no newline at the end"]
    assert err == ["inside on stderr"]


LAUNCHER_KILLER = textwrap.dedent("""
    import os, signal, sys
    from mltrail import Experiment, ScriptRunConfig, script_run
    script_run.LAUNCHER_SETTLE_SECONDS = 2.0
    run = Experiment("killed").submit(ScriptRunConfig(sys.argv[1], "sleeper.py"))
    os.kill(run._process.pid, signal.SIGKILL)  # the launcher dies without a word
    details = run.wait_for_completion(raise_on_error=False, timeout=120)
    error = details["error"]["error"]
    print("status", details["status"], error["code"], error["exitCode"], flush=True)
""")


def test_a_launcher_that_dies_leaves_its_run_failed_not_running(agent: Service,
                                                                tmp_path: Path) -> None:
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(3)\n")
    done = subprocess.run([sys.executable, "-c", LAUNCHER_KILLER, str(tmp_path)], text=True,
                          capture_output=True, env=env_for(agent, tmp_path), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "status Failed LauncherExited -9" in done.stdout


FOREVER = "import time\nwhile True:\n    print('working', flush=True)\n    time.sleep(0.2)\n"
CANCELER = textwrap.dedent("""
    import sys
    from mltrail import Experiment
    from mltrail.script_run import ScriptRun
    run = ScriptRun(Experiment("cancel-me"), sys.argv[1])
    run.cancel()
    print(run.get_status())
""")


def test_cancel_from_another_process_stops_the_script_through_its_launcher(
        agent: Service, collector: Service, tmp_path: Path) -> None:
    (tmp_path / "forever.py").write_text(FOREVER)
    env = env_for(agent, tmp_path)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "mltrail", "run", "--experiment", "cancel-me", "--", sys.executable,
         "forever.py"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with QueryClient(collector.grpc) as client:
            deadline = time.monotonic() + 60
            runs = []
            while not runs and time.monotonic() < deadline:
                runs = [r for r in client.list_runs(experiment="cancel-me")
                        if r.status == "Running"]
                time.sleep(0.1)
        assert runs, "the run never started"
        done = subprocess.run([sys.executable, "-c", CANCELER, runs[0].run_id], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Canceled"
        _, stderr = launcher.communicate(timeout=60)
        assert launcher.returncode != 0  # the launcher stopped its command
        assert b"asked to stop this run" in stderr
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
