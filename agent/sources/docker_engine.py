"""Fallback for a container whose json-file log the agent cannot read: the engine's
log stream (``logs(follow=True, timestamps=True, since=...)``), one per stdout/stderr.

Positions are times: each stream keeps ``last_ns`` (the newest line time it
spooled) and ``at_last`` (how many lines carried exactly that time). A
reconnect asks ``since=`` a microsecond before ``last_ns`` and skips lines
older than it and the first ``at_last`` lines at it: the edge is
de-duplicated. A stream with no data for ``stall_seconds`` while the
container runs, or one the engine ended while the container still runs, is
*stalled*: it is closed and reopened from the last time (counted).

Exactness across a crash: before a batch is appended, the batch bytes and
the state after it are written to the stream's state file (tmp + fsync +
rename); after a restart a pending batch is appended again with the same
seqs (the collector skips it if it has it), then following resumes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltrail.agent.sources.encode import BatchBuilder
from mltrail.agent.sources.joiner import _parse_time
from mltrail.agent.spool import SpoolClosedError
from mltrail.common.lines import split_long_lines
from mltrail.proto import records_pb2

if TYPE_CHECKING:
    from mltrail.agent.sources.docker import ContainerInfo, DockerSource

log = logging.getLogger("mltrail.agent.sources")

STALL_SECONDS = 30.0
FLUSH_SECONDS = 0.05
FLUSH_BYTES = 256 * 1024
_END = object()


@dataclass
class EngineState:
    stream_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    last_ns: int = 0
    at_last: int = 0
    pending: dict[str, Any] | None = None  # {"batch": b64, "first", "last", "state": {...}}


class _StateFile:
    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync

    def load(self) -> EngineState:
        try:
            return EngineState(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return EngineState()

    def save(self, state: EngineState) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(asdict(state), fh)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class EngineStream:
    """One container stream (stdout or stderr) through the engine's API."""

    def __init__(self, source: DockerSource, info: ContainerInfo, run_id: str, std: str,
                 client_factory: Callable[..., Any], checkpoint_dir: Path, fsync: bool) -> None:
        self.source, self.info, self.run_id, self.std = source, info, run_id, std
        self.name = f"{source.config.stream or info.name}/{std}"
        self._client_factory = client_factory
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self._file = _StateFile(
            checkpoint_dir / f"{source.name}.engine.{info.id[:16]}.{std}.json", fsync)
        self.state = self._file.load()
        self.stalls = 0
        self.stall_seconds = STALL_SECONDS
        self._stop = threading.Event()
        self._stream: Any = None
        self._partial: list[bytes] = []
        self._lines: list[bytes] = []
        self._size = 0
        self._skipped_at_edge = 0
        self._skipping = True
        # (time, messages at that time): _edge as read, _resume as of this connection
        self._resume = self._edge = (self.state.last_ns, self.state.at_last)

    # ---- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True,
                         name=f"mltrail-engine-{self.info.id[:8]}-{self.std}").start()

    def stop(self) -> None:
        self._stop.set()
        self._close_stream()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def _run(self) -> None:
        try:
            self._append_pending()
            while not self._stop.is_set() and self._follow_once():
                self.stalls += 1
                log.warning("engine log stream of %s %s stalled; reopening since its last "
                            "line time", self.info.name, self.std)
            self._flush()
        except SpoolClosedError:
            return
        except Exception:
            log.exception("engine log stream of %s %s failed", self.info.name, self.std)

    # ---- following ------------------------------------------------------------------

    def _follow_once(self) -> bool:
        """Read until the container ends (False) or the stream stalls (True)."""
        client = self._client_factory(self.source.config, timeout=self.stall_seconds)
        since = max(0.0, self.state.last_ns / 1e9 - 1e-6) if self.state.last_ns else None
        self._skipped_at_edge = 0
        self._skipping = True
        self._partial = []  # pieces not yet whole are asked for again
        self._resume = self._edge = (self.state.last_ns, self.state.at_last)
        try:
            self._stream = client.api.logs(
                self.info.id, stdout=self.std == "stdout", stderr=self.std == "stderr",
                stream=True, follow=True, timestamps=True, since=since)
        except Exception as exc:
            log.warning("engine logs of %s: %s", self.info.name, exc)
            return not self._stop.wait(1.0)
        chunks: queue.Queue[Any] = queue.Queue(maxsize=1024)  # one per connection: a closed
        reader = threading.Thread(target=self._read, args=(self._stream, chunks), daemon=True)
        reader.start()  # stream's end marker must not end the next connection
        ended = self._consume(chunks)
        self._close_stream()
        if not ended:
            return True
        return self._running(client) and not self._stop.is_set()

    def _read(self, stream: Any, chunks: queue.Queue[Any]) -> None:
        try:
            for chunk in stream:
                chunks.put(chunk)
        except Exception:
            pass  # a closed or timed-out stream: the consumer decides
        chunks.put(_END)

    def _consume(self, chunks: queue.Queue[Any]) -> bool:
        """True when the stream ended; False when it stalled."""
        quiet_since = time.monotonic()
        while not self._stop.is_set():
            try:
                chunk = chunks.get(timeout=FLUSH_SECONDS)
            except queue.Empty:
                self._flush()
                if time.monotonic() - quiet_since > self.stall_seconds:
                    return False
                continue
            if chunk is _END:
                return True
            quiet_since = time.monotonic()
            self._take(chunk)
            if self._size >= FLUSH_BYTES:
                self._flush()
        return True

    def _running(self, client: Any) -> bool:
        try:
            return bool(client.api.inspect_container(self.info.id)["State"]["Running"])
        except Exception:
            return False

    # ---- lines -------------------------------------------------------------------------

    def _take(self, chunk: bytes) -> None:
        """One engine message: ``<time> <text>``; a piece of a long line lacks its newline
        (the engine gives every piece of a line the same time)."""
        stamp, _, text = chunk.partition(b" ")
        if not self._is_new(_parse_time(stamp)):
            return
        complete = text.endswith(b"\n")
        self._partial.append(text[:-1] if complete else text)
        if complete:
            line = b"".join(self._partial)
            if len(self._partial) > 1:
                self.source.counters.lines_repaired += 1
            self._partial = []
            self._lines.append(line)
            self._size += len(line) + 1
            self.state.last_ns, self.state.at_last = self._edge  # only whole lines count

    def _is_new(self, ns: int) -> bool:
        """Skips, at the start of a connection, what was spooled before it: times before
        the resume point and the first ``at_last`` messages at it."""
        if self._skipping:
            resume_ns, resume_at = self._resume
            if ns < resume_ns:
                return False
            if ns == resume_ns and self._skipped_at_edge < resume_at:
                self._skipped_at_edge += 1
                return False
            self._skipping = False
        last_ns, at_last = self._edge
        self._edge = (ns, at_last + 1) if ns == last_ns else (ns, 1)
        return True

    def _flush(self) -> None:
        if not self._lines:
            return
        data, splits = split_long_lines(b"\n".join(self._lines) + b"\n",
                                        self.source.config.max_line_bytes)
        self.source.counters.lines_split += sum(splits.values()) - len(splits)
        self.source.counters.lines_read += len(self._lines)
        self.source.counters.bytes_read += len(data)
        self._lines, self._size = [], 0
        s = self.state
        builder = BatchBuilder(s.stream_id)
        first = s.seq + 1
        if s.seq == 0:  # the container's identity on the run, once per stream
            s.seq += 1
            builder.add_record(records_pb2.Record(
                seq=s.seq, time_unix_nano=time.time_ns(), run_id=self.run_id,
                run_event=records_pb2.RunEvent(properties=records_pb2.PropertiesAdded(
                    properties=self.info.properties()))))
        s.seq += 1
        builder.add_log(s.seq, s.last_ns or time.time_ns(), self.run_id, self.name, data)
        pending = {"batch": base64.b64encode(builder.build()).decode(), "first": first,
                   "last": s.seq}
        s.pending = pending
        self._file.save(s)  # the intent: replayed as it is after a crash
        self._append_pending()

    def _append_pending(self) -> None:
        s = self.state
        if s.pending is None:
            return
        batch = base64.b64decode(s.pending["batch"])
        self.source.spool.append(s.stream_id, s.pending["first"], s.pending["last"], batch)
        self.source.counters.records += s.pending["last"] - s.pending["first"] + 1
        s.pending = None
        self._file.save(s)
        self.source.counters.checkpoint_writes += 2


class EngineFollower:
    """Both streams of one container."""

    def __init__(self, source: DockerSource, info: ContainerInfo, run_id: str,
                 client_factory: Callable[..., Any], checkpoint_dir: Path, *,
                 fsync: bool) -> None:
        self.streams = [EngineStream(source, info, run_id, std, client_factory,
                                     checkpoint_dir, fsync) for std in ("stdout", "stderr")]

    def start(self) -> None:
        for stream in self.streams:
            stream.start()

    def stop(self) -> None:
        for stream in self.streams:
            stream.stop()
