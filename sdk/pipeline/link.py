"""A run's link to the pipeline: its sender, and how its data is read back.

- ``process_link()``: one per process, shared by every online run (one
  stream per SDK process). The agent is ``MLTRAIL_AGENT``, else the embedded
  local service (``mltrail.pipeline.embedded``). Reading waits until the collector
  acknowledged this process's records (``Agent.WaitForwarded``), then asks
  the collector the agent forwards to.
- ``offline_link(run_id)``: an offline run's own spool directory; reading
  decodes that spool, so ``get_metrics`` works with nothing running.

At interpreter exit a link flushes (``MLTRAIL_EXIT_TIMEOUT`` seconds, 30 by
default) and moves whatever is still undelivered to disk, saying where.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from mltrail.common.errors import MltrailError
from mltrail.pipeline.embedded import agent_socket_from_env, ensure_embedded
from mltrail.pipeline.offline import SpoolOverflow, SpoolSink, offline_dir, read_records
from mltrail.pipeline.run_watch import AgentRunWatch
from mltrail.pipeline.sender import AgentSink, Sender
from mltrail.proto import records_pb2
from mltrail.query.metrics_view import fold_metrics

_STATUS = {records_pb2.RUNNING: "Running", records_pb2.COMPLETED: "Completed",
           records_pb2.FAILED: "Failed", records_pb2.CANCELED: "Canceled"}


class Reader(Protocol):
    def get_metrics(self, run_id: str, name: str | None) -> dict[str, Any]: ...
    def get_details(self, run_id: str) -> dict[str, Any]: ...
    def child_run_ids(self, run_id: str) -> list[str]: ...
    def file_names(self, run_id: str) -> list[str]: ...
    def download_file(self, run_id: str, name: str, target: str | os.PathLike[str]) -> None: ...


class Link:
    """A sender plus the way back; ``where`` names where undelivered records wait."""

    def __init__(self, sender: Sender, where: str, agent: AgentSink | None = None,
                 spool_sink: SpoolSink | None = None, watch: AgentRunWatch | None = None
                 ) -> None:
        self.sender = sender
        self.where = where
        self.agent = agent
        self.spool_sink = spool_sink
        self.watch = watch
        self._closed = False
        atexit.register(self.close)

    def flush(self, timeout: float) -> int:
        """Wait for acknowledgement of everything queued; returns how many records are left."""
        printer = _ProgressPrinter(self.sender.sink.description)
        remaining = self.sender.flush(timeout, printer)
        if remaining:
            print(f"mltrail: {remaining} records are still on the way to "
                  f"{self.sender.sink.description} after {timeout:g} s; they stay in memory and "
                  f"are retried; if this process exits first they are written to {self.where} "
                  f"(upload them later with `mltrail sync {self.where}`)",
                  file=sys.stderr, flush=True)
        return remaining

    def reader(self, timeout: float | None = None) -> Reader:
        """Waits up to ``timeout`` (default MLTRAIL_READ_TIMEOUT, 10 s) for this process's
        records to be delivered, then reads what the collector (or the spool) has."""
        if timeout is None:
            timeout = read_timeout()
        if self.spool_sink is not None:
            self.flush(timeout)
            return SpoolReader(self.spool_sink)
        return self._online_reader(timeout)

    def _online_reader(self, timeout: float) -> Reader:
        from mltrail.query.client import QueryClient

        assert self.agent is not None  # an online link always has its agent
        deadline = time.monotonic() + timeout
        if not self.flush(timeout):  # it says itself what is still on the way
            forwarded = self.wait_collector(max(0.0, deadline - time.monotonic()))
            if forwarded is not None:
                print(f"mltrail: answering from what the collector has now: it acknowledged "
                      f"records of this process up to {forwarded} of {self.sender.acked_seq}; "
                      "the rest wait in the agent's spool and follow when it is reachable",
                      file=sys.stderr, flush=True)
        return CollectorReader(QueryClient(self.agent.info().collector))

    def wait_collector(self, timeout: float) -> int | None:
        """Wait until the collector has every record the agent acknowledged to us.

        Returns None when it has, else the last seq it acknowledged."""
        seq = self.sender.acked_seq
        if not seq or self.agent is None:
            return None
        printer = _ProgressPrinter("the collector")
        started = time.monotonic()
        while True:  # in steps of a second, to say after one that it waits
            left = timeout - (time.monotonic() - started)
            done = self.agent.wait_forwarded(self.sender.stream_id, seq, max(0.0, min(left, 1.0)))
            if done.done:
                return None
            if left <= 1.0:
                return int(done.forwarded_seq)
            printer(seq - int(done.forwarded_seq), time.monotonic() - started)

    def close(self) -> None:
        """At exit: wait up to MLTRAIL_EXIT_TIMEOUT, then move what is left to disk."""
        if self._closed:
            return
        self._closed = True
        timeout = float(os.environ.get("MLTRAIL_EXIT_TIMEOUT", "30"))
        self.sender.flush(timeout, _ProgressPrinter(self.sender.sink.description))
        remaining = self.sender.close(0)
        if self.watch is not None:
            self.watch.close()
        if remaining:
            print(f"mltrail: {remaining} records were not delivered before exit; they are kept "
                  f"in {self.where}; upload them with `mltrail sync {self.where}`",
                  file=sys.stderr, flush=True)


class _ProgressPrinter:
    """One line on stderr after a second of waiting, then every 5 seconds."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.next_at = 1.0

    def __call__(self, remaining: int, elapsed: float) -> None:
        if elapsed >= self.next_at:
            self.next_at = elapsed + 5.0
            print(f"mltrail: waiting for {remaining} records to reach {self.where} "
                  f"({elapsed:.0f} s)", file=sys.stderr, flush=True)


