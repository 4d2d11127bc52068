"""The store interface: one write primitive, and the queries the Query service needs.

Every implementation (SQLite, PostgreSQL) keeps the same contract:

- ``write_batch(batches)`` is the only way records get in. It runs one
  transaction for one IngestRequest: for each batch it reads the stream's
  high-water mark, skips records at or below it (duplicates), writes the rest
  and the new mark, and commits once for all batches. A batch that does not
  start at or below mark + 1 is out of order: it writes nothing and its
  outcome names the expected seq (the sender resends from there). A batch that fails for
  a permanent reason (an artifact whose sha256 does not match) is rolled back
  alone and contributes nothing; a retryable failure (store busy) rolls back
  everything and raises ``RetryableError``.
- Methods are blocking; the collector calls them from its store threads
  (one writer thread, a few reader threads), never from the event loop.
- Query methods return ``mltrail.v1`` messages, so ingest and query code never
  sees the driver.
- Workspaces (tenants): every run belongs to one, stamped from the batch's
  ``workspace`` (which ingest takes from the credentials, never from the
  batch). A batch with a record for a run of another workspace is refused
  with ``denied`` set, and so is every later batch of its stream in the same
  call; streams' high-water marks are kept per workspace. ``list_runs``,
  ``get_run`` and ``run_status`` take the caller's workspace; the other
  run-scoped reads are called only after ``run_status`` found the run in the
  caller's workspace (run ids are unique across workspaces).
- Tokens: ``put_token``, ``find_token``, ``list_tokens``, ``revoke_token``
  keep what ``collector/auth.py`` needs (an id and a keyed hash, never the
  secret). A store without them refuses ``auth = "token"`` at start.
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
import bisect
import math
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from mltrail.collector.store.chunks import (
    KIND_FLAG,
    KIND_INTEGER,
    KIND_NUMBER,
    KIND_TEXT,
    Points,
)
from mltrail.collector.store.series import (
    Bucket,
    SeriesBuckets,
    SeriesColumns,
    SeriesPart,
    SeriesPoints,
    SeriesQuery,
    SeriesRecord,
)
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2, records_pb2

DEFAULT_WORKSPACE = "default"

# The error code of a run end inferred for a run whose process vanished without a word
# (the agent's run watch, or mltrail sync for an offline run).
INFERRED_END = "ProcessExited"


def corrects_inferred_end(stored_error: bytes | None, ended: records_pb2.RunEnded) -> bool:
    """Whether ``ended``, arriving for a run already ended, replaces its stored end.

    The first end wins (Azure ML v1: a terminal status is final), but for an inferred
    one: a process that exited while its agent was stopped spilled its own end to disk,
    and that end, delivered later by ``mltrail sync``, says what really happened."""
    if ended.error.code == INFERRED_END or not stored_error:
        return False
    return records_pb2.ErrorDetails.FromString(stored_error).code == INFERRED_END


@dataclass
class ScalarRun:
    """Plain scalar points of one series (run, metric name) of a batch, as validation
    read them, so the store does not walk the protobuf again: ``seqs`` and ``points``
    (value kinds as ``chunks`` codes) in seq order. A run never spans another metric
    record of the batch (of any name), so runs and those records merged by first seq
    keep every name's logged order. Built where the batch is prepared (a worker
    process); the store only looks up keys and appends."""

    run_id: str
    name: str
    seqs: Sequence[int]  # a range when contiguous (the common case: cheap to move)
    points: Points

    @property
    def seq(self) -> int:
        return self.seqs[0]

    def above(self, hwm: int) -> ScalarRun | None:
        """The points with a seq above ``hwm`` (None: none; self: all)."""
        seqs = self.seqs
        if seqs[-1] <= hwm:
            return None
        if seqs[0] > hwm:
            return self
        start = bisect.bisect_right(seqs, hwm)
        return ScalarRun(self.run_id, self.name, seqs[start:],
                         self.points.slice(start, len(seqs)))

    def latest(self) -> float | int | None:
        """The last number or integer (None: the run has neither)."""
        points = self.points
        for index in range(len(points) - 1, -1, -1):
            if points.kinds[index] <= KIND_INTEGER:
                return points.values[index]
        return None


@dataclass(frozen=True)
class ValidBatch:
    """A batch that passed ingest validation: contiguous seqs first..last.

    Plain scalar metrics (no description) are in ``scalars``, as ``ScalarRun``s
    by first seq; every other record is in ``others``, in seq order. A store
    keeps the values of one metric name in seq order across the two (design.md
    invariant 6).
    """

    stream_id: str
    first_seq: int
    last_seq: int
    scalars: Sequence[ScalarRun]
    others: Sequence[records_pb2.Record]
    workspace: str = DEFAULT_WORKSPACE  # from the credentials it arrived with

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
    gap: bool = False  # a gap record: seqs set aside on purpose, explained
    expected_seq: int = 0  # set: out of order, nothing written; the stream needs this seq
    error: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    denied: bool = False  # error: a record's run belongs to another workspace


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored: ``digest`` is the keyed hash of its secret; times in ns,
    ``expires`` 0 for never, ``revoked`` 0 while valid."""

    token_id: str
    name: str
    workspace: str
    role: str
    digest: bytes = field(repr=False)
    created: int
    expires: int = 0
    revoked: int = 0


