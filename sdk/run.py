"""``mltrail.Run``: the Azure ML v1 ``Run`` logging API.

A logging call checks its arguments (``mltrail.validation``) and appends a
tuple to the process's sender queue; it never waits on the network
(design.md, invariant 1). Files and images are ``RunFiles``
(``mltrail.run_files``); reading back is ``RunReads`` (``mltrail.run_reads``).

Two kinds of ``Run`` object, as in v1:

- one this process started (``start_logging``, ``child_run``): it knows its
  own state, and ending it records the end;
- any other (``Run(experiment, run_id)``, ``Run.get``, ``get_runs()``,
  ``get_children()``, ``get_context()`` in a script): its ``status``,
  ``tags``, ``display_name``... are read from the collector. Under a launcher
  (``mltrail run``, ``submit``) the launcher decides the run's end: the
  script's ``complete()`` only delivers what it logged, as v1's submitted
  runs do.

A terminal status is final: a later ``complete``/``fail``/``cancel`` warns,
naming the status the run has, and changes nothing (the collector keeps the
first end too). Logging to an ended run is allowed, as in v1.
"""

from __future__ import annotations

import atexit
import getpass
import itertools
import os
import re
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mltrail import validation as v
from mltrail.common.errors import MltrailError
from mltrail.experiment_base import Experiment, bind_run_type
from mltrail.pipeline.console import ConsoleCapture
from mltrail.pipeline.link import Link, offline_link, process_link
from mltrail.pipeline.values import CONSOLE, JSON, LIST, ROW, RUN_EVENT, SCALAR, TABLE
from mltrail.pipeline.workspace_agent import agent_socket
from mltrail.proto import records_pb2
from mltrail.query.details import (
    DESCRIPTION_TAG,
    DISPLAY_NAME_TAG,
    SUBMITTED_BY_PROPERTY,
    V1_RUN_TYPES,
    WORKSPACE_PROPERTY,
)
from mltrail.query.details import (
    run_type as v1_run_type,
)
from mltrail.query.types import TERMINAL_STATUSES
from mltrail.run_files import RunFiles
from mltrail.run_reads import RunReads
from mltrail.workspace import workspace_name

_SURROGATE = re.compile("[\ud800-\udfff]")
_STATUS_BY_CODE = {records_pb2.COMPLETED: "Completed", records_pb2.FAILED: "Failed",
                   records_pb2.CANCELED: "Canceled"}
OUTPUTS_DIR = "./outputs"
_context_run: Run | None = None
_context_lock = threading.Lock()


def new_run_id(experiment: str) -> str:
    return f"{experiment}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


CONSOLE_BACKLOG_BYTES = 64 * 1024 * 1024


