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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from mltrail.common.errors import MltrailError
from mltrail.pipeline.embedded import agent_socket_from_env, ensure_embedded
from mltrail.pipeline.offline import SpoolOverflow, SpoolSink, offline_dir, read_records
from mltrail.pipeline.run_watch import AgentRunWatch
from mltrail.pipeline.sender import DEFAULT_MEMORY_LIMIT, AgentSink, Sender
from mltrail.proto import records_pb2
from mltrail.query.details import fold_run_info, v1_details
from mltrail.query.metrics_view import fold_metrics
from mltrail.query.types import RunInfo

# Run.list / Experiment.get_runs: the newest runs of an experiment, with a warning
# when there are more (one ListRuns answer; a run's definition makes it a few KB).


class NotDelivered(MltrailError):
    """Records of this process have not reached the collector within the timeout."""


class Reader(Protocol):
    where: str  # names the collector or the spool, in logFiles addresses
    def get_metrics(self, run_id: str, name: str | None) -> dict[str, Any]: ...
    def run_info(self, run_id: str) -> RunInfo: ...
    def list_runs(self, experiment: str, where: Sequence[str] = (),
                  order_by: str = "") -> list[RunInfo]: ...
    def child_run_ids(self, run_id: str) -> list[str]: ...
    def file_names(self, run_id: str) -> list[str]: ...
    def download_file(self, run_id: str, name: str, target: str | os.PathLike[str]) -> None: ...
    def log_streams(self, run_id: str) -> list[str]: ...
    def log_text(self, run_id: str, stream: str) -> str: ...


def get_details(reader: Reader, run_id: str) -> dict[str, Any]:
    """v1's ``get_details()``: ``logFiles`` names each console stream and uploaded log."""
    info = reader.run_info(run_id)
    files = {f"user_logs/{s}.txt": f"mltrail://{reader.where}/{run_id}/streams/{s}"
             for s in reader.log_streams(run_id)}
    files.update({name: f"mltrail://{reader.where}/{run_id}/files/{name}"
                  for name in reader.file_names(run_id) if name.startswith("logs/")})
    return v1_details(info, files)


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
                  f"{self.sender.sink.description} after {timeout:g} s; they are kept (in "
                  f"memory, past MLTRAIL_MEMORY_MIB in {self.where}) and retried; if this "
                  f"process exits first they are all written to {self.where} "
                  f"(upload them later with `mltrail sync {self.where}`)",
                  file=sys.stderr, flush=True)
        return remaining

    def reader(self, timeout: float | None = None, collector: str | None = None,
               strict: bool = False, security: Any = None) -> Reader:
        """Waits up to ``timeout`` (default MLTRAIL_READ_TIMEOUT, 10 s) for this process's
        records to be delivered, then reads what the spool offline, else ``collector`` (a
        workspace's) or the collector the agent forwards to, has. ``strict``: raise
        ``NotDelivered`` instead when they were not all delivered in time. ``security``
        (a ClientSecurity; None: from the environment) for a workspace's collector."""
        if timeout is None:
            timeout = read_timeout()
        if self.spool_sink is not None:
            self.flush(timeout)
            return SpoolReader(self.spool_sink)
        return self._online_reader(timeout, collector, strict, security)

    def _online_reader(self, timeout: float, collector: str | None = None,
                       strict: bool = False, security: Any = None) -> CollectorReader:
        from mltrail.query.client import QueryClient

        assert self.agent is not None  # an online link always has its agent
        if strict:
            if self.flush(timeout):
                raise NotDelivered(f"records of this process have not reached the agent "
                                   f"within {timeout:g} s; they are kept and retried; try "
                                   "again later")
            forwarded = self.wait_collector(timeout)
            if forwarded is not None:
                raise NotDelivered(
                    f"the collector acknowledged records up to {forwarded} of "
                    f"{self.sender.acked_seq}; the rest wait in the agent's spool; try again "
                    "later")
        else:
            deadline = time.monotonic() + timeout
            if not self.flush(timeout):  # it says itself what is still on the way
                forwarded = self.wait_collector(max(0.0, deadline - time.monotonic()))
                if forwarded is not None:
                    print(f"mltrail: answering from what the collector has now: it "
                          f"acknowledged records of this process up to {forwarded} of "
                          f"{self.sender.acked_seq}; the rest wait in the agent's spool and "
                          "follow when it is reachable", file=sys.stderr, flush=True)
        return CollectorReader(QueryClient(collector or self.agent.info().collector,
                                           security=security))

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


def memory_limit() -> int:
    """The bytes a sender may hold before it spills to disk (MLTRAIL_MEMORY_MIB, MiB)."""
    text = os.environ.get("MLTRAIL_MEMORY_MIB", str(DEFAULT_MEMORY_LIMIT >> 20))
    try:
        value = float(text)
    except ValueError:
        raise MltrailError(f"MLTRAIL_MEMORY_MIB must be a number of MiB, not {text!r}") from None
    if not value >= 1:  # also NaN
        raise MltrailError(f"MLTRAIL_MEMORY_MIB must be at least 1 (MiB), not {text!r}")
    return int(value * (1 << 20))


