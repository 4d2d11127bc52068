"""Reading runs back as Azure ML v1 does: details, metrics, children, lists.

Every read first waits until this process's records reached the collector
(``Link.reader``), so a read right after a log call sees it. Reads go to the
collector the agent forwards to, or the experiment's workspace's
``collector`` when its config names one.
"""

from __future__ import annotations

import builtins
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltrail.environment import Environment
from mltrail.experiment_base import Experiment
from mltrail.pipeline.link import Reader, get_details, process_link
from mltrail.pipeline.workspace_agent import agent_socket
from mltrail.query.details import run_type, user_properties, user_tags
from mltrail.query.types import RunInfo
from mltrail.query.wait import wait_for_completion

if TYPE_CHECKING:
    from mltrail.pipeline.link import Link
    from mltrail.run import Run
    from mltrail.workspace import Workspace


class RunReads:
    """The read calls of ``Run`` (a mixin: ``Run`` provides the link and the id)."""

    _id: str
    _link: Link
    _local: bool
    _experiment: Experiment
    _tags: dict[str, str]
    _properties: dict[str, str]

    @classmethod
    def _of(cls, experiment: Experiment, run_id: str, link: Link,
            parent: Run | None = None) -> Run:
        """A Run object for a run read back (``Run`` defines it)."""
        raise NotImplementedError

    def _reader(self, timeout: float | None = None) -> Reader:
        """Waits up to ``timeout`` (default ``MLTRAIL_READ_TIMEOUT``) for this process's
        records to reach the collector, then reads what it has."""
        return reader_of(self._link, self._experiment.workspace, timeout)

    def _info(self) -> RunInfo:
        return self._reader().run_info(self._id)

    def get_status(self) -> str:
        return self._info().status

    def get_details(self) -> dict[str, Any]:
        return get_details(self._reader(), self._id)

    def get_detailed_status(self) -> dict[str, Any]:
        """v1's status with details; mltrail has no queueing states to detail."""
        return {"status": self.get_status(), "details": None}

    def get_details_with_logs(self) -> dict[str, Any]:
        """``get_details()`` with each of ``logFiles`` holding the log's text."""
        reader = self._reader()
        details = get_details(reader, self._id)
        details["logFiles"] = {name: _log_text(reader, self._id, name)
                               for name in details["logFiles"]}
        return details

    def get_all_logs(self, destination: str | os.PathLike[str] | None = None) -> list[str]:
        """Write every log of ``logFiles`` under ``destination`` (default ``./<run id>``)."""
        root = Path(destination if destination is not None else self._id)
        if root.exists() and not root.is_dir():
            raise ValueError(f"{os.fspath(root)} exists and is not a directory")
        written = []
        for name, text in self.get_details_with_logs()["logFiles"].items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(str(target))
        return written

    @property
    def type(self) -> str:
        return run_type(self._info())

    @property
    def number(self) -> int:
        """The run's place in its experiment, oldest first (v1: monotonically increasing)."""
        runs = self._reader().list_runs(self._experiment.name)
        order = sorted(runs, key=lambda r: (r.start_time_unix_nano, r.run_id))
        ids = [r.run_id for r in order]
        return ids.index(self._id) + 1 if self._id in ids else 0

    @property
    def tags(self) -> dict[str, str]:
        return self.get_tags()

    @property
    def properties(self) -> dict[str, str]:
        return self.get_properties()

    def get_tags(self) -> dict[str, str]:
        return dict(self._tags) if self._local else user_tags(self._info().tags)

    def get_properties(self) -> dict[str, str]:
        if self._local:
            return user_properties(self._properties)
        return user_properties(self._info().properties)

    def get_metrics(self, name: str | None = None, recursive: bool = False,
                    run_type: str | None = None, populate: bool = False,
                    timeout_seconds: float | None = None) -> dict[str, Any]:
        """Azure v1's shape: name -> value (or list); ``recursive``: run id -> that dict.

        Waits up to ``timeout_seconds`` (default ``MLTRAIL_READ_TIMEOUT``, 10 s) for
        this process's records to reach the collector, then answers from what it has."""
        if not recursive:
            return self._reader(timeout_seconds).get_metrics(self._id, name)
        return {run._id: run.get_metrics(name, timeout_seconds=timeout_seconds)
                for run in self._walk()}

    def _walk(self) -> Iterator[RunReads]:
        yield self
        for child in self.get_children():
            yield from child._walk()

    def get_children(self, recursive: bool = False, tags: str | Mapping[str, Any] | None = None,
                     properties: str | Mapping[str, Any] | None = None,
                     type: str | None = None, status: str | None = None) -> Iterator[Run]:
        """The children (``recursive``: and theirs), matching every filter given."""
        reader = self._reader()
        for child_id in reader.child_run_ids(self._id):
            info = reader.run_info(child_id)
            child = self._of(self._experiment, child_id, self._link, parent=self)
            if matches(info, type, tags, properties, status):
                yield child
            if recursive:
                yield from child.get_children(True, tags, properties, type, status)

    def get_environment(self) -> Any:
        definition = self.get_details()["runDefinition"].get("environment") or {}
        return Environment._from_dict(definition) if definition else None

    def wait_for_completion(self, show_output: bool = False, wait_post_processing: bool = False,
                            raise_on_error: bool = True, timeout: float | None = None
                            ) -> dict[str, Any]:
        """Wait for the run to end and return its details.

        ``show_output=True`` prints the run's console live from the collector's
        follow stream. A failed run raises ``RunFailed`` naming its error
        (unless ``raise_on_error=False``); ``timeout`` (seconds) raises
        ``WaitTimeout`` and leaves the run going."""
        return wait_for_completion(self, show_output, timeout, raise_on_error)

    @classmethod
    def get(cls, workspace: Workspace, run_id: str) -> Run:
        """v1's ``Run.get(workspace, run_id)``: the run, whatever its experiment."""
        link = process_link(agent_socket(workspace.connection))
        info = reader_of(link, workspace).run_info(run_id)
        experiment = Experiment(workspace, info.experiment or "default",
                                _skip_name_validation=True)
        return cls._of(experiment, info.run_id, link)

    @classmethod
    def get_by_id(cls, experiment: Experiment, run_id: str) -> Run:
        link = process_link(agent_socket(experiment.workspace.connection))
        run = cls._of(experiment, run_id, link)
        run._info()  # raises RunNotFound for an unknown id, as v1's get_run does
        return run

    @classmethod
    def list(cls, experiment: Experiment, type: str | None = None,
             tags: str | Mapping[str, Any] | None = None,
             properties: str | Mapping[str, Any] | None = None, status: str | None = None,
             include_children: bool = False, _rehydrate_runs: bool = True,
             where: Sequence[str] = (), order_by: str = "") -> Iterator[Run]:
        """The experiment's runs, newest first, matching every filter given; ``where``
        (``"accuracy > 0.9"``, ``"tags.team = vision"``) and ``order_by``
        (``"-accuracy"``) as ``mltrail runs --where/--sort`` (mltrail's own)."""
        link = process_link(agent_socket(experiment.workspace.connection))
        reader = reader_of(link, experiment.workspace)
        for info in reader.list_runs(experiment.name, where, order_by):
            if not include_children and info.parent_run_id:
                continue
            if matches(info, type, tags, properties, status):
                yield cls._of(experiment, info.run_id, link)

    @staticmethod
    def _experiment_names(workspace: Workspace | None) -> builtins.list[str]:
        connection = workspace.connection if workspace is not None else None
        link = process_link(agent_socket(connection))
        reader = reader_of(link, workspace)
        return sorted({info.experiment for info in reader.list_runs("") if info.experiment})


