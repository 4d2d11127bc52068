"""A blocking, typed client of the collector's Query service.

Used by the read side of the SDK (``Run.get_metrics``, ``get_details``,
``download_file``, ``wait_for_completion``) and by the ``mltrail`` read
commands. gRPC errors never leak out: they become the project's own
``CollectorUnreachable`` (retryable), ``RunNotFound`` / ``ArtifactNotFound``
(permanent) or a ``QueryFailed`` naming the collector.

``tail_logs(follow=True)`` returns a ``LogTail``: iterate it for lines until
the server says the run ended, then read ``tail.run_status``. If the
connection drops while following, the tail reconnects from the next line it
has not yet yielded (per stream), so no line is shown twice or skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from mltrail.common.credentials import (
    ClientSecurity,
    authorized_channel,
    refusal_hint,
    tls_failure_hint,
)
from mltrail.common.errors import MltrailError, PermanentError, RetryableError
from mltrail.common.rpc import MESSAGE_LIMITS
from mltrail.common.settings import mltrail_home
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2
from mltrail.query.metrics_view import fold_series, page_records
from mltrail.query.types import (
    STATUS_NAMES,
    TERMINAL_STATUSES,
    ArtifactInfo,
    LogLine,
    RunError,
    RunInfo,
    status_name,
    status_number,
)

__all__ = [
    "STATUS_NAMES", "TERMINAL_STATUSES", "ArtifactCorrupt", "ArtifactInfo", "ArtifactNotFound",
    "CollectorUnreachable", "LogLine", "LogTail", "QueryClient", "QueryFailed", "RunError",
    "RunInfo", "RunNotFound", "mltrail_home", "resolve_collector_address", "status_name",
    "status_number",
]

DEFAULT_COLLECTOR = "127.0.0.1:7431"
RUN_PAGE = 500


class CollectorUnreachable(RetryableError):
    """No collector answers at the address (down, wrong address, too slow)."""


class RunNotFound(PermanentError):
    """The collector has no run with this id."""

    code = grpc.StatusCode.NOT_FOUND


class ArtifactNotFound(PermanentError):
    """The run has no artifact at this path."""

    code = grpc.StatusCode.NOT_FOUND


class QueryFailed(PermanentError):
    """The collector refused a query for another reason (its message is kept)."""


class ArtifactCorrupt(RetryableError):
    """A downloaded artifact's size or sha256 differs from what the collector stored."""


# ---- addresses ----------------------------------------------------------------


def resolve_collector_address(flag: str | None = None) -> str:
    """The collector to ask: ``--collector``, else ``MLTRAIL_COLLECTOR``, else the
    embedded collector's ready file (``$MLTRAIL_HOME/embedded/collector.json``),
    else ``127.0.0.1:7431``."""
    return _resolve(flag)[0]


def _resolve(flag: str | None) -> tuple[str, str]:
    """The address and where it came from (said when it cannot be reached)."""
    if flag:
        return flag, "--collector"
    env = os.environ.get("MLTRAIL_COLLECTOR")
    if env:
        return env, "MLTRAIL_COLLECTOR"
    ready = _embedded_file()
    embedded = _embedded_address(ready)
    if embedded:
        return embedded, str(ready)
    return DEFAULT_COLLECTOR, "the default"


def _embedded_file() -> Path:
    return mltrail_home() / "embedded" / "collector.json"


def _embedded_address(ready: Path) -> str | None:
    try:
        info = json.loads(ready.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # no embedded collector has run here, or its file is half-written
    address = info.get("grpc") if isinstance(info, dict) else None
    return address if isinstance(address, str) and address else None


# ---- conditions ----------------------------------------------------------------------

_CONDITION = re.compile(r"\s*(?P<key>[^<>=!]+?)\s*(?P<op>==|!=|<=|>=|=|<|>)\s*(?P<value>.*?)\s*")


def parse_condition(text: str) -> collector_pb2.RunCondition:
    """``"accuracy > 0.9"`` -> RunCondition(key, op, value); quotes around the value go."""
    found = _CONDITION.fullmatch(text)
    if not found or not found["value"]:
        raise ValueError(f"condition {text!r} is not KEY OP VALUE (for example "
                         "'accuracy > 0.9' or 'tags.team = vision'; OP is one of "
                         "= != < <= > >=)")
    value = found["value"]
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return collector_pb2.RunCondition(key=found["key"], op=found["op"], value=value)


# ---- errors at the boundary ---------------------------------------------------------


def _unreachable_reason(details: str) -> str:
    lowered = details.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("deadline", "no answer in time"),
        ("name resolution", "unknown host"),
        ("lookup", "unknown host"),
        ("dns", "unknown host"),
        ("timed out", "connection timed out"),
        ("unreachable", "network unreachable"),
        ("socket closed", "the connection was closed: if the collector serves TLS, use "
                          "https://HOST:PORT or --tls"),
    ):
        if needle in lowered:
            return reason
    return details.strip().splitlines()[0] if details.strip() else "unavailable"


