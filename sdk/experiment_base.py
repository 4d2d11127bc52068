"""The ``Experiment`` class (Azure ML v1's), below the run modules.

Import order, with no cycle (tests/unit/test_sdk_imports.py checks it)::

    workspace, environment          leaves
    experiment_base                 Experiment: a named group of runs in a workspace
    run                             Run (builds Experiments for get_context, Run.get)
    script_run                      ScriptRun, the run of a submitted script
    script_run_config               ScriptRunConfig: what submit launches
    experiment                      the public module: Experiment, ScriptRunConfig

An ``Experiment`` starts and lists runs, so it needs the ``Run`` class,
which sits above it: ``mltrail.run`` hands it over when it is imported
(``bind_run_type``), and every way to reach ``Experiment`` (``mltrail``,
``mltrail.experiment``, ``mltrail.run``) imports ``mltrail.run`` first.
Submitting is the config's own job (``config.submit_to``), as in v1.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mltrail.workspace import Workspace, default_workspace

if TYPE_CHECKING:
    from mltrail.run import Run

# Azure v1: 1-255 characters, starting with a letter or digit; letters,
# digits, underscores and dashes.
_EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
_run_type: list[type[Run]] = []


def bind_run_type(run_type: type[Run]) -> None:
    """Called once by ``mltrail.run``: the class Experiment starts and lists runs with."""
    _run_type[:] = [run_type]


def _runs() -> type[Run]:
    if not _run_type:  # unreachable through the public modules (see the module docstring)
        raise RuntimeError("import mltrail (or mltrail.experiment) rather than "
                           "mltrail.experiment_base")
    return _run_type[0]


class Experiment:
    """A named group of runs: ``Experiment(workspace, name)``, as in v1.

    ``Experiment("name")`` (no workspace) is accepted too: the default workspace."""

    def __init__(self, workspace: Any = None, name: str | None = None,
                 _skip_name_validation: bool = False, _id: str | None = None,
                 **kwargs: Any) -> None:
        if isinstance(workspace, str) and (name is None or isinstance(name, Workspace)):
            workspace, name = name, workspace  # Experiment("name") / Experiment("name", ws)
        if name is None:
            raise TypeError("Experiment() needs a name: Experiment(workspace, name)")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not _skip_name_validation and not _EXPERIMENT_NAME.fullmatch(name):
            raise ValueError(
                f"experiment name {name!r} must be 1-255 characters, start with a letter or "
                "a digit, and contain only letters, digits, underscores and dashes")
        if workspace is not None and not isinstance(workspace, Workspace):
            raise TypeError(f"workspace must be a mltrail.Workspace, got "
                            f"{type(workspace).__name__}")
        self._name = name
        self._workspace = workspace or default_workspace()
        self._tags: dict[str, str] = dict(kwargs.get("tags") or {})

    @property
    def name(self) -> str:
        return self._name

    @property
    def workspace(self) -> Workspace:
        return self._workspace

    @property
    def workspace_object(self) -> Workspace:
        return self._workspace

    def refresh(self) -> None:
        """v1 reloads the experiment from the service; mltrail's has nothing stored to reload."""

    @property
    def id(self) -> str:
        return f"{self._workspace.name}/{self._name}"

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    @property
    def archived_time(self) -> None:
        return None

    def start_logging(self, *args: Any, outputs: str | bool | None = "./outputs",
                      snapshot_directory: str | os.PathLike[str] | None = None,
                      display_name: str | None = None, tags: Mapping[str, Any] | None = None,
                      run_id: str | None = None, capture_output: bool = False,
                      **kwargs: Any) -> Run:
        """Start an interactive run; use ``with`` to complete or fail it on exit.

        v1's arguments: ``outputs`` (created now, uploaded when the run ends;
        ``False`` for none), ``snapshot_directory`` (uploaded as ``snapshot/``),
        ``display_name``, ``tags``, ``run_id``. ``capture_output=True`` records
        what this process prints while the run is active."""
        display_name = display_name or kwargs.get("name")  # v1's older keyword
        if outputs is True or outputs is None:
            outputs = "./outputs"  # v1: None and True both mean the default
        elif outputs is False:
            outputs = None
        if snapshot_directory is not None and not os.path.isdir(snapshot_directory):
            raise ValueError(f"snapshot_directory {os.fspath(snapshot_directory)!r} "
                             "is not a directory")
        run = _runs()._start(self, run_id=run_id, display_name=display_name, tags=tags,
                             outputs=outputs)
        if snapshot_directory is not None:
            run.upload_folder("snapshot", snapshot_directory)
        if capture_output:
            run._capture_console()
        return run

    def submit(self, config: Any, tags: Mapping[str, Any] | None = None, **kwargs: Any) -> Run:
        """Launch ``config`` (a ``ScriptRunConfig``) as a new run; returns it once registered.

        With ``show_output=True``, prints the run's console as it arrives and
        returns when the run has ended (raising ``RunFailed`` if it failed)."""
        submit_to = getattr(config, "submit_to", None)
        if not callable(submit_to):
            raise TypeError(f"submit takes a ScriptRunConfig, got {type(config).__name__}")
        run: Run = submit_to(self, dict(tags or {}), **kwargs)
        return run

    def get_runs(self, type: str | None = None, tags: str | Mapping[str, Any] | None = None,
                 properties: str | Mapping[str, Any] | None = None,
                 include_children: bool = False, *, where: Sequence[str] = (),
                 order_by: str = "") -> Iterator[Run]:
        """This experiment's runs, newest first (v1's filters; ``Run.list`` for ``status``);
        mltrail's ``where`` (``"accuracy > 0.9"``) and ``order_by`` (``"-accuracy"``)
        as ``mltrail runs --where/--sort``."""
        return _runs().list(self, type=type, tags=tags, properties=properties,
                            include_children=include_children, where=where, order_by=order_by)

    @staticmethod
    def list(workspace: Workspace | None, experiment_name: str | None = None,
             view_type: str = "ActiveOnly", tags: Any = None) -> builtins.list[Experiment]:
        """The experiments that have runs in the workspace's collector."""
        names = _runs()._experiment_names(workspace)
        if experiment_name is not None:
            names = [n for n in names if n == experiment_name]
        return [Experiment(workspace, n, _skip_name_validation=True) for n in names]

    def tag(self, key: str, value: Any = None) -> None:
        self._tags[key] = "" if value is None else str(value)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.tag(key, value)

    def remove_tags(self, tags: builtins.list[str]) -> None:
        for key in tags:
            self._tags.pop(key, None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Experiment) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Experiment(Name: {self._name},\nWorkspace: {self._workspace.name})"
