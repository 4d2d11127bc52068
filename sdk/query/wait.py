"""Waiting for a run to end: ``Run.wait_for_completion``.

Watching is done from the collector, never by polling a process:
``show_output`` follows the run's console through the ``TailLogs`` stream,
so a line the script prints reaches the watcher as soon as the collector
committed it, and the follow ends when the run ends. As in Azure ML v1,
only a ``Failed`` run raises (``RunFailed``); a canceled one returns.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from mltrail.common.errors import MltrailError
from mltrail.query.client import RunNotFound

if TYPE_CHECKING:
    from mltrail.run import Run

STATUS_POLL_SECONDS = 0.5  # fixed: a run's end is seen within half a second
# A submitted run exists once it is registered; a run started elsewhere once
# its first record reached the collector.
APPEAR_SECONDS = 120.0


class RunFailed(MltrailError):
    """The run ended Failed; the message carries its error details."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class WaitTimeout(MltrailError):
    """The run had not ended when the timeout ran out; it goes on."""


class OfflineRunNotWatched(MltrailError):
    """An offline run still going: no collector watches it, so there is nothing to wait on."""


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
    if raise_on_error and status == "Failed":
        error = details.get("error", {}).get("error", {}).get("message") or "no error details"
        raise RunFailed(f"run {run.id} {status.lower()}: {error}", details)
    return details


def _wait_exists(client: Any, run_id: str, deadline: float | None) -> None:
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
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), tail.close)
    timer.daemon = True
    timer.start()


def _wait_terminal(client: Any, run_id: str, deadline: float | None) -> None:
    while not client.get_run(run_id).is_terminal:
        if deadline is not None and time.monotonic() > deadline:
            raise WaitTimeout(f"run {run_id} has not ended within the timeout; it goes on; "
                              f"watch it with `mltrail logs {run_id} --follow`")
        time.sleep(STATUS_POLL_SECONDS)
