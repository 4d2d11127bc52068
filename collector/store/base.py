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
"""

from __future__ import annotations

import abc
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2, records_pb2

# A scalar metric value as validation read it, so the store does not walk the
# protobuf again: (seq, run_id, name, time_unix_nano, step or None,
# value kind ("number", "integer", "text", "flag"), value).
ScalarPoint = tuple[int, str, str, int, int | None, str, float | int | str | bool]

DEFAULT_WORKSPACE = "default"


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
    gap: bool = False
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
        """Matching runs of ``workspace``, newest first; the counts (log lines, metric
        records, artifacts) are left 0: counting costs a scan per run."""

    @abc.abstractmethod
    def get_run(self, run_id: str, workspace: str = DEFAULT_WORKSPACE
                ) -> collector_pb2.RunInfo | None:
        """One run of ``workspace`` with its counts (None: no such run there)."""

    @abc.abstractmethod
    def run_status(self, run_id: str, workspace: str = DEFAULT_WORKSPACE) -> int | None:
        """The run's RunStatus number, or None for a run not in ``workspace`` (cheap:
        followers poll it)."""

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

    @abc.abstractmethod
    def close(self) -> None:
        """Idempotent; closes every connection this thread can reach."""


def _no_tokens(store: Store) -> PermanentError:
    return PermanentError(f"{type(store).__name__} does not keep tokens yet; run the collector "
                          "with auth = \"none\" or use a SQLite store",
                          grpc.StatusCode.FAILED_PRECONDITION)