class Run(RunFiles, RunReads):
    """One trial of an experiment: log to it, and read back what it logged."""

    def __init__(self, experiment: Experiment, run_id: str, outputs: str | None = None,
                 *, _link: Link | None = None, _parent: Run | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(experiment, Experiment):
            raise TypeError(f"experiment must be a mltrail.Experiment, got "
                            f"{type(experiment).__name__}")
        self._experiment = experiment
        self._id = v.check_name(run_id, "run_id")
        self._outputs = outputs
        self._capture: ConsoleCapture | None = None
        self._link = _link or process_link(agent_socket(experiment.workspace.connection))
        self._enqueue = self._link.sender.enqueue
        self._enqueue_scalar = self._link.sender.enqueue_scalar
        self._parent = _parent
        self._local = False  # state read from the collector (see the module docstring)
        self._managed = False  # a launcher ends this run
        self._display_name = run_id
        self._description: str | None = None
        self._status = "Running"
        self._run_type = ""
        self._tags: dict[str, str] = {}
        self._properties: dict[str, str] = {}
        self._image_counts: dict[str, itertools.count[int]] = {}
        self._child_count = itertools.count(1)

    # ---- identity -----------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def experiment(self) -> Experiment:
        return self._experiment

    @property
    def display_name(self) -> str:
        return self._display_name if self._local else self._info().display_name

    @display_name.setter
    def display_name(self, display_name: str) -> None:
        name = v.check_name(display_name, "display_name")
        self._display_name = name
        self._event(records_pb2.RunEvent(tags=records_pb2.TagsSet(tags={DISPLAY_NAME_TAG: name})))

    @property
    def name(self) -> str:
        """v1's older name for ``display_name``."""
        return self.display_name

    @property
    def description(self) -> str | None:
        return self._description if self._local else self._info().tags.get(DESCRIPTION_TAG)

    @description.setter
    def description(self, description: str) -> None:
        text = v.check_description(description)
        self._description = text
        self._event(records_pb2.RunEvent(tags=records_pb2.TagsSet(tags={DESCRIPTION_TAG: text})))

    @property
    def status(self) -> str:
        return self._status if self._local else self.get_status()

    @property
    def parent(self) -> Run | None:
        if self._parent is not None or self._local:
            return self._parent
        parent_id = self._info().parent_run_id
        return Run(self._experiment, parent_id, _link=self._link) if parent_id else None

    def __repr__(self) -> str:
        """v1's: experiment, id, type and status (read back for a run started elsewhere)."""
        kind, status = self._run_type, self._status
        if not self._local:
            try:
                info = self._info()
                kind, status = v1_run_type(info), info.status
            except MltrailError as exc:
                kind, status = "unknown", f"unknown ({exc})"
        return (f"Run(Experiment: {self._experiment.name},\nId: {self._id},\n"
                f"Type: {kind},\nStatus: {status})")

    @classmethod
    def _of(cls, experiment: Experiment, run_id: str, link: Link,
            parent: Run | None = None) -> Run:
        return cls(experiment, run_id, _link=link, _parent=parent)

    # ---- starting -----------------------------------------------------------

    @classmethod
    def _start(cls, experiment: Experiment, *, run_id: str | None = None,
               display_name: str | None = None, tags: Mapping[str, Any] | None = None,
               outputs: str | None = None, parent: Run | None = None,
               run_type: str = "interactive", link: Link | None = None,
               properties: Mapping[str, str] | None = None, registered: bool = False) -> Run:
        """Create a run: its first record is ``RunStarted`` (``registered``: by a submitter)."""
        checked_tags = v.check_tags(tags or {})
        name = v.check_name(display_name, "display_name") if display_name else None
        run = cls(experiment, run_id or new_run_id(experiment.name), outputs,
                  _link=link, _parent=parent)
        run._local = True
        run._display_name = name or run._id
        run._run_type = V1_RUN_TYPES.get(run_type, run_type)
        run._tags.update(checked_tags)
        run._properties.update(properties or {})
        if outputs:
            os.makedirs(outputs, exist_ok=True)  # v1 creates it at the start
        started = records_pb2.RunStarted(
            experiment=experiment.name, display_name=run._display_name, tags=checked_tags,
            parent_run_id=parent.id if parent else "", run_type=run_type,
            properties={**_origin(experiment, properties),
                        **(_environment_property(run._link) if parent is None else {})},
            registered=registered)
        run._event(records_pb2.RunEvent(started=started))
        atexit.register(_end_at_exit, run)  # after the link's own handler: runs before it
        return run

    @classmethod
    def get_context(cls, allow_offline: bool = True, used_for_context_manager: bool = False,
                    **kwargs: Any) -> Run:
        """The run of this process: the launcher's (``MLTRAIL_RUN_ID``), else an offline run."""
        global _context_run
        with _context_lock:
            if _context_run is not None:
                return _context_run
            run_id = os.environ.get("MLTRAIL_RUN_ID")
            experiment = Experiment(os.environ.get("MLTRAIL_EXPERIMENT") or "offline",
                                    _skip_name_validation=True)
            if run_id:
                _context_run = cls(experiment, run_id)
                _context_run._managed = True
            elif allow_offline:
                _context_run = _start_offline(cls, experiment)
            else:
                raise RuntimeError(
                    "Run.get_context(allow_offline=False): no run in this process; start the "
                    "script with `mltrail run -- python SCRIPT` (it sets MLTRAIL_RUN_ID and "
                    "MLTRAIL_AGENT), or allow an offline run")
            return _context_run

    def get_secret(self, name: str) -> str:
        """v1 reads the workspace's Key Vault; mltrail reads the environment variable ``name``."""
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"no secret {name!r}: mltrail reads secrets from environment "
                             f"variables; set {name} for the script (nothing else was read)")
        return value

    def get_secrets(self, secrets: list[str]) -> dict[str, str | None]:
        return {name: os.environ.get(name) for name in secrets}

    def child_run(self, name: str | None = None, run_id: str | None = None,
                  outputs: str | None = None) -> Run:
        """A run under this one, on the same stream (order with the parent holds)."""
        if run_id is None:
            run_id = f"{self._id}_{next(self._child_count)}"
        child_id = v.check_name(run_id, "run_id")
        return Run._start(self._experiment, run_id=child_id, display_name=name, outputs=outputs,
                          parent=self, run_type="child", link=self._link)

    def create_children(self, count: int | None = None, tag_key: str | None = None,
                        tag_values: list[Any] | None = None) -> list[Run]:
        """``count`` children, or one per value of ``tag_values`` tagged ``tag_key`` (v1)."""
        if (count is None) == (tag_values is None):
            raise ValueError("create_children takes either count or tag_key and tag_values")
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"count must be a non-negative int, got {count!r}")
            tag_key, tag_values = "azureml.batch_child_number", list(range(count))
        elif not tag_key:
            raise ValueError("create_children with tag_values needs tag_key")
        values = list(tag_values or [])
        if len(values) > 100:
            raise ValueError("create_children can not create more than 100 runs")
        children = []
        for value in values:
            child = self.child_run()
            child.set_tags({str(tag_key): value})
            children.append(child)
        return children

    def submit_child(self, config: Any, tags: Mapping[str, Any] | None = None,
                     **kwargs: Any) -> Run:
        """Submit ``config`` (a ScriptRunConfig) as a child of this run."""
        submit_to = getattr(config, "submit_to", None)
        if not callable(submit_to):
            raise TypeError(f"submit_child takes a ScriptRunConfig, got {type(config).__name__}")
        child: Run = submit_to(self._experiment, dict(tags or {}), parent=self, **kwargs)
        return child

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.complete()
        elif isinstance(exc, KeyboardInterrupt):
            self.cancel()
        else:
            self.fail(exc)

    # ---- metrics ------------------------------------------------------------

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        """A scalar: a number, bool or string (numpy scalars accepted)."""
        shared = v._valid_names.get(name)  # the name checked before, as first given
        if shared is None:
            v.check_name(name)
        if type(value) is not float:
            value = v.check_value(value)
        if step is not None:
            step = v.check_step(step)
        if shared is not None and not description and type(value) is not str:
            # a number under a known name: the sender counts it at a fixed size
            self._enqueue_scalar((SCALAR, self._id, time.time_ns(), shared, "", value, step))
            return
        if description:
            description = v.check_description(description)
        self._enqueue((SCALAR, self._id, time.time_ns(), name, description, value, step))

    def log_list(self, name: str, value: Any, description: str = "") -> None:
        values = v.check_list(value)
        self._enqueue((LIST, self._id, time.time_ns(), v.check_name(name),
                       v.check_description(description), values))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """One row of a table metric; each keyword is a column."""
        cells = v.check_row(kwargs)
        self._enqueue((ROW, self._id, time.time_ns(), v.check_name(name),
                       v.check_description(description), cells))

    def log_table(self, name: str, value: Mapping[str, Any], description: str = "") -> None:
        """A table: a dict of column name -> list of values."""
        columns = v.check_table(value)
        self._enqueue((TABLE, self._id, time.time_ns(), v.check_name(name),
                       v.check_description(description), columns))

    def log_confusion_matrix(self, name: str, value: Any, description: str = "") -> None:
        self._log_json(name, value, description, "confusion_matrix")

    def log_accuracy_table(self, name: str, value: Any, description: str = "") -> None:
        self._log_json(name, value, description, "accuracy_table")

    def log_residuals(self, name: str, value: Any, description: str = "") -> None:
        self._log_json(name, value, description, "residuals")

    def log_predictions(self, name: str, value: Any, description: str = "") -> None:
        self._log_json(name, value, description, "predictions")

    def _log_json(self, name: str, value: Any, description: str, schema_type: str) -> None:
        version, text = v.check_json_metric(value, schema_type)
        self._enqueue((JSON, self._id, time.time_ns(), v.check_name(name),
                       v.check_description(description), schema_type, version, text))

    # ---- tags, properties ---------------------------------------------------

    def tag(self, key: str, value: Any = None) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any] | str) -> None:
        """A dict of tags, or one tag name (v1: its value is empty)."""
        checked = v.check_tags({tags: None} if isinstance(tags, str) else tags)
        self._tags.update(checked)
        self._event(records_pb2.RunEvent(tags=records_pb2.TagsSet(tags=checked)))

    def remove_tags(self, tags: list[str] | str) -> None:
        keys = [tags] if isinstance(tags, str) else [v.check_name(k, "tag") for k in tags]
        for key in keys:
            self._tags.pop(key, None)
        self._event(records_pb2.RunEvent(tags=records_pb2.TagsSet(removed=keys)))

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Add-only, as in Azure v1: a key this process set already raises; one set
        elsewhere keeps its first value (the collector's rule). No read from the
        collector: this is a logging call, and a logging call never waits on the network."""
        checked = v.check_tags(properties, "properties")
        taken = sorted(k for k in checked if k in self._properties)
        if taken:
            raise ValueError(f"properties are add-only; already set on run {self._id}: {taken}")
        self._properties.update(checked)
        self._event(records_pb2.RunEvent(properties=records_pb2.PropertiesAdded(
            properties=checked)))

    # ---- ending -------------------------------------------------------------

    def start(self) -> None:
        """v1: mark a run started by another actor as running (its start record again)."""
        self._event(records_pb2.RunEvent(started=records_pb2.RunStarted()))

    def complete(self, _set_status: bool = True) -> None:
        """Mark the run completed and wait until its records are delivered."""
        self._end(records_pb2.COMPLETED, set_status=_set_status)

    def fail(self, error_details: Any = None, error_code: str | None = None,
             _set_status: bool = True) -> None:
        """Mark the run failed; ``error_details`` is a message or an exception."""
        self._end(records_pb2.FAILED, _error_details(error_details, error_code),
                  set_status=_set_status)

    def cancel(self) -> None:
        self._end(records_pb2.CANCELED)

    def _end(self, status: int, error: records_pb2.ErrorDetails | None = None,
             set_status: bool = True, flush: bool = True) -> None:
        if self._capture is not None:
            self._capture.stop()
            self._capture = None
        if self._managed or not set_status:
            if flush:
                self.flush()  # the launcher records the end (v1's submitted runs)
            return
        have = self._status if self._local else self._status_or_unknown()
        if have in TERMINAL_STATUSES:
            warnings.warn(f"run {self._id} is already {have}; its status stays {have} "
                          f"({_STATUS_BY_CODE[status].lower()} is not recorded)", stacklevel=3)
            return
        if self._outputs and os.path.isdir(self._outputs):
            self.upload_folder("outputs", self._outputs)
        self._status = _STATUS_BY_CODE[status]
        self._event(records_pb2.RunEvent(ended=records_pb2.RunEnded(status=status, error=error)))
        if flush:
            self.flush()

    def _status_or_unknown(self) -> str:
        try:
            return self.get_status()
        except MltrailError:  # the collector cannot say: record the end; it keeps the first
            return "Unknown"

    def _record_console(self, stream: str, data: bytes, partial: bool, time_ns: int) -> None:
        """Console lines of this run (``console.Emit``): raw bytes, many lines at once."""
        chunk = records_pb2.LogChunk(stream=stream, data=data, partial_tail=partial)
        self._enqueue((CONSOLE, self._id, time_ns, chunk))

    def _record_console_waiting(self, stream: str, data: bytes, partial: bool,
                                time_ns: int, line_times: Sequence[int] | None = None) -> None:
        """``_record_console`` for `mltrail run`: waits while CONSOLE_BACKLOG_BYTES
        of console output wait for the sender, so a flood slows the command
        instead of filling memory. ``line_times``: one per line, when they differ."""
        chunk = records_pb2.LogChunk(stream=stream, data=data, partial_tail=partial,
                                     line_times_unix_nano=line_times)
        sender = self._link.sender  # a quarter of its memory bound at most
        sender.enqueue_waiting((CONSOLE, self._id, time_ns, chunk), len(data),
                               min(CONSOLE_BACKLOG_BYTES, sender.memory_limit // 4))

    def _capture_console(self) -> None:
        self._capture = ConsoleCapture(self._record_console).start()

    def flush(self, timeout_seconds: float = 300) -> None:
        """Wait until every record logged so far is acknowledged by the agent.

        Prints a progress line after a second; at the timeout, prints how many
        records are still on the way and where they are kept, and returns.
        """
        self._link.flush(timeout_seconds)

    def _event(self, event: records_pb2.RunEvent) -> None:
        self._enqueue((RUN_EVENT, self._id, time.time_ns(), event))

    def get_support_bundle(self, path: str | os.PathLike[str], *, with_artifacts: bool = False,
                           max_bytes: int | None = None, redact: Iterable[str] = ()) -> Path:
        """One zip that lets someone else debug this run (README "Support bundles"),
        built by the collector once this process's records reached it."""
        from mltrail.bundle.fetch import save_run_bundle

        return save_run_bundle(self._reader(), self._id, path,
                               with_artifacts=with_artifacts, max_bytes=max_bytes,
                               redact=redact)


bind_run_type(Run)


def _environment_property(link: Link) -> dict[str, str]:
    """What the SDK sees at a top-level run's start, for its support bundle."""
    from mltrail.bundle import environment

    if not environment.enabled():
        return {}
    agent = link.agent
    info = (lambda: agent.info(timeout=2.0)) if agent is not None else None
    return {environment.PROPERTY: environment.to_property(environment.capture(info))}


def get_run(experiment: Experiment, run_id: str, rehydrate: bool = True,
            clean_up: bool = True) -> Run:
    """v1's ``azureml.core.run.get_run``: the run, read from the collector."""
    return Run.get_by_id(experiment, run_id)


def _origin(experiment: Experiment, properties: Mapping[str, str] | None) -> dict[str, str]:
    """The properties a run starts with: the workspace and who started it (v1 records both)."""
    origin = {WORKSPACE_PROPERTY: workspace_name(experiment.workspace),
              SUBMITTED_BY_PROPERTY: _user()}
    return {**origin, **(properties or {})}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return str(os.getuid())


def _error_details(error: Any, code: str | None) -> records_pb2.ErrorDetails:
    if isinstance(error, BaseException):
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return records_pb2.ErrorDetails(code=_text(code or "UserError"), message=_text(error),
                                        type=type(error).__name__, traceback=_text(trace))
    return records_pb2.ErrorDetails(code=_text(code or "UserError"),
                                    message="" if error is None else _text(error))


def _text(value: Any) -> str:
    """Error text as protobuf can encode it: a lone surrogate (a file name from
    os.fsdecode) becomes U+FFFD, so failing a run never fails itself."""
    text = str(value)
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _start_offline(cls: type[Run], experiment: Experiment) -> Run:
    run_id = "OfflineRun_" + uuid.uuid4().hex
    run = cls._start(experiment, run_id=run_id, run_type="offline", link=offline_link(run_id))
    print(f"mltrail: no launcher found; logging offline to {run._link.where}. Upload it later "
          f"with `mltrail sync {run._link.where}`", file=sys.stderr)
    return run


def _end_at_exit(run: Run) -> None:
    """A run this process started and did not end is ended at interpreter exit:
    completed, or failed with the exception Python died of."""
    if run.status != "Running":
        return
    error = getattr(sys, "last_value", None)  # the link's exit handler flushes, with its timeout
    if error is not None:
        run._end(records_pb2.FAILED, _error_details(error, None), flush=False)
    else:
        run._end(records_pb2.COMPLETED, flush=False)
