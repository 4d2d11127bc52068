"""``ScriptRun``: the run of a submitted script (``Experiment.submit``).

``submit`` registers the run before it returns: its first record
(``RunStarted`` with ``registered``, status NotStarted, the run definition
and the submitter) has reached the collector, so ``get_status()``,
``get_details()`` and ``get_metrics()`` answer at once. It then starts
``mltrail run`` for the script in its source directory, as a separate
process (which outlives the caller if need be); the launcher's start makes
the run Running and the script's exit ends it.

``cancel()`` stops the script: SIGTERM to the launcher, which passes it to
the script's process group and kills the group after its grace period; the
run ends Canceled. ``fail()`` by the submitter is final: the script's own
end no longer changes the status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltrail.common.errors import MltrailError
from mltrail.common.settings import mltrail_home
from mltrail.proto import records_pb2
from mltrail.query.details import CANCEL_TAG, RUN_DEFINITION_PROPERTY
from mltrail.query.types import TERMINAL_STATUSES
from mltrail.query.wait import OfflineRunNotWatched, RunFailed, WaitTimeout
from mltrail.run import Run, new_run_id
from mltrail.workspace import workspace_name

if TYPE_CHECKING:
    from mltrail.experiment_base import Experiment

__all__ = ["OfflineRunNotWatched", "RunFailed", "ScriptRun", "WaitTimeout", "submit"]

LAUNCHER_GRACE_SECONDS = 10.0  # mltrail run's --grace: SIGTERM, then SIGKILL after this
# After the launcher exits, how long its end may take to reach the collector
# (it waits for delivery itself; this covers a slow collector).
LAUNCHER_SETTLE_SECONDS = 30.0


class ScriptRun(Run):
    """A run whose script this process launched (or any ``azureml.scriptrun``)."""

    RUN_TYPE = "azureml.scriptrun"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._process: subprocess.Popen[bytes] | None = None

    def cancel(self) -> None:
        """Stop the script and mark the run Canceled: a script this process launched by
        signal; another's through its launcher, which watches for the cancel tag (as
        `mltrail cancel` asks), for up to the launcher's grace period and a little more."""
        process = self._process
        if process is None and self.get_status() == "Running":
            self._event(records_pb2.RunEvent(tags=records_pb2.TagsSet(
                tags={CANCEL_TAG: str(time.time_ns())})))
            self.flush()
            deadline = time.monotonic() + LAUNCHER_GRACE_SECONDS + 10
            while time.monotonic() < deadline and self.get_status() not in TERMINAL_STATUSES:
                time.sleep(0.5)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(LAUNCHER_GRACE_SECONDS + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.get_status() not in TERMINAL_STATUSES:
            # the launcher died before it could record the end (or this process did not
            # launch the script): the end is recorded here, and the collector keeps the first
            super().cancel()


def launcher_command(experiment: str, run_id: str, config: Any) -> list[str]:
    cmd = [sys.executable, "-m", "mltrail", "run", "--experiment", experiment,
           "--run-id", run_id, "--submitted", "--grace", f"{LAUNCHER_GRACE_SECONDS:g}", "--"]
    if config.command:
        command = config.command
        return [*cmd, *(["/bin/sh", "-c", command] if isinstance(command, str)
                        else [str(c) for c in command])]
    if not config.script:
        raise ValueError("ScriptRunConfig needs script (relative to source_directory) or "
                         "command")
    script = Path(config.source_directory, config.script)
    if not script.is_file():
        raise ValueError(f"ScriptRunConfig.script {config.script!r} is not a file in "
                         f"source_directory {config.source_directory!r}")
    return [*cmd, sys.executable, config.script, *map(str, config.arguments)]


def submit(experiment: Experiment, config: Any, tags: dict[str, Any], show_output: bool = False,
           parent: Run | None = None) -> ScriptRun:
    """Register the run, then start its launcher; with ``show_output``, watch it to the end."""
    if not os.path.isdir(config.source_directory):
        raise ValueError(f"ScriptRunConfig.source_directory {config.source_directory!r} is "
                         "not a directory")
    run_id = new_run_id(experiment.name)
    cmd = launcher_command(experiment.name, run_id, config)
    definition = json.dumps(config.run_definition())
    run = ScriptRun._start(experiment, run_id=run_id, tags=tags, run_type="script",
                           parent=parent, link=parent._link if parent else None,
                           properties={RUN_DEFINITION_PROPERTY: definition}, registered=True)
    run._local = False  # the launcher and the script change it from now on: read it back
    run.take_snapshot(config.source_directory)
    # the registration reached the collector (or raises NotDelivered)
    run._link.reader(300.0, strict=True)
    run._process = _launch(run, cmd, config.source_directory)
    threading.Thread(target=_watch_launcher, args=(run, run._process),
                     name=f"mltrail-watch-{run_id}", daemon=True).start()
    if show_output:
        run.wait_for_completion(show_output=True)
    return run


def _watch_launcher(run: ScriptRun, process: subprocess.Popen[bytes]) -> None:
    """A launcher that died before recording the run's end (killed, crashed) would leave
    the run NotStarted or Running for ever: record it failed, naming the launcher's log."""
    code = process.wait()
    deadline = time.monotonic() + LAUNCHER_SETTLE_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(MltrailError):
            if run.get_status() in TERMINAL_STATUSES:
                return
        time.sleep(0.5)
    log = mltrail_home() / "submitted" / f"{run.id}.log"
    with contextlib.suppress(MltrailError):
        run._end(records_pb2.FAILED, records_pb2.ErrorDetails(
            code="LauncherExited", exit_code=code,
            message=f"the launcher (mltrail run) exited with code {code} without recording "
                    f"the run's end; its output is in {log}"))


def _launch(run: Run, cmd: list[str], cwd: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if run._link.agent is not None:
        env["MLTRAIL_AGENT"] = run._link.agent.socket_path  # the same agent as ours
    env.pop("MLTRAIL_RUN_ID", None)
    env["MLTRAIL_WORKSPACE"] = workspace_name(run.experiment.workspace)
    directory = mltrail_home() / "submitted"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with open(directory / f"{run.id}.log", "ab") as log:
            return subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
    except OSError as exc:
        run._end(records_pb2.FAILED, records_pb2.ErrorDetails(
            code="LaunchError", message=f"could not start the launcher: {exc.strerror}"))
        raise