def read_timeout() -> float:
    """How long a read waits for this process's records (MLTRAIL_READ_TIMEOUT, seconds)."""
    text = os.environ.get("MLTRAIL_READ_TIMEOUT", "10")
    try:
        value = float(text)
    except ValueError:
        raise MltrailError(f"MLTRAIL_READ_TIMEOUT must be a number of seconds, not "
                           f"{text!r}") from None
    if value < 0:
        raise MltrailError(f"MLTRAIL_READ_TIMEOUT must be 0 or more, not {text!r}")
    return value


_links: dict[str, Link] = {}
_embedded_socket: list[str] = []  # found once per process
_link_lock = threading.Lock()


def process_link() -> Link:
    """This process's link to its agent (one per socket path), made on first use."""
    with _link_lock:
        socket_path = agent_socket_from_env() or _embedded()
        link = _links.get(socket_path)
        if link is None:
            agent, stream_id = AgentSink(socket_path), uuid.uuid4().hex
            overflow = SpoolOverflow(offline_dir(stream_id))
            sender = Sender(agent, overflow=overflow, stream_id=stream_id)
            watch = AgentRunWatch(socket_path)
            sender.on_run_acked = watch.update
            link = _links[socket_path] = Link(sender, str(overflow.directory), agent=agent,
                                              watch=watch)
        return link


def _embedded() -> str:
    if not _embedded_socket:
        _embedded_socket.append(ensure_embedded())
    return _embedded_socket[0]


def offline_link(run_id: str) -> Link:
    sink = SpoolSink(offline_dir(run_id))
    return Link(Sender(sink), str(sink.directory), spool_sink=sink)


