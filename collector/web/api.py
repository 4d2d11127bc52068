"""The JSON API under /api/v1/: the Query service's answers as plain JSON values.

Every store call runs on the collector's reader pool (``call``). Times are
nanoseconds since the epoch, as in the Query service; statuses use Azure ML
v1's names. Non-finite numbers travel as the strings "NaN", "Infinity" and
"-Infinity" (JSON has none), except in series arrays, where a NaN is null
(a gap in a chart).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from typing import Any, TypeVar

from mltrail.collector.notify import LogNotifier
from mltrail.collector.store import LogQuery, Store
from mltrail.collector.store.base import every_run
from mltrail.collector.store.series import SeriesBuckets, SeriesPart, SeriesQuery
from mltrail.collector.web import runs_view, series
from mltrail.common.errors import PermanentError, RetryableError
from mltrail.proto import collector_pb2, records_pb2
from mltrail.query.metrics_view import fold_metrics, metric_kind
from mltrail.query.types import STATUS_NAMES, ArtifactInfo, LogLine, RunInfo

T = TypeVar("T")

PAGE_LINES = 2000
MAX_PAGE_LINES = 20_000
FOLLOW_POLL_SECONDS = 0.5
PING_SECONDS = 15.0  # a comment on an idle follow, so a gone browser is noticed


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api:
    def __init__(self, store: Store, readers: Executor, notifier: LogNotifier,
                 closing: Callable[[], bool]) -> None:
        self._store = store
        self._readers = readers
        self._notifier = notifier
        self._closing = closing

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return self._readers.submit(fn, *args).result()
        except RetryableError as exc:
            raise ApiError(503, str(exc)) from None
        except PermanentError as exc:
            raise ApiError(500, str(exc)) from None
        except RuntimeError as exc:  # the pool shut down: the collector is stopping
            raise ApiError(503, f"collector is shutting down ({exc}); retry") from None

    def _run(self, run_id: str, workspace: str) -> collector_pb2.RunInfo:
        """The run if it is in the caller's workspace (another's is not found, as in the
        Query service); every run-scoped read below starts here."""
        info = self.call(self._store.get_run, run_id, workspace)
        if info is None:
            raise ApiError(404, f"run {run_id!r} not found")
        return info

    # ---- runs -----------------------------------------------------------------------------

    def all_runs(self, workspace: str, experiment: str = "") -> list[collector_pb2.RunInfo]:
        """Every run of the workspace (one experiment's if given), page by page."""
        request = collector_pb2.ListRunsRequest(experiment=experiment)
        return self.call(every_run, self._store, request, workspace, runs_view.MAX_RUNS)

    def experiments(self, workspace: str) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for info in self.all_runs(workspace):
            counts[info.experiment] = counts.get(info.experiment, 0) + 1
        return {"experiments": [{"name": n, "runs": c} for n, c in sorted(counts.items())]}

    def runs(self, query: dict[str, list[str]], workspace: str) -> dict[str, Any]:
        try:
            view = runs_view.parse(query)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        infos = self.all_runs(workspace, view.experiment)
        wanted = view.metric_names()
        summaries = (self.call(self._store.metric_summaries, [i.run_id for i in infos])
                     if wanted else {})
        return runs_view.answer(view, infos, summaries)

    def run(self, run_id: str, workspace: str) -> dict[str, Any]:
        info = self._run(run_id, workspace)
        out = run_dict(info, counts=True)
        children = [self.call(self._store.get_run, c, workspace) for c in info.child_run_ids]
        out["children"] = [run_dict(c) for c in children if c is not None]
        return out

    def compare(self, query: dict[str, list[str]], workspace: str) -> dict[str, Any]:
        ids = [i for value in query.get("runs", []) for i in value.split(",") if i]
        if not ids:
            raise ApiError(400, "compare needs runs=ID,ID,...")
        infos = [self._run(run_id, workspace) for run_id in ids]
        summaries = self.call(self._store.metric_summaries, ids)
        runs = []
        for info in infos:
            entry = run_dict(info)
            entry["metrics"] = {name: summary_dict(s)
                                for name, s in sorted(summaries.get(info.run_id, {}).items())}
            runs.append(entry)
        return {"runs": runs}

    # ---- metrics --------------------------------------------------------------------------

    def metrics(self, run_id: str, workspace: str) -> dict[str, Any]:
        self._run(run_id, workspace)
        summaries = self.call(self._store.metric_summaries, [run_id]).get(run_id, {})
        others = self.call(self._store.other_metrics, run_id)
        kinds: dict[str, str] = {}
        for record in others:
            kinds.setdefault(record.metric.name, _kind(record.metric))
        folded = fold_metrics(others)
        out = [{"name": name, "kind": "scalar", **summary_dict(s)}
               for name, s in summaries.items()]
        out += [{"name": name, "kind": kinds[name], "value": value}
                for name, value in folded.items()]
        return {"metrics": sorted(out, key=lambda m: (m["name"], m["kind"]))}

    def series(self, run_id: str, name: str, query: dict[str, list[str]], workspace: str
               ) -> dict[str, Any]:
        self._run(run_id, workspace)
        try:
            wanted = series.parse(query)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        count = series.in_range_count(self.call(_parts, self._store,
                                                wanted.query(run_id, name, 1)))
        if count is None:
            raise ApiError(404, f"run {run_id!r} has no metric {name!r}")
        if count > 2 * wanted.buckets:
            asked = series.buckets_to_ask(count, wanted.buckets)
            sampled = self.call(_parts, self._store, wanted.query(run_id, name, asked))
            buckets = next(p for p in sampled if isinstance(p, SeriesBuckets)).buckets
            return series.buckets_answer(name, buckets, wanted)
        points = self.call(_parts, self._store, wanted.query(run_id, name))
        return series.points_answer(name, points, wanted)

    # ---- logs -----------------------------------------------------------------------------

    def logs(self, run_id: str, query: dict[str, list[str]], workspace: str) -> dict[str, Any]:
        """Lines past ``after`` (stream:line,...) of the chosen streams, merged by time;
        ``q`` keeps the lines containing it (any case). ``next`` is where to page on."""
        self._run(run_id, workspace)
        positions = _positions(query)
        streams = tuple(s for v in query.get("stream", []) for s in v.split(",") if s)
        limit = min(_int(query, "limit", PAGE_LINES), MAX_PAGE_LINES)
        needle = _one(query, "q").lower()
        lines: list[collector_pb2.LogLine] = []
        while len(lines) < limit:
            wanted = PAGE_LINES if needle else min(PAGE_LINES, limit - len(lines))
            page = self.call(self._store.read_logs, LogQuery(
                run_id, streams, 0, 0, wanted, 1024 * 1024, dict(positions)))
            if not page:
                break
            for line in page:
                if needle in line.text.lower():
                    if len(lines) == limit:
                        break  # the next page starts at this line
                    lines.append(line)
                positions[line.stream] = line.line + 1
        lines.sort(key=lambda ln: (ln.time_unix_nano, ln.stream, ln.line))
        return {"lines": [line_dict(ln) for ln in lines], "next": positions,
                "positions": self.call(self._store.log_positions, run_id)}

    def follow(self, run_id: str, query: dict[str, list[str]], workspace: str
               ) -> Generator[tuple[str, Any], None, None]:
        """Events for a live log view: ``lines`` as they are committed, then ``end``."""
        if self.call(self._store.run_status, run_id, workspace) is None:
            raise ApiError(404, f"run {run_id!r} not found")
        return self._follow(run_id, _positions(query), workspace)

    def _follow(self, run_id: str, positions: dict[str, int], workspace: str
                ) -> Generator[tuple[str, Any], None, None]:
        idle = 0.0
        while True:
            version = self._notifier.version(run_id)
            status = self.call(self._store.run_status, run_id, workspace)
            page = self.call(self._store.read_logs, LogQuery(
                run_id, (), 0, 0, PAGE_LINES, 1024 * 1024, dict(positions)))
            if page:
                for line in page:
                    positions[line.stream] = line.line + 1
                page.sort(key=lambda ln: (ln.time_unix_nano, ln.stream, ln.line))
                yield "lines", [line_dict(ln) for ln in page]
                idle = 0.0
                continue
            if status != records_pb2.RUNNING:
                yield "end", {"status": STATUS_NAMES.get(status or 0, "Unknown")}
                return
            if self._closing():
                yield "end", {"status": "Running", "message": "collector is shutting down"}
                return
            if idle >= PING_SECONDS:
                yield "ping", None
                idle = 0.0
            self._notifier.wait_blocking(run_id, version, FOLLOW_POLL_SECONDS)
            idle += FOLLOW_POLL_SECONDS

    # ---- artifacts ------------------------------------------------------------------------

    def artifacts(self, run_id: str, workspace: str) -> dict[str, Any]:
        self._run(run_id, workspace)
        found = self.call(self._store.list_artifacts, run_id)
        return {"artifacts": [vars(ArtifactInfo.from_pb(a)) for a in found]}

    def download(self, run_id: str, path: str, workspace: str
                 ) -> tuple[collector_pb2.ArtifactInfo, Generator[bytes, None, None]]:
        self._run(run_id, workspace)
        info = self.call(self._store.get_artifact, run_id, path)
        if info is None:
            raise ApiError(404, f"artifact {path!r} of run {run_id!r} not found")
        return info, self._store.read_artifact(info, 1024 * 1024)


def _parts(store: Store, query: SeriesQuery) -> list[SeriesPart]:
    return list(store.read_series(query))


def run_dict(info: collector_pb2.RunInfo, counts: bool = False) -> dict[str, Any]:
    out = RunInfo.from_pb(info).to_dict()
    if not counts:
        for key in ("log_lines", "metric_records", "artifacts"):
            out.pop(key)
    return out


def summary_dict(summary: Any) -> dict[str, Any]:
    return {"count": summary.count, "last": summary.latest, "min": summary.min,
            "max": summary.max}


def line_dict(line: collector_pb2.LogLine) -> dict[str, Any]:
    return LogLine.from_pb(line)._asdict()


def _kind(metric: records_pb2.Metric) -> str:
    kind = metric_kind(metric)
    if kind == "json":
        try:
            return str(json.loads(metric.json.json).get("schema_type", "json"))
        except (ValueError, AttributeError):
            return "json"
    return kind


def _positions(query: dict[str, list[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in _one(query, "after").split(","):
        stream, sep, line = part.rpartition(":")
        if not sep:
            continue
        try:
            out[stream] = max(0, int(line))
        except ValueError:
            raise ApiError(400, f"after={part!r}: expected STREAM:LINE") from None
    return out


def _one(query: dict[str, list[str]], key: str) -> str:
    values = query.get(key)
    return values[-1] if values else ""


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    text = _one(query, key)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{key}={text!r}: expected a whole number") from None
    if value <= 0:
        raise ApiError(400, f"{key}={text!r}: must be at least 1")
    return value

