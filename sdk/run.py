"""``mltrail.Run``: the Azure ML v1 ``Run`` logging API.

A logging call checks its arguments (``mltrail.validation``) and appends a
tuple to the process's sender queue; it never waits on the network
(design.md, invariant 1). The read side (``get_metrics``, ``get_details``,
...) first waits until this process's records reached the collector, then
asks it (``Link`` in ``mltrail.pipeline.link`` hides whether that is through the
agent or, offline, the run's own spool).
"""

from __future__ import annotations

import atexit
import hashlib
import io
import itertools
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mltrail import validation as v
from mltrail.pipeline.console import ConsoleCapture
from mltrail.pipeline.link import Link, offline_link, process_link
from mltrail.pipeline.values import (
    ARTIFACT,
    CONSOLE,
    IMAGE,
    JSON,
    LIST,
    ROW,
    RUN_EVENT,
    SCALAR,
    TABLE,
)
from mltrail.proto import records_pb2

if TYPE_CHECKING:
    from mltrail.experiment import Experiment

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_SURROGATE = re.compile("[\ud800-\udfff]")
_STATUS_BY_CODE = {records_pb2.COMPLETED: "Completed", records_pb2.FAILED: "Failed",
                   records_pb2.CANCELED: "Canceled"}
_context_run: Run | None = None
_context_lock = threading.Lock()


def new_run_id(experiment: str) -> str:
    return f"{experiment}_{int(time.time())}_{uuid.uuid4().hex[:8]}"


CONSOLE_BACKLOG_BYTES = 64 * 1024 * 1024