@dataclass
class WriteSummary:
    """The result of one ``write_batch`` call, after commit.

    ``latest`` holds the last numeric scalar per (run_id, metric name) with the
    run's experiment, for the Prometheus gauges (``workspaces`` says whose, so a
    scrape with a reader token sees its workspace's runs only); ``log_runs``
    and ``ended_runs`` wake TailLogs followers.
    """

    outcomes: list[BatchOutcome] = field(default_factory=list)
    latest: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    workspaces: dict[str, str] = field(default_factory=dict)  # run_id -> its workspace
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
    def list_runs(self, request: collector_pb2.ListRunsRequest,
                  workspace: str = DEFAULT_WORKSPACE) -> list[collector_pb2.RunInfo]:
        """Matching runs of ``workspace``, newest first (start time, then run id, both
        descending), at most ``request.limit`` (0: DEFAULT_RUN_PAGE), after
        ``request.page_token`` if set (``run_page_after`` decodes it: the runs strictly
        after that start time and run id in this order). The counts (log lines, metric
        records, artifacts) are left 0: counting costs a scan per run. A page should cost
        a few queries, not some per run (fetch the page's tags, properties and children
        for all its runs at once)."""

    @abc.abstractmethod
    def get_run(self, run_id: str, workspace: str = DEFAULT_WORKSPACE, counts: bool = True
                ) -> collector_pb2.RunInfo | None:
        """One run of ``workspace`` with its counts (None: no such run there; the counts
        left 0 with ``counts=False``: cheap, for polling)."""

    @abc.abstractmethod
    def run_status(self, run_id: str, workspace: str = DEFAULT_WORKSPACE) -> int | None:
        """The run's RunStatus number, or None for a run not in ``workspace`` (cheap:
        followers poll it)."""

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

    def other_metrics(self, run_id: str) -> list[collector_pb2.MetricRecord]:
        """The run's records of every kind but plain scalars (lists, rows, tables, images,
        JSON metrics, described scalars), by name then logged order."""
        return list(metric_records(p for p in self.read_series(SeriesQuery(run_id))
                                   if isinstance(p, SeriesRecord)))

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

    # ---- tokens (collector/auth.py); a store without them cannot serve auth = "token"

    def put_token(self, token: TokenRecord) -> None:
        """Store a new token (its workspace is created if new); PermanentError if the
        name is taken. Called from the writer thread."""
        raise _no_tokens(self)

    def find_token(self, token_id: str) -> TokenRecord | None:
        raise _no_tokens(self)

    def list_tokens(self, workspace: str = "") -> list[TokenRecord]:
        """Every token ("" workspace) or those of one workspace, by name."""
        raise _no_tokens(self)

    def revoke_token(self, name: str, when: int) -> TokenRecord | None:
        """Mark the token revoked at ``when``; None if no token has that name."""
        raise _no_tokens(self)

    def watch(self, callback: Callable[[set[str]], None]) -> None:
        """Call ``callback`` (from another thread) with the run ids whose lines or end
        another process committed. A store only one process writes (SQLite) has
        nothing to report; ingest wakes its own followers."""
        return None

    def check(self) -> None:
        """Raise ``RetryableError`` saying why when the store cannot take writes now
        (the collector's readiness asks every few seconds, from a reader thread).
        A store without a cheaper test than its writes keeps this default: its
        failed writes still answer UNAVAILABLE, and the agents keep their records."""
        return None
    def metric_summaries(self, run_ids: Sequence[str], names: Sequence[str] | None = None
                         ) -> dict[str, dict[str, collector_pb2.MetricSummary]]:
        """Per run (found by the caller in its workspace) and metric name, the latest, min,
        max and count of its numeric scalar values (NaN left out of min and max unless
        every value is NaN); ``names`` None: every metric. A run or name without such
        values is left out. From the chunk summaries alone (a downsample of one bucket
        per series), never the points; a store may answer every run in one query."""
        out: dict[str, dict[str, collector_pb2.MetricSummary]] = {}
        wanted = set(names) if names is not None else None
        for run_id in run_ids:
            for part in self.read_series(SeriesQuery(run_id, buckets=1)):
                if isinstance(part, SeriesBuckets) and (wanted is None or part.name in wanted):
                    summary = bucket_summary(part.buckets)
                    if summary is not None:
                        out.setdefault(run_id, {})[part.name] = summary
        return out

    def delete_runs(self, run_ids: Sequence[str], workspace: str = DEFAULT_WORKSPACE
                    ) -> collector_pb2.DeleteRunsResponse:
        """Delete runs of ``workspace`` with their metrics, logs and artifacts; unknown ids
        (and another workspace's) are skipped."""
        raise PermanentError(f"{type(self).__name__} cannot delete runs")

    @abc.abstractmethod
    def close(self) -> None:
        """Idempotent; closes every connection this thread can reach."""