@dataclass
class _ErrorMapper:
    """Turns an RpcError from one call into the project's error for that call."""

    address: str
    run_id: str = ""
    source: str = "--collector"  # where the address came from
    tls: bool = False

    def __call__(self, err: grpc.RpcError) -> MltrailError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = (err.details() if hasattr(err, "details") else "") or ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return QueryFailed(f"the collector at {self.address} refused: {details}; "
                               f"{refusal_hint(code)}", code=code)
        tls = tls_failure_hint(details) if code is grpc.StatusCode.UNAVAILABLE else None
        if tls is not None and self.tls:
            return CollectorUnreachable(f"cannot connect to the collector at {self.address}: "
                                        f"{tls}", code=code)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return CollectorUnreachable(
                f"cannot reach the collector at {self.address} ({self._why(details)}); "
                f"{self._hint()}", code=code)
        if code == grpc.StatusCode.NOT_FOUND:
            flag = f" --collector {self.address}" if self.source == "--collector" else ""
            return RunNotFound(
                f"run {self.run_id!r} not found at collector {self.address}; "
                f"list runs with `mltrail runs{flag}`")
        message = f"the query to the collector at {self.address} failed: {code.name}: {details}"
        if code in (grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return RetryableError(message, code=code)
        return QueryFailed(message, code=code)

    def _hint(self) -> str:
        if self.source == "local":
            return "see `mltrail local status` and `mltrail local logs collector`"
        if self.source in ("--collector", "MLTRAIL_COLLECTOR"):
            return (f"check the address, or start a collector there with `mltrail collector "
                    f"--grpc {self.address}`; without --collector and MLTRAIL_COLLECTOR the "
                    "local collector is used")
        return "start the local collector with `mltrail local start`, or set MLTRAIL_COLLECTOR"

    def _why(self, details: str) -> str:
        reason = _unreachable_reason(details)
        if self.source in ("--collector", "local"):
            return reason
        if self.source == "the default":
            return f"{reason}; the default address"
        return f"{reason}; address from {self.source}"


# ---- the client -------------------------------------------------------------------------


class QueryClient:
    """Blocking client of ``mltrail.v1.Query``. Thread-safe (one gRPC channel).

    ``close()`` (or leaving a ``with`` block) closes the channel; a later call
    opens a new one, so one client may serve several ``with`` blocks."""

    def __init__(self, address: str | None = None, timeout: float = 10.0,
                 security: ClientSecurity | None = None, source: str | None = None) -> None:
        """``security`` None: the token and TLS options from the environment
        (MLTRAIL_TOKEN, MLTRAIL_TOKEN_FILE, MLTRAIL_TLS_CA, ...). ``source`` says where
        ``address`` came from, for errors (default: resolved here from the flag,
        MLTRAIL_COLLECTOR or the embedded ready file)."""
        self.address, self._source = (address, source) if address and source else _resolve(
            address)
        self.timeout = timeout
        self.security = security if security is not None else ClientSecurity.from_environment()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._query_stub: collector_pb2_grpc.QueryStub | None = None

    @property
    def _stub(self) -> collector_pb2_grpc.QueryStub:
        with self._lock:
            if self._query_stub is None:
                self._channel = authorized_channel(self.address, self.security, options=[
                    *MESSAGE_LIMITS,
                    # A follow reconnects after a collector restart: retry the
                    # connection within seconds, not gRPC's default of up to 2 minutes.
                    ("grpc.initial_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 3000),
                ])
                self._query_stub = collector_pb2_grpc.QueryStub(self._channel)
            return self._query_stub

    def close(self) -> None:
        with self._lock:
            channel, self._channel, self._query_stub = self._channel, None, None
        if channel is not None:
            channel.close()

    def __enter__(self) -> QueryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _errors(self, run_id: str = "") -> _ErrorMapper:
        return _ErrorMapper(self.address, run_id, self._source,
                            self.security.uses_tls(self.address))

    def _unary(self, method: Any, request: Any, mapper: _ErrorMapper) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise mapper(err) from None

    # -- runs -----------------------------------------------------------------

    def list_runs(self, experiment: str | None = None, status: str | int | None = None,
                  tags: Mapping[str, str] | None = None, limit: int = 100,
                  parent_run_id: str | None = None, where: Iterable[str] = (),
                  order_by: str = "", columns: Iterable[str] = ()) -> list[RunInfo]:
        """Runs matching every filter given; a tag value "" matches any value.

        ``where``: conditions such as ``"accuracy > 0.9"`` or ``"tags.team = vision"``
        over the latest value of each metric, tags and properties; ``order_by``: such a
        key, ``-`` first for descending; ``columns``: metrics whose latest, min and max
        to fill in ``RunInfo.metrics`` (those in ``where`` and ``order_by`` come too).
        At most ``limit`` runs (0: every one), read a page at a time."""
        request = collector_pb2.ListRunsRequest(
            experiment=experiment or "", parent_run_id=parent_run_id or "",
            status=status_number(status) if status is not None else 0, tags=dict(tags or {}),
            where=[parse_condition(c) for c in where], order_by=order_by,
            columns=list(columns),
        )
        runs: list[RunInfo] = []
        while True:
            request.limit = min(limit - len(runs), RUN_PAGE) if limit > 0 else RUN_PAGE
            response = self._unary(self._stub.ListRuns, request, self._errors())
            runs.extend(RunInfo.from_pb(r) for r in response.runs)
            if not response.next_page_token or 0 < limit <= len(runs):
                return runs
            request.page_token = response.next_page_token

    def get_run(self, run_id: str, counts: bool = True) -> RunInfo:
        """The run; ``counts=False`` leaves its counts and metric summaries out (cheap)."""
        request = collector_pb2.GetRunRequest(run_id=run_id, without_counts=not counts)
        return RunInfo.from_pb(self._unary(self._stub.GetRun, request, self._errors(run_id)))

    def read_series(self, run_id: str, name: str | None = None, *,
                    step_min: int | None = None, step_max: int | None = None,
                    time_min: int | None = None, time_max: int | None = None,
                    buckets: int = 0, values_only: bool = False
                    ) -> Iterator[collector_pb2.ReadSeriesResponse]:
        """ReadSeries pages as they arrive (packed points, other records, or buckets):
        a series of any length, never whole in memory here or in the collector. The
        stream has no overall deadline (a long series takes long); a collector that is
        down fails at once. ``values_only``: pages may leave steps and times out (what
        ``get_metrics`` and ``--json`` need), so long series decode and travel faster."""
        request = collector_pb2.ReadSeriesRequest(run_id=run_id, name=name or "",
                                                  buckets=buckets, values_only=values_only)
        for field_name, value in (("step_min", step_min), ("step_max", step_max),
                                  ("time_min_unix_nano", time_min),
                                  ("time_max_unix_nano", time_max)):
            if value is not None:
                setattr(request, field_name, value)
        mapper = self._errors(run_id)
        try:
            yield from self._stub.ReadSeries(request)
        except grpc.RpcError as err:
            raise mapper(err) from None

    def metric_records(self, run_id: str, name: str | None = None
                       ) -> Iterator[collector_pb2.MetricRecord]:
        """The raw records, by name then in logged order (for steps and times), streamed."""
        for page in self.read_series(run_id, name):
            yield from page_records(page)

    def get_metric_records(self, run_id: str, name: str | None = None
                           ) -> list[collector_pb2.MetricRecord]:
        """``metric_records`` as a list (a record object per value: for short series)."""
        return list(self.metric_records(run_id, name))

    def get_metrics(self, run_id: str, name: str | None = None) -> dict[str, Any]:
        """Metrics in the shape of Azure ML v1 ``Run.get_metrics()``, from packed pages."""
        return fold_series(self.read_series(run_id, name, values_only=True))

    # -- changes (mltrail cancel, rename, tag, delete) --------------------------

    def write_run_events(self, run_id: str, events: Iterable[records_pb2.RunEvent]) -> None:
        """Record ``events`` for the run through Ingest (a stream of their own), once
        the collector committed them."""
        stamp = time.time_ns()
        records = [records_pb2.Record(seq=n, time_unix_nano=stamp, run_id=run_id, run_event=e)
                   for n, e in enumerate(events, 1)]
        request = collector_pb2.IngestRequest(request_id=1, batches=[records_pb2.Batch(
            stream_id=f"cli-{uuid.uuid4().hex}", records=records)])
        _ = self._stub  # opens the channel
        assert self._channel is not None
        write = self._channel.stream_stream(
            "/mltrail.v1.Ingest/Write",
            request_serializer=collector_pb2.IngestRequest.SerializeToString,
            response_deserializer=collector_pb2.IngestResponse.FromString)
        try:
            responses = list(write(iter([request]), timeout=self.timeout))
        except grpc.RpcError as err:
            raise self._errors(run_id)(err) from None
        result = responses[0].results[0] if responses and responses[0].results else None
        if result is None or result.code != 0:
            raise QueryFailed(f"the collector at {self.address} refused the change to run "
                              f"{run_id!r}: {result.message if result else 'no answer'}")

    def delete_runs(self, run_ids: Iterable[str]) -> collector_pb2.DeleteRunsResponse:
        _ = self._stub  # opens the channel
        assert self._channel is not None
        manage = collector_pb2_grpc.ManageStub(self._channel)
        request = collector_pb2.DeleteRunsRequest(run_ids=list(run_ids))
        return self._unary(manage.DeleteRuns, request, self._errors())

    # -- logs -----------------------------------------------------------------

    def tail_logs(self, run_id: str, streams: Iterable[str] = (), from_line: int = 0,
                  follow: bool = False, to_line: int = 0) -> LogTail:
        """Log lines of a run: per stream in order, from ``from_line``. With
        ``follow`` the iterator waits for new lines until the run ends."""
        return LogTail(self, run_id, list(streams), from_line, to_line, follow)

    def _open_tail(self, request: collector_pb2.TailLogsRequest) -> Any:
        # No deadline on streams: a long log or a long run is not a failure.
        # A collector that is down still fails at once (connection refused).
        return self._stub.TailLogs(request, timeout=None)

    # -- artifacts --------------------------------------------------------------

    def list_artifacts(self, run_id: str) -> list[ArtifactInfo]:
        """Every artifact of the run by path, read a page at a time."""
        request = collector_pb2.ListArtifactsRequest(run_id=run_id)
        found: list[ArtifactInfo] = []
        while True:
            response = self._unary(self._stub.ListArtifacts, request, self._errors(run_id))
            found.extend(ArtifactInfo.from_pb(a) for a in response.artifacts)
            if not response.next_page_token:
                return found
            request.page_token = response.next_page_token

    def download_artifact(self, run_id: str, path: str, dest: str | os.PathLike[str],
                          on_data: Callable[[ArtifactInfo, int], None] | None = None
                          ) -> ArtifactInfo:
        """Write artifact ``path`` to ``dest`` (a file, or an existing directory
        to put it in). Written to a temporary file, checked against the stored
        size and sha256, then renamed: ``dest`` is never left half-written."""
        target = Path(dest)
        if target.is_dir():
            target = target / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            info = self._fetch_artifact(run_id, path, tmp, on_data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return info

    def _fetch_artifact(self, run_id: str, path: str, tmp: Path,
                        on_data: Callable[[ArtifactInfo, int], None] | None = None
                        ) -> ArtifactInfo:
        """``on_data(info, n)`` after each piece of ``n`` bytes (progress)."""
        request = collector_pb2.DownloadArtifactRequest(run_id=run_id, path=path)
        digest, size, info = hashlib.sha256(), 0, None
        try:
            with open(tmp, "wb") as fh:
                for part in self._stub.DownloadArtifact(request, timeout=None):
                    if info is None and part.HasField("info"):
                        info = ArtifactInfo.from_pb(part.info)
                    fh.write(part.data)
                    digest.update(part.data)
                    size += len(part.data)
                    if on_data is not None and info is not None:
                        on_data(info, len(part.data))
                fh.flush()
                os.fsync(fh.fileno())
        except grpc.RpcError as err:
            raise self._artifact_error(self._errors(run_id)(err), run_id, path) from None
        if info is None:
            raise self._artifact_error(RunNotFound(""), run_id, path)
        _check_artifact(info, size, digest.hexdigest(), self.address)
        return info

    # -- support bundles ----------------------------------------------------------

    def download_run_bundle(self, run_id: str, dest: str | os.PathLike[str], *,
                            with_artifacts: bool = False, max_bytes: int = 0,
                            redact: Iterable[str] = (),
                            requested_by: Mapping[str, str] | None = None) -> Path:
        """The run's support bundle, built by the collector, written to ``dest`` (a zip;
        a temporary file renamed at the end, so ``dest`` is never half-written)."""
        target = Path(dest)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        request = collector_pb2.RunBundleRequest(
            run_id=run_id, with_artifacts=with_artifacts, max_bytes=max(0, max_bytes),
            redact=list(redact), requested_by=dict(requested_by or {}))
        try:
            with open(tmp, "wb") as fh:
                for chunk in self._stub.GetRunBundle(request, timeout=None):
                    fh.write(chunk.data)
            os.replace(tmp, target)
        except grpc.RpcError as err:
            raise self._errors(run_id)(err) from None
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def _artifact_error(self, error: MltrailError, run_id: str, path: str) -> MltrailError:
        """NOT_FOUND on a download means the run or the artifact: ask which."""
        if not isinstance(error, RunNotFound):
            return error
        self.get_run(run_id)  # raises RunNotFound when it is the run that is missing
        return ArtifactNotFound(
            f"run {run_id!r} has no artifact {path!r} at collector {self.address}; "
            f"list them with `mltrail artifacts {run_id}`")


def _check_artifact(info: ArtifactInfo, size: int, sha256: str, address: str) -> None:
    if size != info.size or (info.sha256 and sha256 != info.sha256.lower()):
        raise ArtifactCorrupt(
            f"artifact {info.path!r} from the collector at {address} arrived damaged "
            f"({size} bytes, sha256 {sha256[:12]}; expected {info.size} bytes, sha256 "
            f"{info.sha256[:12]}); nothing was written; try the download again")


@dataclass
class LogTail:
    """An iterator of ``LogLine``; ``run_status`` is set once the server ends a follow.

    Positions: ``next_line[stream]`` is the first line of ``stream`` not yet
    yielded. A reconnect asks from the smallest of them when every wanted stream
    was named and seen, else from ``from_line``; lines before ``next_line`` are
    skipped, so nothing is yielded twice.
    """

    client: QueryClient
    run_id: str
    streams: list[str]
    from_line: int
    to_line: int
    follow: bool
    run_status: str | None = None
    reconnect_for: float = 30.0  # seconds a follow keeps retrying a lost collector
    on_reconnect: Callable[[MltrailError], None] | None = None  # told once per outage
    next_line: dict[str, int] = field(default_factory=dict)
    _call: Any = None
    _closed: bool = False

    def __iter__(self) -> Iterator[LogLine]:
        for lines in self.batches():
            yield from lines

    def batches(self) -> Iterator[list[LogLine]]:
        """Lines as the server sends them, several at a time (cheaper to print)."""
        failing_since: float | None = None
        while not self._closed:
            try:
                for lines in self._one_call():
                    failing_since = None
                    yield lines
                return
            except grpc.RpcError as err:
                if self._closed:
                    return  # close() cancelled the call
                error = self.client._errors(self.run_id)(err)
                failing_since = self._may_reconnect(error, failing_since)

    def _one_call(self) -> Iterator[list[LogLine]]:
        start = self._resume_line()
        self._call = self.client._open_tail(collector_pb2.TailLogsRequest(
            run_id=self.run_id, streams=self.streams, from_line=start,
            to_line=self.to_line, follow=self.follow))
        for response in self._call:
            lines = [LogLine.from_pb(pb) for pb in response.lines if self._is_new(pb)]
            if lines:
                yield lines
            if response.end:
                self.run_status = status_name(response.run_status)
                return
        if self.follow and not self._closed:
            # The server closed a follow without `end`: it was stopped; ask again.
            raise _StreamCut()

    def _is_new(self, pb: collector_pb2.LogLine) -> bool:
        if pb.line < self.next_line.get(pb.stream, self.from_line):
            return False  # already yielded before a reconnect
        self.next_line[pb.stream] = pb.line + 1
        return True

    def _resume_line(self) -> int:
        # Only when every wanted stream was seen is it safe to skip ahead: with
        # "every stream", one not seen yet may still have lines from from_line.
        if self.streams and all(s in self.next_line for s in self.streams):
            return min(self.next_line[s] for s in self.streams)
        return self.from_line

    def _may_reconnect(self, error: MltrailError, failing_since: float | None) -> float:
        now = time.monotonic()
        if not (self.follow and isinstance(error, RetryableError)) or self._closed:
            raise error
        since = failing_since if failing_since is not None else now
        if now - since > self.reconnect_for:
            raise error
        if failing_since is None and self.on_reconnect is not None:
            self.on_reconnect(error)
        time.sleep(min(1.0, 0.1 + (now - since) / 4))
        return since

    def close(self) -> None:
        """Stop reading; a blocked follow returns at once."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> LogTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StreamCut(grpc.RpcError):
    """A follow stream that ended without the server's `end`: treated as UNAVAILABLE."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "the collector closed the log stream before the run ended"
