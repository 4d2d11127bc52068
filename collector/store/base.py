"""The store interface: one write primitive, and the queries the Query service needs.

Every implementation (SQLite now, PostgreSQL later) keeps the same contract:

- ``write_batch(batches)`` is the only way records get in. It runs one
  transaction for one IngestRequest: for each batch it reads the stream's
  high-water mark, skips records at or below it (duplicates), writes the rest
  and the new mark, and commits once for all batches. A batch that fails for
  a permanent reason (an artifact whose sha256 does not match) is rolled back
  alone and contributes nothing; a retryable failure (store busy) rolls back
  everything and raises ``RetryableError``.
- Methods are blocking; the collector calls them from its store threads
  (one writer thread, a few reader threads), never from the event loop.
- Query methods return ``mltrail.v1`` messages, so ingest and query code never
  sees the driver.
- Scalar series are stored in chunks of ``chunks.py`` (the encoding every
  store shares) with a ``ChunkSummary`` per chunk; a batch's points extend a
  series' last, partial chunk inside the same write transaction, so a
  replayed batch (skipped by the mark) never stores a point twice. Reads of a
  series go through ``read_series``, a generator of parts (``SeriesStart``
  first per metric, then a chunk's points as ``SeriesPoints``, or as
  ``SeriesColumns`` arrays for a whole chunk of numbers, one
  ``SeriesRecord`` per record of another kind, or one ``SeriesBuckets`` for
  a downsample; ``series.chunk_part`` and ``series.downsample`` do the
  store-independent part) that never holds the whole series: the collector
  advances it from any of its reader threads, so an implementation must not
  keep a cursor or a connection of one thread across a ``yield`` (SQLite
  pages by rowid).
- Listings page: ``list_runs`` by ``request.page_token`` (``run_page_after``),
  ``list_artifacts`` by the last path seen; the Query service asks for one
  more than a page to know whether another follows.
"""

from __future__ import annotations

import abc
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from mltrail.collector.store.chunks import KIND_FLAG, KIND_INTEGER, KIND_NUMBER, KIND_TEXT
from mltrail.collector.store.series import (
    SeriesColumns,
    SeriesPart,
    SeriesPoints,
    SeriesQuery,
    SeriesRecord,
)
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2, records_pb2

# A scalar metric value as validation read it, so the store does not walk the
# protobuf again: (seq, run_id, name, time_unix_nano, step or None,
# value kind ("number", "integer", "text", "flag"), value).
ScalarPoint = tuple[int, str, str, int, int | None, str, float | int | str | bool]


@dataclass(frozen=True)
class ValidBatch:
    """A batch that passed ingest validation: contiguous seqs first..last.

    Plain scalar metrics (no description) are in ``scalars``; every other
    record is in ``others``; both in seq order. A store keeps the values of
    one metric name in seq order across the two (design.md invariant 6).
    """

    stream_id: str
    first_seq: int
    last_seq: int
    scalars: Sequence[ScalarPoint]
    others: Sequence[records_pb2.Record]

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass
class BatchOutcome:
    """What the store did with one ValidBatch (error set: nothing was written)."""

    stream_id: str
    acked_seq: int = 0
    stored: int = 0
    duplicates: int = 0
    gap: bool = False
    error: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class WriteSummary:
    """The result of one ``write_batch`` call, after commit.

    ``latest`` holds the last numeric scalar per (run_id, metric name) with the
    run's experiment, for the Prometheus gauges; ``log_runs`` and ``ended_runs``
    wake TailLogs followers.
    """

    outcomes: list[BatchOutcome] = field(default_factory=list)
    latest: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    log_runs: set[str] = field(default_factory=set)
    ended_runs: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class LogQuery:
    run_id: str
    streams: Sequence[str] = ()
    from_line: int = 0
    to_line: int = 0  # exclusive; 0: no end
    limit: int = 10_000  # lines per answer; the caller pages on
    max_bytes: int = 4 * 1024 * 1024  # text per answer (at least one line is returned)
    positions: Mapping[str, int] = field(default_factory=dict)  # per stream, overrides from_line