class CollectorReader:
    """A run read back from the collector (after this process's records reached it)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get_metrics(self, run_id: str, name: str | None) -> dict[str, Any]:
        with self.client:
            return dict(self.client.get_metrics(run_id, name))

    def get_details(self, run_id: str) -> dict[str, Any]:
        with self.client:
            info = self.client.get_run(run_id)
        details: dict[str, Any] = {
            "runId": info.run_id, "target": "local", "status": info.status,
            "startTimeUtc": iso_time(info.start_time_unix_nano),
            "endTimeUtc": iso_time(info.end_time_unix_nano),
            "properties": dict(info.properties), "tags": dict(info.tags),
            "displayName": info.display_name, "inputDatasets": [], "outputDatasets": [],
            "logFiles": {},
        }
        if info.error is not None:
            details["error"] = error_dict(info.error)
        return details

    def child_run_ids(self, run_id: str) -> list[str]:
        with self.client:
            return list(self.client.get_run(run_id).child_run_ids)

    def file_names(self, run_id: str) -> list[str]:
        with self.client:
            return sorted(a.path for a in self.client.list_artifacts(run_id))

    def download_file(self, run_id: str, name: str, target: str | os.PathLike[str]) -> None:
        with self.client:
            self.client.download_artifact(run_id, name, target)


class SpoolReader:
    """An offline run read back from its own spool."""

    def __init__(self, sink: SpoolSink) -> None:
        self.sink = sink

    def _records(self, run_id: str) -> Iterable[records_pb2.Record]:
        return (r for r in read_records(self.sink.spool) if r.run_id == run_id)

    def get_metrics(self, run_id: str, name: str | None) -> dict[str, Any]:
        return fold_metrics(r for r in self._records(run_id)
                            if r.HasField("metric") and (name is None or r.metric.name == name))

    def get_details(self, run_id: str) -> dict[str, Any]:
        details: dict[str, Any] = {"runId": run_id, "target": "local", "status": "NotStarted",
                                   "startTimeUtc": None, "endTimeUtc": None, "properties": {},
                                   "tags": {}, "inputDatasets": [], "outputDatasets": [],
                                   "logFiles": {}}
        for record in self._records(run_id):
            if record.HasField("run_event"):
                _apply_event(details, record)
        return details

    def child_run_ids(self, run_id: str) -> list[str]:
        return [r.run_id for r in read_records(self.sink.spool)
                if r.HasField("run_event") and r.run_event.HasField("started")
                and r.run_event.started.parent_run_id == run_id]

    def file_names(self, run_id: str) -> list[str]:
        return sorted({r.artifact.path for r in self._records(run_id)
                       if r.HasField("artifact") and r.artifact.last})

    def download_file(self, run_id: str, name: str, target: str | os.PathLike[str]) -> None:
        parts = [r.artifact.data for r in self._records(run_id)
                 if r.HasField("artifact") and r.artifact.path == name]
        if not parts:
            raise MltrailError(f"run {run_id} has no file {name!r} in {self.sink.directory}")
        path = Path(target)
        if path.is_dir():
            path = path / Path(name).name
        path.write_bytes(b"".join(parts))


def _apply_event(details: dict[str, Any], record: records_pb2.Record) -> None:
    event = record.run_event
    kind = event.WhichOneof("event")
    if kind == "started":
        details.update(status="Running", startTimeUtc=iso_time(record.time_unix_nano),
                       displayName=event.started.display_name)
        details["tags"].update(event.started.tags)
        details["properties"].update(event.started.properties)
    elif kind == "tags":
        details["tags"].update(event.tags.tags)
    elif kind == "properties":
        details["properties"].update(event.properties.properties)
    elif kind == "ended":
        details.update(status=_STATUS.get(event.ended.status, "Unknown"),
                       endTimeUtc=iso_time(record.time_unix_nano))
        if event.ended.HasField("error"):
            details["error"] = error_dict(event.ended.error)


def iso_time(unix_nano: int) -> str | None:
    if not unix_nano:
        return None
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"


def error_dict(error: Any) -> dict[str, Any]:
    """Azure v1's ``error`` entry of ``get_details``."""
    return {"error": {"code": error.code, "message": error.message, "type": error.type,
                      "traceback": error.traceback, "exitCode": error.exit_code}}
