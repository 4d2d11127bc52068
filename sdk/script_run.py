"""Script runs: ``Experiment.submit(ScriptRunConfig)`` and ``Run.wait_for_completion``.

``submit`` starts ``mltrail run`` for the script in its source directory as
a separate process (which outlives the caller if need be) and returns the
``Run`` at once. Watching is done from the collector, never by polling the
process: ``show_output`` follows the run's console through the ``TailLogs``
stream, so a line the script prints reaches the watcher as soon as the
collector committed it, and the follow ends when the run ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltrail.common.errors import MltrailError

if TYPE_CHECKING:
    from mltrail.experiment import Experiment, ScriptRunConfig
    from mltrail.run import Run

STATUS_POLL_SECONDS = 0.5  # fixed: a run's end is seen within half a second
# A submitted run exists once its launcher's first record reached the collector.
APPEAR_SECONDS = 120.0


class RunFailed(MltrailError):
    """The run ended Failed or Canceled; the message carries its error details."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class WaitTimeout(MltrailError):
    """The run had not ended when the timeout ran out; it goes on."""


class OfflineRunNotWatched(MltrailError):
    """An offline run still going: no collector watches it, so there is nothing to wait on."""


def launcher_command(experiment: str, run_id: str, config: ScriptRunConfig,
                     tags: dict[str, str]) -> list[str]:
    if not config.script:
        raise ValueError("ScriptRunConfig.script is required: the script to run, relative "
                         "to source_directory")
    script = Path(config.source_directory, config.script)
    if not script.is_file():
        raise ValueError(f"ScriptRunConfig.script {config.script!r} is not a file in "
                         f"source_directory {config.source_directory!r}")
    cmd = [sys.executable, "-m", "mltrail", "run", "--experiment", experiment,
           "--run-id", run_id]
    for key, value in tags.items():
        cmd += ["--tag", f"{key}={value}"]
    return [*cmd, "--", sys.executable, config.script, *map(str, config.arguments)]


def submit(experiment: Experiment, config: ScriptRunConfig, tags: dict[str, Any] | None = None,
           show_output: bool = False) -> Run:
    """Start the script as a run of ``experiment``; with ``show_output``, watch it to the end."""
    from mltrail import validation
    from mltrail.run import Run, new_run_id

    checked = validation.check_tags(tags or {})
    run_id = new_run_id(experiment.name)
    cmd = launcher_command(experiment.name, run_id, config, checked)
    run = Run(experiment, run_id)
    env = dict(os.environ)
    if run._link.agent is not None:
        env["MLTRAIL_AGENT"] = run._link.agent.socket_path  # the same agent as ours
    env.pop("MLTRAIL_RUN_ID", None)
    log_path = _launcher_log(run_id)
    with open(log_path, "ab") as log:
        subprocess.Popen(cmd, cwd=config.source_directory, env=env, stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True)
    if show_output:
        run.wait_for_completion(show_output=True)
    return run


def _launcher_log(run_id: str) -> Path:
    from mltrail.query.client import mltrail_home

    directory = mltrail_home() / "submitted"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{run_id}.log"


def wait_for_completion(run: Run, show_output: bool = False, timeout: float | None = None,
                        raise_on_error: bool = True) -> dict[str, Any]:
    """Wait for the run to end; returns ``get_details()``, raises ``RunFailed`` on failure."""
    if run._link.spool_sink is not None:
        return _offline_details(run, raise_on_error)
    deadline = None if timeout is None else time.monotonic() + timeout
    client = run._link.reader().client
    with client:
        _wait_exists(client, run.id, deadline)
        if show_output:
            _follow_output(client, run.id, deadline)
        _wait_terminal(client, run.id, deadline)
    return _ended(run, run.get_details(), raise_on_error)


def _offline_details(run: Run, raise_on_error: bool) -> dict[str, Any]:
    """An offline run ends in its own process: ended, it is read from its spool; still
    going, waiting here could only wait for ourselves (or forever), so it is refused."""
    details = run.get_details()
    if details["status"] in ("NotStarted", "Running"):
        raise OfflineRunNotWatched(
            f"run {run.id} is an offline run: no collector watches it, and it ends when its "
            f"process ends or calls complete(); read it now with get_details(), or upload "
            f"it with `mltrail sync {run._link.where}` and watch it there")
    return _ended(run, details, raise_on_error)


def _ended(run: Run, details: dict[str, Any], raise_on_error: bool) -> dict[str, Any]:
    status = details["status"]
    if raise_on_error and status in ("Failed", "Canceled"):
        error = details.get("error", {}).get("error", {}).get("message") or "no error details"
        raise RunFailed(f"run {run.id} {status.lower()}: {error}", details)
    return details


def _wait_exists(client: Any, run_id: str, deadline: float | None) -> None:
    from mltrail.query.client import RunNotFound

    give_up = time.monotonic() + APPEAR_SECONDS
    if deadline is not None:
        give_up = min(give_up, deadline)
    while True:
        try:
            client.get_run(run_id)
            return
        except RunNotFound:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)


def _follow_output(client: Any, run_id: str, deadline: float | None) -> None:
    with client.tail_logs(run_id, follow=True) as tail:
        if deadline is not None:
            _close_at(tail, deadline)
        for lines in tail.batches():
            sys.stdout.write("".join(line.text + "\n" for line in lines))
            sys.stdout.flush()


def _close_at(tail: Any, deadline: float) -> None:
    import threading

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), tail.close)
    timer.daemon = True
    timer.start()


def _wait_terminal(client: Any, run_id: str, deadline: float | None) -> None:
    while not client.get_run(run_id).is_terminal:
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(f"run {run_id} has not ended within the timeout; it goes on; "
                              f"watch it with `mltrail logs {run_id} --follow`")
        time.sleep(STATUS_POLL_SECONDS)