class Store(abc.ABC):
    """See the module docstring for the contract."""

    @abc.abstractmethod
    def write_batch(self, batches: Sequence[ValidBatch]) -> WriteSummary: ...

    @abc.abstractmethod
    def list_runs(self, request: collector_pb2.ListRunsRequest) -> list[collector_pb2.RunInfo]:
        """Matching runs, newest first (start time, then run id, both descending), at most
        ``request.limit`` (0: DEFAULT_RUN_PAGE), after ``request.page_token`` if set
        (``run_page_after`` decodes it: the runs strictly after that start time and run
        id in this order). The counts (log lines, metric records, artifacts) are left 0:
        counting costs a scan per run. A page should cost a few queries, not some per
        run (fetch the page's tags, properties and children for all its runs at once)."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> collector_pb2.RunInfo | None:
        """One run with its counts."""

    @abc.abstractmethod
    def run_status(self, run_id: str) -> int | None:
        """The run's RunStatus number, or None for an unknown run (cheap: followers poll it)."""

    @abc.abstractmethod
    def read_series(self, query: SeriesQuery) -> Iterator[SeriesPart]:
        """The run's metrics (``query.name`` "": every one, by name), each in logged order:
        ``SeriesPoints`` for scalar points (a chunk's worth at a time, trimmed to the
        query's step and time ranges) and ``SeriesRecord`` for the other kinds; with
        ``query.buckets`` one ``SeriesBuckets`` per metric instead (``series.downsample``).
        An unknown run or metric yields nothing."""

    def get_metrics(self, run_id: str, name: str) -> list[collector_pb2.MetricRecord]:
        """Every record of the run's metrics as messages, by name then logged order: a
        convenience over ``read_series`` that holds them all (GetMetrics, bundles)."""
        return list(metric_records(self.read_series(SeriesQuery(run_id, name))))

    @abc.abstractmethod
    def read_logs(self, query: LogQuery) -> list[collector_pb2.LogLine]:
        """Lines of ``query.run_id`` in (stream, line) order, at most ``query.limit``."""

    @abc.abstractmethod
    def log_positions(self, run_id: str) -> dict[str, int]:
        """Per stream of the run, the number of lines stored so far."""

    @abc.abstractmethod
    def list_artifacts(self, run_id: str, after: str = "", limit: int = 0
                       ) -> list[collector_pb2.ArtifactInfo]:
        """The run's artifacts by path: those with a path greater than ``after``, at most
        ``limit`` of them (0: all)."""

    @abc.abstractmethod
    def get_artifact(self, run_id: str, path: str) -> collector_pb2.ArtifactInfo | None: ...

    @abc.abstractmethod
    def read_artifact(self, info: collector_pb2.ArtifactInfo, chunk: int
                      ) -> Generator[bytes, None, None]:
        """The artifact's bytes in pieces of at most ``chunk`` bytes."""

    @abc.abstractmethod
    def close(self) -> None:
        """Idempotent; closes every connection this thread can reach."""


DEFAULT_RUN_PAGE, MAX_RUN_PAGE = 100, 1000


def run_page_token(run: collector_pb2.RunInfo) -> str:
    """The token of the page after ``run`` (opaque to clients)."""
    return f"{run.start_time_unix_nano}:{run.run_id}"


def run_page_after(token: str) -> tuple[int, str] | None:
    """(start time, run id) of a page token, None for ""; PermanentError if not one."""
    if not token:
        return None
    start, sep, run_id = token.partition(":")
    try:
        if not sep:
            raise ValueError(token)
        return int(start), run_id
    except ValueError:
        raise PermanentError(f"page_token {token[:80]!r} is not one this collector gave; "
                             "start the listing again without it") from None


_VALUE_FIELDS = {KIND_NUMBER: "number", KIND_INTEGER: "integer", KIND_TEXT: "text",
                 KIND_FLAG: "flag"}


def metric_records(parts: Iterable[SeriesPart]) -> Iterator[collector_pb2.MetricRecord]:
    """Series parts as one ``MetricRecord`` per logged value (buckets are left out)."""
    for part in parts:
        if isinstance(part, SeriesRecord):
            record = collector_pb2.MetricRecord(time_unix_nano=part.time)
            record.metric.ParseFromString(part.metric)
            yield record
        elif isinstance(part, SeriesPoints | SeriesColumns):
            points = part.points
            for step, time_ns, kind, value in zip(points.steps, points.times, points.kinds,
                                                  points.values, strict=True):
                record = collector_pb2.MetricRecord(time_unix_nano=time_ns)
                record.metric.name = part.name
                scalar = record.metric.scalar
                if step is not None:
                    scalar.step = step
                setattr(scalar.value, _VALUE_FIELDS[kind], value)
                yield record
