"""The store interface: one write primitive, and the queries the Query service needs.

Every implementation (SQLite now, PostgreSQL later) keeps the same contract:

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
"""

from __future__ import annotations

import abc
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

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
    gap: bool = False  # a gap record: seqs set aside on purpose, explained
    expected_seq: int = 0  # set: out of order, nothing written; the stream needs this seq
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
        """Matching runs, newest first; the counts (log lines, metric records, artifacts)
        are left 0: counting costs a scan per run."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> collector_pb2.RunInfo | None:
        """One run with its counts."""

    @abc.abstractmethod
    def run_status(self, run_id: str) -> int | None:
        """The run's RunStatus number, or None for an unknown run (cheap: followers poll it)."""

    @abc.abstractmethod
    def get_metrics(self, run_id: str, name: str) -> list[collector_pb2.MetricRecord]: ...

    @abc.abstractmethod
    def read_logs(self, query: LogQuery) -> list[collector_pb2.LogLine]:
        """Lines of ``query.run_id`` in (stream, line) order, at most ``query.limit``."""

    @abc.abstractmethod
    def log_positions(self, run_id: str) -> dict[str, int]:
        """Per stream of the run, the number of lines stored so far."""

    @abc.abstractmethod
    def list_artifacts(self, run_id: str) -> list[collector_pb2.ArtifactInfo]: ...

    @abc.abstractmethod
    def get_artifact(self, run_id: str, path: str) -> collector_pb2.ArtifactInfo | None: ...

    @abc.abstractmethod
    def read_artifact(self, info: collector_pb2.ArtifactInfo, chunk: int
                      ) -> Generator[bytes, None, None]:
        """The artifact's bytes in pieces of at most ``chunk`` bytes."""

    @abc.abstractmethod
    def close(self) -> None:
        """Idempotent; closes every connection this thread can reach."""
