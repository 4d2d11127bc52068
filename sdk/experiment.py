"""``mltrail.Experiment`` and ``ScriptRunConfig``: Azure ML v1 names.

``Experiment(name).start_logging()`` starts an interactive run in this
process; ``ScriptRunConfig`` holds what a later ``submit`` will launch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mltrail.run import Run

# Azure v1: 1-255 characters, starting with a letter or digit; letters,
# digits, underscores and dashes.
_EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")


class Experiment:
    """A named group of runs."""

    def __init__(self, name: str, workspace: Any = None, **kwargs: Any) -> None:
        if not isinstance(name, str) and isinstance(workspace, str):
            name, workspace = workspace, name  # Azure v1's order: Experiment(ws, "name")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not _EXPERIMENT_NAME.fullmatch(name):
            raise ValueError(
                f"experiment name {name!r} must be 1-255 characters, start with a letter or "
                "a digit, and contain only letters, digits, underscores and dashes")
        self.name = name
        self.workspace = workspace

    def start_logging(self, *args: Any, display_name: str | None = None,
                      tags: Mapping[str, Any] | None = None,
                      snapshot_directory: str | os.PathLike[str] | None = None,
                      outputs: str | None = None, capture_output: bool = False,
                      **kwargs: Any) -> Run:
        """Start an interactive run; use ``with`` to complete or fail it on exit.

        ``capture_output=True`` records what this process prints to stdout and
        stderr while the run is active (streams "stdout" and "stderr")."""
        if snapshot_directory is not None and not os.path.isdir(snapshot_directory):
            raise ValueError(f"snapshot_directory {os.fspath(snapshot_directory)!r} "
                             "is not a directory")
        run = Run._start(self, display_name=display_name, tags=tags, outputs=outputs)
        if snapshot_directory is not None:
            run.upload_folder("snapshot", snapshot_directory)
        if capture_output:
            run._capture_console()
        return run

    def submit(self, config: ScriptRunConfig, tags: Mapping[str, Any] | None = None,
               show_output: bool = False, **kwargs: Any) -> Run:
        """Run ``config.script`` as a new run in a separate process; returns the run at once.

        With ``show_output=True``, prints the run's console as it arrives and
        returns when the run has ended (raising ``RunFailed`` if it failed)."""
        from mltrail.script_run import submit

        return submit(self, config, dict(tags or {}), show_output)

    def get_runs(self, tags: Mapping[str, str] | None = None, *, where: Sequence[str] = (),
                 order_by: str = "", limit: int = 10_000) -> Iterator[Run]:
        """This experiment's runs, newest first, or by ``order_by`` (``"-accuracy"``:
        the highest latest accuracy first), keeping those where every condition of
        ``where`` holds (``"accuracy > 0.9"``, ``"tags.team = vision"``), as
        ``mltrail runs --where`` does."""
        from mltrail.pipeline.link import process_link

        link = process_link()
        client = getattr(link.reader(), "client", None)
        if client is None:
            raise RuntimeError("get_runs reads from a collector; this process logs offline")
        with client:
            found = client.list_runs(experiment=self.name, tags=dict(tags or {}), limit=limit,
                                     where=list(where), order_by=order_by)
        for info in found:
            yield Run(self, info.run_id, _link=link)

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"


class ScriptRunConfig:
    """What to run: a script in a source directory, with arguments."""

    def __init__(self, source_directory: str | os.PathLike[str], script: str | None = None,
                 arguments: Sequence[Any] | None = None, environment: Any = None,
                 **kwargs: Any) -> None:
        self.source_directory = os.fspath(source_directory)
        self.script = script
        self.arguments = list(arguments) if arguments is not None else []
        self.environment = environment