def _no_tokens(store: Store) -> PermanentError:
    return PermanentError(f"{type(store).__name__} does not keep tokens yet; run the collector "
                          "with auth = \"none\" or use a SQLite store",
                          grpc.StatusCode.FAILED_PRECONDITION)


DEFAULT_RUN_PAGE, MAX_RUN_PAGE = 100, 1000


def every_run(store: Store, request: collector_pb2.ListRunsRequest, workspace: str,
              cap: int) -> list[collector_pb2.RunInfo]:
    """Every run ``request`` matches (at most ``cap``), page by page through the store."""
    asked = collector_pb2.ListRunsRequest()
    asked.CopyFrom(request)
    asked.limit = MAX_RUN_PAGE + 1
    runs: list[collector_pb2.RunInfo] = []
    while True:
        page = store.list_runs(asked, workspace)
        runs += page[:MAX_RUN_PAGE]
        if len(page) <= MAX_RUN_PAGE or len(runs) >= cap:
            return runs[:cap]
        asked.page_token = run_page_token(page[MAX_RUN_PAGE - 1])


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


def bucket_summary(buckets: Sequence[Bucket]) -> collector_pb2.MetricSummary | None:
    """A series' summary from the buckets of a downsample of it (None: no numeric value)."""
    valued = [b for b in buckets if b.last is not None]
    if not valued:
        return None
    lows = [b.min for b in valued if b.min is not None and not math.isnan(b.min)]
    highs = [b.max for b in valued if b.max is not None and not math.isnan(b.max)]
    last = valued[-1].last
    return collector_pb2.MetricSummary(
        latest=math.nan if last is None else last, count=sum(b.count for b in valued),
        min=min(lows) if lows else math.nan, max=max(highs) if highs else math.nan)