def pack_series() -> bool:
    """Whether float points travel packed per series (ScalarSeries records); ``0`` in
    MLTRAIL_PACK_SERIES sends a Record per point, for a collector older than them (it
    refuses them as an unknown metric kind). Upgrade collectors first, then SDKs."""
    text = os.environ.get("MLTRAIL_PACK_SERIES", "1").strip()
    if text not in ("0", "1"):
        raise MltrailError(f"MLTRAIL_PACK_SERIES must be 1 (pack float points per series, "
                           f"the default) or 0 (a record per point), not {text!r}")
    return text == "1"


_links: dict[str, Link] = {}
_embedded_socket: list[str] = []  # found once per process
_link_lock = threading.Lock()


def process_link(socket_path: str | None = None) -> Link:
    """This process's link to its agent (one per socket path), made on first use:
    ``socket_path`` (a workspace's ``agent``), else ``MLTRAIL_AGENT``, else the
    embedded local agent."""
    with _link_lock:
        socket_path = socket_path or agent_socket_from_env() or _embedded()
        link = _links.get(socket_path)
        if link is None:
            agent, stream_id = AgentSink(socket_path), uuid.uuid4().hex
            overflow = SpoolOverflow(offline_dir(stream_id))
            sender = Sender(agent, overflow=overflow, stream_id=stream_id,
                            memory_limit=memory_limit(), pack_series=pack_series())
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
    return Link(Sender(sink, memory_limit=memory_limit(), pack_series=pack_series()),
                str(sink.directory),
                spool_sink=sink)


class CollectorReader:
    """A run read back from the collector (after this process's records reached it)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.where = client.address

    def get_metrics(self, run_id: str, name: str | None) -> dict[str, Any]:
        with self.client:
            return dict(self.client.get_metrics(run_id, name))

    def run_info(self, run_id: str) -> RunInfo:
        with self.client:
            info: RunInfo = self.client.get_run(run_id)
            return info

    def list_runs(self, experiment: str, where: Sequence[str] = (),
                  order_by: str = "") -> list[RunInfo]:
        """Every run (read a page at a time), or those ``where`` keeps in ``order_by``."""
        with self.client:
            return list(self.client.list_runs(experiment=experiment, limit=0,
                                              where=where, order_by=order_by))

    def child_run_ids(self, run_id: str) -> list[str]:
        return list(self.run_info(run_id).child_run_ids)

    def file_names(self, run_id: str) -> list[str]:
        with self.client:
            return sorted(a.path for a in self.client.list_artifacts(run_id))

    def download_file(self, run_id: str, name: str, target: str | os.PathLike[str]) -> None:
        with self.client:
            self.client.download_artifact(run_id, name, target)

    def log_streams(self, run_id: str) -> list[str]:
        with self.client, self.client.tail_logs(run_id, to_line=1) as tail:
            return sorted({line.stream for line in tail})

    def log_text(self, run_id: str, stream: str) -> str:
        with self.client, self.client.tail_logs(run_id, streams=[stream]) as tail:
            return "".join(line.text + "\n" for line in tail)


class SpoolReader:
    """An offline run read back from its own spool."""

    def __init__(self, sink: SpoolSink) -> None:
        self.sink = sink
        self.where = str(sink.directory)

    def _records(self, run_id: str) -> Iterable[records_pb2.Record]:
        return (r for r in read_records(self.sink.spool) if r.run_id == run_id)

    def get_metrics(self, run_id: str, name: str | None) -> dict[str, Any]:
        return fold_metrics(r for r in self._records(run_id)
                            if r.HasField("metric") and (name is None or r.metric.name == name))

    def run_info(self, run_id: str) -> RunInfo:
        return fold_run_info(run_id, read_records(self.sink.spool))

    def list_runs(self, experiment: str, where: Sequence[str] = (),
                  order_by: str = "") -> list[RunInfo]:
        if where or order_by:
            raise MltrailError(f"where and order_by need a collector; this run is offline in "
                               f"{self.where} (upload it with `mltrail sync {self.where}`)")
        ids = {r.run_id for r in read_records(self.sink.spool)}
        runs = [self.run_info(i) for i in sorted(ids)]
        return [r for r in runs if r.experiment == experiment]

    def child_run_ids(self, run_id: str) -> list[str]:
        return self.run_info(run_id).child_run_ids

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

    def log_streams(self, run_id: str) -> list[str]:
        return sorted({r.log.stream for r in self._records(run_id) if r.HasField("log")})

    def log_text(self, run_id: str, stream: str) -> str:
        data = b"".join(r.log.data for r in self._records(run_id)
                        if r.HasField("log") and r.log.stream == stream)
        text = data.decode("utf-8", errors="replace")
        return text if not text or text.endswith("\n") else text + "\n"
