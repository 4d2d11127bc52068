"""What every log source shares: decoded chunks, routes, plain lines, counters.

A source turns bytes of a file into ``Chunk`` s (lines of one stream) with a
``Decoder``: ``cut(buf, final)`` says how much of ``buf`` forms complete
entries (a pure function of the bytes, so a restart cuts the same way), and
``decode(raw, final)`` turns exactly that much into chunks. ``final`` is
True when the file is being let go of: a partial last line is kept then.
A ``FileRoute`` says where a file's lines go: the run, the decoder, the
properties to attach to the run once, and the ordering group (files of one
group are read oldest first, so a rotated file's end precedes the new one).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mltrail.common.lines import LINE_SPLIT_MARKER, MAX_LINE_BYTES, split_long_lines

CUT = LINE_SPLIT_MARKER + b"\n"


@dataclass(frozen=True)
class Chunk:
    stream: str
    data: bytes
    partial: bool = False
    time_ns: int = 0  # 0: the time the source read it


class Decoder(Protocol):
    read_size: int
    lines_split: int  # lines that went out in pieces (each line once)
    lines_repaired: int  # lines joined from pieces
    carries: bool  # a line in pieces may go on in the next file of the group

    def cut(self, buf: bytes, final: bool) -> int: ...

    def decode(self, raw: bytes, final: bool) -> list[Chunk]: ...


@dataclass(frozen=True)
class FileRoute:
    run_id: str
    decoder: Decoder
    group: str
    properties: dict[str, str] = field(default_factory=dict)


class Router(Protocol):
    """Which files a source reads and where their lines go."""

    def patterns(self) -> list[str]: ...

    def route(self, path: str) -> FileRoute | None: ...


class RouteError(ValueError):
    """A file or container cannot be mapped to a run."""


def piece_length(buf: bytes, limit: int) -> int:
    """Raw bytes of the first piece of a line longer than ``limit`` (shared splitter)."""
    split, _ = split_long_lines(buf[: limit + 1], limit)
    return split.index(CUT)


class PlainLineDecoder:
    """Lines as they are in the file: ``cut`` at the last newline (C-level ``rfind``).

    A line longer than ``limit`` goes out in pieces that end with the split
    marker (``common.lines``), as the launcher and the collector split.
    """

    carries = False

    def __init__(self, stream: str, limit: int = MAX_LINE_BYTES) -> None:
        self.stream = stream
        self.limit = limit
        self.read_size = limit + 1  # one buffer always holds a whole line of the limit
        self.lines_split = 0
        self.lines_repaired = 0
        self._splitting = False  # the last piece went out without its line's end

    def cut(self, buf: bytes, final: bool) -> int:
        end = buf.rfind(b"\n") + 1
        if end:
            return end
        if len(buf) > self.limit:
            return piece_length(buf, self.limit)
        return len(buf) if final else 0

    def decode(self, raw: bytes, final: bool) -> list[Chunk]:
        if raw.endswith(b"\n"):
            self._splitting = False
            return [Chunk(self.stream, raw)]
        if final and len(raw) <= self.limit:
            return [Chunk(self.stream, raw, partial=True)]
        self.lines_split += not self._splitting  # a line in 5 pieces counts once
        self._splitting = True
        return [Chunk(self.stream, raw + CUT)]


class RunMapper:
    """A fixed run id; ``path:REGEX`` whose ``run_id`` group (or first group) names it;
    or ``env:NAME``, the agent's own environment variable (a sidecar given its job's
    run id)."""

    def __init__(self, run_id: str = "", run_id_from: str = "") -> None:
        self.run_id = run_id
        self.pattern: re.Pattern[str] | None = None
        if not run_id_from:
            return
        kind, _, expr = run_id_from.partition(":")
        if kind == "env" and expr:
            self.run_id = os.environ.get(expr, "")
            if not self.run_id:
                raise RouteError(f"run_id_from {run_id_from!r}: the agent's environment has "
                                 f"no {expr} (set it, or give run_id)")
            return
        if kind != "path" or not expr:
            raise RouteError(f"run_id_from {run_id_from!r}: expected path:REGEX or env:NAME")
        try:
            self.pattern = re.compile(expr)
        except re.error as exc:
            raise RouteError(f"run_id_from {run_id_from!r}: bad regex ({exc})") from None
        if not self.pattern.groups:
            raise RouteError(f"run_id_from {run_id_from!r}: the regex needs a group, "
                             "e.g. (?P<run_id>[^/]+)")

    def for_path(self, path: str) -> str | None:
        if self.pattern is None:
            return self.run_id or None
        match = self.pattern.search(path)
        if match is None:
            return None
        names = match.groupdict()
        return names.get("run_id") or match.group(1) or None


@dataclass
class SourceCounters:
    """Plain counters a source keeps; ``SourcesCollector`` exports them at scrape time."""

    lines_read: int = 0
    bytes_read: int = 0
    records: int = 0
    checkpoint_writes: int = 0
    lines_split: int = 0  # by decoders of files let go (live ones are added at scrape)
    lines_repaired: int = 0
    rotations: dict[str, int] = field(default_factory=dict)  # rename, truncate, delete
    errors: int = 0
    files_lost: int = 0  # checkpointed files gone before the rest of them was read

    def rotated(self, kind: str) -> None:
        self.rotations[kind] = self.rotations.get(kind, 0) + 1


class SourceStats(Protocol):
    name: str
    counters: SourceCounters

    def files_watched(self) -> int: ...

    def lags(self) -> list[tuple[str, int]]: ...

    def lines_split(self) -> int: ...

    def lines_repaired(self) -> int: ...


class SourcesCollector(Collector):
    """The sources' counters on the agent's /metrics (label ``source``)."""

    def __init__(self) -> None:
        self._sources: list[SourceStats] = []
        self._lock = threading.Lock()

    def add(self, source: SourceStats) -> None:
        with self._lock:
            self._sources.append(source)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        with self._lock:
            sources = list(self._sources)
        p = "mltrail_agent_source_"
        watched = GaugeMetricFamily(p + "files_watched", "Files a source reads", labels=["source"])
        lag = GaugeMetricFamily(p + "lag_bytes", "Bytes behind the end of a file",
                                labels=["source", "path"])
        counters = {
            "lines_read": ("Lines read from files", lambda s: s.counters.lines_read),
            "bytes_read": ("Bytes read from files", lambda s: s.counters.bytes_read),
            "records": ("Records appended to the spool", lambda s: s.counters.records),
            "lines_split": ("Overlong lines sent in pieces with a marker (each line once)",
                            _split),
            "lines_repaired": ("Partial lines joined (CRI P, Docker 16 KiB pieces)", _repaired),
            "checkpoint_writes": ("Checkpoint files written",
                                  lambda s: s.counters.checkpoint_writes),
            "errors": ("Files that could not be read", lambda s: s.counters.errors),
            "files_lost": ("Files gone before they were read to the end (agent down)",
                           lambda s: s.counters.files_lost),
        }
        families = {k: CounterMetricFamily(p + k, text, labels=["source"])
                    for k, (text, _) in counters.items()}
        rotations = CounterMetricFamily(p + "rotations", "Rotations seen, by kind",
                                        labels=["source", "kind"])
        for s in sources:
            watched.add_metric([s.name], s.files_watched())
            for path, behind in s.lags():
                lag.add_metric([s.name, path], behind)
            for key, (_, read) in counters.items():
                families[key].add_metric([s.name], read(s))
            for kind, n in sorted(s.counters.rotations.items()):
                rotations.add_metric([s.name, kind], n)
        yield watched
        yield lag
        yield from families.values()
        yield rotations


def _split(s: SourceStats) -> int:
    return s.lines_split()


def _repaired(s: SourceStats) -> int:
    return s.lines_repaired()