def reader_of(link: Link, workspace: Workspace | None, timeout: float | None = None
              ) -> Reader:
    """A reader of the workspace's collector with its credentials (none: the defaults),
    after up to ``timeout`` (default ``MLTRAIL_READ_TIMEOUT``) for this process's records."""
    if workspace is None:
        return link.reader(timeout)
    connection = workspace.connection
    return link.reader(timeout, collector=connection.collector or None,
                       security=connection.security(workspace.name))


def matches(info: RunInfo, type: str | None, tags: str | Mapping[str, Any] | None,
            properties: str | Mapping[str, Any] | None, status: str | None) -> bool:
    """v1's filters: a tag or property name (present), or a dict of name: value."""
    if type is not None and run_type(info) != type:
        return False
    if status is not None and info.status.lower() != str(status).lower():
        return False
    return _has(info.tags, tags) and _has({**info.properties, **info.system_properties},
                                          properties)


def _has(have: Mapping[str, str], wanted: str | Mapping[str, Any] | None) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return wanted in have
    return all(k in have and (v is None or have[k] == str(v)) for k, v in wanted.items())


def _log_text(reader: Reader, run_id: str, name: str) -> str:
    """A ``logFiles`` entry's text: a console stream, or an uploaded file under logs/."""
    if name.startswith("user_logs/"):
        return reader.log_text(run_id, name.removeprefix("user_logs/").removesuffix(".txt"))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "log"
        reader.download_file(run_id, name, target)
        return target.read_text(encoding="utf-8", errors="replace")