class Run:
    """One trial of an experiment: log to it, and read back what it logged."""

    def __init__(self, experiment: Experiment, run_id: str, outputs: str | None = None,
                 *, _link: Link | None = None, _parent: Run | None = None) -> None:
        self._experiment = experiment
        self._id = v.check_name(run_id, "run_id")
        self._outputs = outputs
        self._capture: ConsoleCapture | None = None
        self._link = _link or process_link()
        self._enqueue = self._link.sender.enqueue
        self._parent = _parent
        self._display_name = run_id
        self._status = "Running"
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
        return self._display_name

    @property
    def status(self) -> str:
        return self._status

    @property
    def parent(self) -> Run | None:
        return self._parent

    def __repr__(self) -> str:
        return (f"Run(experiment={self._experiment.name!r}, id={self._id!r}, "
                f"status={self._status!r})")

    # ---- starting -----------------------------------------------------------

    @classmethod
    def _start(cls, experiment: Experiment, *, run_id: str | None = None,
               display_name: str | None = None, tags: Mapping[str, Any] | None = None,
               outputs: str | None = None, parent: Run | None = None,
               run_type: str = "interactive", link: Link | None = None) -> Run:
        """Create a run: its first record is ``RunStarted``."""
        checked_tags = v.check_tags(tags or {})
        name = v.check_name(display_name, "display_name") if display_name else None
        run = cls(experiment, run_id or new_run_id(experiment.name), outputs,
                  _link=link, _parent=parent)
        run._display_name = name or run._id
        run._tags.update(checked_tags)
        started = records_pb2.RunStarted(
            experiment=experiment.name, display_name=run._display_name, tags=checked_tags,
            parent_run_id=parent.id if parent else "", run_type=run_type)
        run._event(records_pb2.RunEvent(started=started))
        atexit.register(_end_at_exit, run)  # after the link's own handler: runs before it
        return run

    @classmethod
    def get_context(cls, allow_offline: bool = True, **kwargs: Any) -> Run:
        """The run of this process: the launcher's (``MLTRAIL_RUN_ID``), else an offline run."""
        global _context_run
        from mltrail.experiment import Experiment

        with _context_lock:
            if _context_run is not None:
                return _context_run
            run_id = os.environ.get("MLTRAIL_RUN_ID")
            experiment = Experiment(os.environ.get("MLTRAIL_EXPERIMENT") or "offline")
            if run_id:
                _context_run = cls(experiment, run_id)
            elif allow_offline:
                _context_run = _start_offline(cls, experiment)
            else:
                raise RuntimeError(
                    "Run.get_context(allow_offline=False): no run in this process; start the "
                    "script with `mltrail run -- python SCRIPT` (it sets MLTRAIL_RUN_ID and "
                    "MLTRAIL_AGENT), or allow an offline run")
            return _context_run

    def child_run(self, name: str | None = None, run_id: str | None = None,
                  outputs: str | None = None) -> Run:
        """A run under this one, on the same stream (order with the parent holds)."""
        if run_id is None:
            run_id = f"{self._id}_{next(self._child_count)}"
        child_id = v.check_name(run_id, "run_id")
        return Run._start(self._experiment, run_id=child_id, display_name=name, outputs=outputs,
                          parent=self, run_type="child", link=self._link)

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
        if name not in v._valid_names:
            v.check_name(name)
        if type(value) is not float:
            value = v.check_value(value)
        if description:
            description = v.check_description(description)
        if step is not None:
            step = v.check_step(step)
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

    def log_image(self, name: str, path: str | os.PathLike[str] | None = None, plot: Any = None,
                  description: str = "") -> None:
        """A PNG/JPEG file (``path``) or a matplotlib figure (``plot``): exactly one."""
        v.check_name(name)
        description = v.check_description(description)
        data, ext = _image_bytes(path, plot)
        counter = self._image_counts.setdefault(name, itertools.count(1))
        artifact = f"images/{name.replace('/', '_')}/{next(counter)}.{ext}"
        content_type = "image/png" if ext == "png" else "image/jpeg"
        self._upload_stream(v.check_artifact_name(artifact), io.BytesIO(data), content_type)
        self._enqueue((IMAGE, self._id, time.time_ns(), name, description, artifact))

    # ---- files --------------------------------------------------------------

    def upload_file(self, name: str, path_or_stream: str | os.PathLike[str] | IO[bytes]) -> None:
        """Upload a file (or a binary stream) as artifact ``name``, in 1 MiB chunks."""
        artifact = v.check_artifact_name(name)
        if isinstance(path_or_stream, str | os.PathLike):
            if not os.path.isfile(path_or_stream):
                raise ValueError(f"path_or_stream {os.fspath(path_or_stream)!r} is not a file")
            with open(path_or_stream, "rb") as fh:
                self._upload_stream(artifact, fh)
        elif hasattr(path_or_stream, "read"):
            self._upload_stream(artifact, path_or_stream)
        else:
            raise TypeError("path_or_stream must be a path or a binary stream, "
                            f"got {type(path_or_stream).__name__}")

    def upload_folder(self, name: str, path: str | os.PathLike[str]) -> None:
        """Upload every file under ``path`` as ``name/<relative path>``."""
        prefix = v.check_artifact_name(name)
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"path {os.fspath(path)!r} is not a directory")
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            self.upload_file(f"{prefix}/{file.relative_to(root).as_posix()}", file)

    def _upload_stream(self, artifact: str, stream: IO[bytes], content_type: str = "") -> None:
        """Chunks of 1 MiB; the last one carries the file's sha256 and size."""
        digest, offset, chunk = hashlib.sha256(), 0, stream.read(v.UPLOAD_CHUNK_BYTES)
        if isinstance(chunk, str):
            raise TypeError("path_or_stream must be opened in binary mode ('rb')")
        while True:
            following = stream.read(v.UPLOAD_CHUNK_BYTES) if chunk else b""
            digest.update(chunk)
            piece = records_pb2.ArtifactChunk(path=artifact, offset=offset, data=chunk,
                                              content_type=content_type)
            if not following:
                piece.last, piece.sha256, piece.size = True, digest.hexdigest(), offset + len(chunk)
            self._enqueue((ARTIFACT, self._id, time.time_ns(), piece))
            if piece.last:
                return
            offset += len(chunk)
            chunk = following

    # ---- tags, properties ---------------------------------------------------

    def tag(self, key: str, value: Any = None) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        checked = v.check_tags(tags)
        self._tags.update(checked)
        self._event(records_pb2.RunEvent(tags=records_pb2.TagsSet(tags=checked)))

    def get_tags(self) -> dict[str, str]:
        return dict(self._tags)

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Add-only, as in Azure v1: a key already set raises."""
        checked = v.check_tags(properties, "properties")
        taken = sorted(k for k in checked if k in self._properties)
        if taken:
            raise ValueError(f"properties are add-only; already set on run {self._id}: {taken}")
        self._properties.update(checked)
        self._event(records_pb2.RunEvent(properties=records_pb2.PropertiesAdded(
            properties=checked)))

    # ---- ending -------------------------------------------------------------

    def complete(self, _set_status: bool = True) -> None:
        """Mark the run completed and wait until its records are delivered."""
        if self._outputs and os.path.isdir(self._outputs):
            self.upload_folder("outputs", self._outputs)
        self._end(records_pb2.COMPLETED)

    def fail(self, error_details: Any = None, error_code: str | None = None,
             _set_status: bool = True) -> None:
        """Mark the run failed; ``error_details`` is a message or an exception."""
        self._end(records_pb2.FAILED, _error_details(error_details, error_code))

    def cancel(self) -> None:
        self._end(records_pb2.CANCELED)

    def _end(self, status: int, error: records_pb2.ErrorDetails | None = None,
             flush: bool = True) -> None:
        if self._capture is not None:
            self._capture.stop()
            self._capture = None
        self._status = _STATUS_BY_CODE[status]
        self._event(records_pb2.RunEvent(ended=records_pb2.RunEnded(status=status, error=error)))
        if flush:
            self.flush()

    def _record_console(self, stream: str, data: bytes, partial: bool, time_ns: int) -> None:
        """Console lines of this run (``console.Emit``): raw bytes, many lines at once."""
        chunk = records_pb2.LogChunk(stream=stream, data=data, partial_tail=partial)
        self._enqueue((CONSOLE, self._id, time_ns, chunk))

    def _record_console_waiting(self, stream: str, data: bytes, partial: bool,
                                time_ns: int) -> None:
        """``_record_console`` for `mltrail run`: waits while CONSOLE_BACKLOG_BYTES
        of console output wait for the sender, so a flood slows the command
        instead of filling memory."""
        chunk = records_pb2.LogChunk(stream=stream, data=data, partial_tail=partial)
        self._link.sender.enqueue_waiting((CONSOLE, self._id, time_ns, chunk), len(data),
                                          CONSOLE_BACKLOG_BYTES)

    def _capture_console(self) -> None:
        self._capture = ConsoleCapture(self._record_console).start()

    def wait_for_completion(self, show_output: bool = False, wait_post_processing: bool = False,
                            raise_on_error: bool = True, timeout: float | None = None
                            ) -> dict[str, Any]:
        """Wait for the run to end and return its details.

        ``show_output=True`` prints the run's console live from the collector's
        follow stream. A failed or canceled run raises ``RunFailed`` naming its
        error (unless ``raise_on_error=False``); ``timeout`` (seconds) raises
        ``WaitTimeout`` and leaves the run going."""
        from mltrail.script_run import wait_for_completion

        return wait_for_completion(self, show_output, timeout, raise_on_error)

    def flush(self, timeout_seconds: float = 300) -> None:
        """Wait until every record logged so far is acknowledged by the agent.

        Prints a progress line after a second; at the timeout, prints how many
        records are still on the way and where they are kept, and returns.
        """
        self._link.flush(timeout_seconds)

    def _event(self, event: records_pb2.RunEvent) -> None:
        self._enqueue((RUN_EVENT, self._id, time.time_ns(), event))

    # ---- reading back --------------------------------------------------------

    def get_metrics(self, name: str | None = None, recursive: bool = False,
                    run_type: str | None = None, populate: bool = False,
                    timeout_seconds: float | None = None) -> dict[str, Any]:
        """Azure v1's shape: name -> value (or list); ``recursive``: run id -> that dict.

        Waits up to ``timeout_seconds`` (default ``MLTRAIL_READ_TIMEOUT``, 10 s) for
        this process's records to reach the collector, then answers from what it has."""
        if not recursive:
            return self._link.reader(timeout_seconds).get_metrics(self._id, name)
        return {run.id: run.get_metrics(name, timeout_seconds=timeout_seconds)
                for run in self._walk()}

    def _walk(self) -> Iterator[Run]:
        yield self
        for child in self.get_children():
            yield from child._walk()

    def get_details(self) -> dict[str, Any]:
        return self._link.reader().get_details(self._id)

    def get_status(self) -> str:
        return str(self.get_details()["status"])

    def get_children(self, recursive: bool = False) -> Iterator[Run]:
        for child_id in self._link.reader().child_run_ids(self._id):
            child = Run(self._experiment, child_id, _link=self._link, _parent=self)
            yield child
            if recursive:
                yield from child.get_children(recursive=True)

    def get_file_names(self) -> list[str]:
        return self._link.reader().file_names(self._id)

    def download_file(self, name: str, output_file_path: str | os.PathLike[str] | None = None,
                      _validate_checksum: bool = False) -> None:
        target = output_file_path if output_file_path is not None else Path(name).name
        self._link.reader().download_file(self._id, name, target)


def _image_bytes(path: Any, plot: Any) -> tuple[bytes, str]:
    if (path is None) == (plot is None):
        raise ValueError("log_image takes exactly one of path (a PNG or JPEG file) or plot "
                         "(a matplotlib figure)")
    if plot is not None:
        if not callable(getattr(plot, "savefig", None)):
            raise TypeError(f"plot must be a matplotlib figure (or pyplot), got "
                            f"{type(plot).__name__}")
        buffer = io.BytesIO()
        plot.savefig(buffer, format="png")
        return buffer.getvalue(), "png"
    if not os.path.isfile(path):
        raise ValueError(f"path {os.fspath(path)!r} is not a file")
    data = Path(path).read_bytes()
    if data.startswith(_PNG):
        return data, "png"
    if data.startswith(_JPEG):
        return data, "jpg"
    raise ValueError(f"path {os.fspath(path)!r} is not a PNG or JPEG image")


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
