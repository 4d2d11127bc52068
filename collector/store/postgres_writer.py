"""The PostgreSQL write path: one transaction per ``write_batch``, safe across replicas.

Per transaction, in this order (every lock in a fixed order, so two replicas
writing overlapping streams wait for each other instead of deadlocking):

    1. streams:   insert the request's (workspace, stream id) pairs that are new
                  (sorted), then SELECT ... ORDER BY workspace, stream_id
                  FOR UPDATE: every high-water mark of the request is locked
                  until commit, so a replica that receives the same batch
                  waits, then sees it as a duplicate (never check-then-insert)
    2. per batch: skip what is at or below the mark; gather metric rows and log
                  pieces in memory; run events and artifact chunks are written
                  at once, inside a savepoint when the batch has such records
                  (an artifact that does not verify rolls back that batch only)
    3. flush:     series and log streams (postgres_flush.py) locked in key
                  order; each series' and log stream's open chunk extended
                  in place (series_tail.py), new chunks by COPY; ended runs'
                  open chunks compressed; lines numbered; the new marks; pg_notify per log
                  stream and ended run for followers on every replica

A record for a run of another workspace raises ``ForeignRun`` (as in SQLite):
its batch is refused as ``denied`` (a batch that may create runs is written
inside a savepoint, so it leaves nothing), and so is every later batch of its
stream in the request, whose mark must not pass the refused records.

Cached between calls: run_id -> (run_key, workspace) and metric name ->
name_key (they never change once committed; dropped whenever a transaction
or a batch's savepoint rolls back).
Line numbers are never cached: another replica may have added lines.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mltrail.collector.artifacts import ArtifactStore, contiguous
from mltrail.collector.store.base import (
    DEFAULT_WORKSPACE,
    BatchOutcome,
    ScalarRun,
    ValidBatch,
    WriteSummary,
    corrects_inferred_end,
)
from mltrail.collector.store.chunks import Points
from mltrail.collector.store.postgres_flush import (
    NOTIFY_CHANNEL,
    LogLines,
    SeriesPiece,
    flush_logs,
    flush_series,
)
from mltrail.collector.store.sqlite_chunks import LogPiece
from mltrail.collector.store.sqlite_writer import (
    _TERMINAL,
    DISPLAY_NAME_TAG,
    ForeignRun,
    _line_times,
    _seq_of,
)
from mltrail.common.errors import PermanentError
from mltrail.common.lines import MAX_LINE_BYTES, split_long_lines
from mltrail.proto import records_pb2


def clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL: it is kept as U+FFFD, like undecodable bytes."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


@dataclass
class _Work:
    """Rows gathered for one batch (then merged into the transaction's)."""

    hwm: int = 0
    gaps: int = 0
    series: dict[tuple[int, int], list[SeriesPiece]] = field(default_factory=dict)
    logs: list[LogLines] = field(default_factory=list)
    latest: dict[tuple[str, str], float] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    log_runs: dict[int, str] = field(default_factory=dict)  # run_key -> run_id
    ended_runs: set[str] = field(default_factory=set)
    ended_keys: set[int] = field(default_factory=set)  # their series' open chunks close


class PostgresWriter:
    def __init__(self, artifacts: ArtifactStore) -> None:
        self._artifacts = artifacts
        self._runs: dict[str, tuple[int, str]] = {}
        self._names: dict[str, int] = {}
        self._conn: Any = None
        self._stream_id = ""
        self._workspace = DEFAULT_WORKSPACE  # of the batch being written
        self._handlers: dict[str, Callable[[records_pb2.Record, _Work], None]] = {
            "metric": self._metric,
            "log": self._log,
            "run_event": self._run_event,
            "artifact": self._artifact,
            "gap": self._gap,
        }
        self._touched: set[int] = set()  # run keys written by this transaction

    def write(self, conn: Any, batches: Sequence[ValidBatch]) -> WriteSummary:
        """Everything of one request in ``conn``'s open transaction (the caller commits)."""
        self._conn = conn
        summary = WriteSummary()
        total = _Work()
        try:
            marks = self._lock_streams(sorted({(batch.workspace, batch.stream_id)
                                               for batch in batches}))
            changed: dict[tuple[str, str], int] = {}
            denied: dict[tuple[str, str], str] = {}
            for batch in batches:
                key = (batch.workspace, batch.stream_id)
                if key in denied:
                    outcome = BatchOutcome(batch.stream_id, error=denied[key], denied=True)
                else:
                    outcome = self._write_batch(batch, marks[key], total)
                if outcome.denied:
                    denied[key] = outcome.error or ""
                if outcome.stored:
                    changed[key] = marks[key] = outcome.acked_seq
                summary.outcomes.append(outcome)
            self._flush(total, changed)
            self._summarise(total, summary)
        except BaseException:
            self.forget()
            raise
        finally:
            self._touched.clear()
            self._conn = None
        return summary

    def forget(self) -> None:
        """Caches may hold rows a rollback undid; they refill from the database."""
        self._runs.clear()
        self._names.clear()

    def _lock_streams(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Every (workspace, stream id) mark of the request, created if new and locked in
        key order (byte order, the same on every replica) until commit."""
        conn = self._conn
        params = ([clean(w) for w, _ in keys], [clean(s) for _, s in keys])
        pairs = "unnest(%s::text[], %s::text[]) AS u(w, s)"
        conn.execute(f"INSERT INTO streams (workspace, stream_id, hwm) SELECT u.w, u.s, 0 "
                     f"FROM {pairs} ORDER BY u.w COLLATE \"C\", u.s COLLATE \"C\" "
                     "ON CONFLICT (workspace, stream_id) DO NOTHING", params)
        rows = conn.execute(f"SELECT t.workspace, t.stream_id, t.hwm FROM streams t JOIN {pairs} "
                            "ON t.workspace = u.w AND t.stream_id = u.s ORDER BY t.workspace "
                            "COLLATE \"C\", t.stream_id COLLATE \"C\" FOR UPDATE OF t",
                            params).fetchall()
        found = {(w, s): int(hwm) for w, s, hwm in rows}
        return {key: found[(clean(key[0]), clean(key[1]))] for key in keys}

    # ---- one batch ----------------------------------------------------------

    def _write_batch(self, batch: ValidBatch, hwm: int, total: _Work) -> BatchOutcome:
        outcome = BatchOutcome(batch.stream_id, acked_seq=max(hwm, 0))
        skip = min(max(hwm - batch.first_seq + 1, 0), batch.count)
        outcome.duplicates = skip
        if skip == batch.count:
            return outcome
        if batch.first_seq > hwm + 1:  # a hole: never committed silently (invariant 3)
            outcome.expected_seq = hwm + 1
            return outcome
        self._stream_id = batch.stream_id
        self._workspace = batch.workspace
        work = _Work()
        work = _Work(hwm=hwm)
        try:
            # run events, artifacts and new runs write now: a savepoint guards them
            if batch.others or self._new_runs(batch.scalars):
                with self._conn.transaction():
                    self._gather(batch, hwm, work)
            else:
                self._gather(batch, hwm, work)
        except PermanentError as exc:
            self.forget()
            return BatchOutcome(batch.stream_id, acked_seq=hwm, error=str(exc),
                                denied=isinstance(exc, ForeignRun))
        outcome.acked_seq = batch.last_seq
        outcome.stored = batch.count - skip
        outcome.kinds = work.kinds
        outcome.gap = work.gaps > 0
        _merge(work, total)
        return outcome

    def _new_runs(self, runs: Sequence[ScalarRun]) -> bool:
        """Whether a run of points names a run not cached as one of this batch's
        workspace."""
        cached, workspace = self._runs, self._workspace
        for run in runs:
            entry = cached.get(run.run_id)
            if entry is None or entry[1] != workspace:
                return True
        return False

    def _gather(self, batch: ValidBatch, hwm: int, work: _Work) -> None:
        scalars, others = batch.scalars, batch.others
        stored = 0
        if scalars and any(rec.WhichOneof("body") == "metric" for rec in others):
            for item in heapq.merge(scalars, others, key=_seq_of):  # invariant 6
                if isinstance(item, ScalarRun):
                    stored += self._scalar_rows((item,), hwm, work)
                else:
                    self._other_rows(item, hwm, work)
        else:
            for rec in others:
                self._other_rows(rec, hwm, work)
            stored = self._scalar_rows(scalars, hwm, work)
        if stored:
            work.kinds["metric"] = work.kinds.get("metric", 0) + stored

    def _other_rows(self, rec: records_pb2.Record, hwm: int, work: _Work) -> None:
        if rec.seq <= hwm and not (rec.HasField("gap") and rec.gap.last_seq > hwm):
            return
        kind = rec.WhichOneof("body")
        handler = self._handlers.get(kind) if kind else None
        if handler is None:
            raise PermanentError(f"record seq {rec.seq}: unknown record kind {kind!r}")
        handler(rec, work)
        work.kinds[kind] = work.kinds.get(kind, 0) + 1

    def _scalar_rows(self, runs: Sequence[ScalarRun], hwm: int, work: _Work) -> int:
        """Gather the points above ``hwm`` per series: a few lookups per run of points."""
        series, latest, touched = work.series, work.latest, self._touched
        stored = 0
        for run in runs:
            above = run.above(hwm)
            if above is None:
                continue
            points = above.points
            entry = self._runs.get(run.run_id)
            key = (entry[0] if entry and entry[1] == self._workspace
                   else self._run_key(run.run_id, points.times[0]),
                   self._names.get(run.name) or self._name_key(run.name))
            _open_points(series.setdefault(key, [])).extend(points)  # a copy: see sqlite
            touched.add(key[0])
            stored += len(points)
            value = above.latest()
            if value is not None:
                latest[(run.run_id, run.name)] = value
        return stored

    # ---- keys ---------------------------------------------------------------

    def _run_key(self, run_id: str, time_ns: int) -> int:
        """The run's key; a new run is created in the batch's workspace; ForeignRun if
        the run exists in another."""
        entry = self._runs.get(run_id)
        if entry is None:
            conn = self._conn
            row = conn.execute("INSERT INTO runs (run_id, status, start_time, workspace) "
                               "VALUES (%s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING "
                               "RETURNING run_key, workspace",
                               (clean(run_id), records_pb2.RUNNING, time_ns,
                                clean(self._workspace))).fetchone()
            if row is None:  # a concurrent insert waits for the other's commit, lands here
                row = conn.execute("SELECT run_key, workspace FROM runs WHERE run_id = %s",
                                   (clean(run_id),)).fetchone()
            entry = self._runs[run_id] = (int(row[0]), str(row[1]))
        if entry[1] != clean(self._workspace):
            raise ForeignRun(f"run {run_id!r} belongs to another workspace than this token's "
                             f"({self._workspace!r}); send it with a writer token of the "
                             "run's workspace")
        self._touched.add(entry[0])
        return entry[0]

    def _gap(self, rec: records_pb2.Record, work: _Work) -> None:
        """The explanation of a hole; only its part above the mark, if it overlaps it."""
        gap = rec.gap
        self._conn.execute(
            "INSERT INTO stream_gaps VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT "
            "(workspace, stream_id, first_seq) DO UPDATE SET last_seq = excluded.last_seq, "
            "records = excluded.records, reason = excluded.reason, time = excluded.time",
            (clean(self._workspace), clean(self._stream_id), max(rec.seq, work.hwm + 1),
             gap.last_seq, gap.records, clean(gap.reason), rec.time_unix_nano))
        work.gaps += 1

    def _name_key(self, name: str) -> int:
        key = self._names.get(name)
        if key is not None:
            return key
        conn = self._conn
        row = conn.execute("INSERT INTO metric_names (name) VALUES (%s) ON CONFLICT (name) "
                           "DO NOTHING RETURNING name_key", (clean(name),)).fetchone()
        if row is None:
            row = conn.execute("SELECT name_key FROM metric_names WHERE name = %s",
                               (clean(name),)).fetchone()
        self._names[name] = int(row[0])
        return int(row[0])

    # ---- handlers, one per record body kind -----------------------------------

    def _metric(self, rec: records_pb2.Record, work: _Work) -> None:
        """The rare kinds (and scalars with a description): kept as the encoded Metric."""
        key = (self._run_key(rec.run_id, rec.time_unix_nano), self._name_key(rec.metric.name))
        work.series.setdefault(key, []).append((rec.time_unix_nano,
                                                rec.metric.SerializeToString()))

    def _log(self, rec: records_pb2.Record, work: _Work) -> None:
        chunk = rec.log
        if not chunk.data:
            return
        data, splits = split_long_lines(chunk.data, MAX_LINE_BYTES)
        text = data.decode("utf-8", errors="replace")
        if text.endswith("\n"):
            text = text[:-1]
        times = _line_times(chunk, splits)
        first_time, last_time = (times[0], times[-1]) if times else (rec.time_unix_nano,) * 2
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        work.logs.append(LogLines(run_key, clean(chunk.stream), LogPiece(
            text.count("\n") + 1, first_time, last_time, text, times, clean(chunk.level),
            clean(chunk.logger))))
        work.log_runs[run_key] = rec.run_id

    def _run_event(self, rec: records_pb2.Record, work: _Work) -> None:
        event = rec.run_event
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        kind = event.WhichOneof("event")
        if kind == "started":
            started = rec.run_event.started
            # A registered run (Experiment.submit) is NotStarted until its launcher's
            # start; that start keeps what it leaves empty, and never revives an ended run.
            status = (records_pb2.RUN_STATUS_UNSPECIFIED if started.registered
                      else records_pb2.RUNNING)
            self._conn.execute(
                "UPDATE runs SET experiment = COALESCE(NULLIF(%s, ''), experiment), "
                "display_name = COALESCE(NULLIF(%s, ''), display_name), "
                "parent_run_id = COALESCE(NULLIF(%s, ''), parent_run_id), "
                "run_type = COALESCE(NULLIF(%s, ''), run_type), start_time = %s, "
                f"status = CASE WHEN status IN {_TERMINAL} THEN status ELSE %s END "
                "WHERE run_key = %s",
                (clean(started.experiment), clean(started.display_name),
                 clean(started.parent_run_id), clean(started.run_type), rec.time_unix_nano,
                 status, run_key))
            self._tags(run_key, started.tags)
            self._properties(run_key, started.properties)
        elif kind == "tags":
            tags = dict(event.tags.tags)
            name = tags.pop(DISPLAY_NAME_TAG, None)
            if name is not None:
                self._conn.execute("UPDATE runs SET display_name = %s WHERE run_key = %s",
                                   (clean(name), run_key))
            self._tags(run_key, tags)
            if event.tags.removed:
                self._conn.execute("DELETE FROM run_tags WHERE run_key = %s AND key = "
                                   "ANY(%s)", (run_key, [clean(k) for k in event.tags.removed]))
        elif kind == "properties":
            self._properties(run_key, event.properties.properties)
        elif kind == "ended":
            ended = event.ended
            error = ended.error.SerializeToString() if ended.HasField("error") else None
            values = (ended.status, rec.time_unix_nano, error, run_key)
            if self._conn.execute("UPDATE runs SET status = %s, end_time = %s, error = %s "
                                  f"WHERE run_key = %s AND status NOT IN {_TERMINAL}",
                                  values).rowcount == 0:
                row = self._conn.execute("SELECT error FROM runs WHERE run_key = %s",
                                         (run_key,)).fetchone()
                if row is not None and corrects_inferred_end(
                        bytes(row[0]) if row[0] is not None else None, ended):
                    self._conn.execute("UPDATE runs SET status = %s, end_time = %s, "
                                       "error = %s WHERE run_key = %s", values)
            work.ended_runs.add(rec.run_id)
            work.ended_keys.add(run_key)
        else:
            raise PermanentError(f"record seq {rec.seq}: unknown run event {kind!r}")

    def _tags(self, run_key: int, tags: Any) -> None:
        if tags:
            self._conn.cursor().executemany(
                "INSERT INTO run_tags VALUES (%s, %s, %s) ON CONFLICT (run_key, key) "
                "DO UPDATE SET value = excluded.value",
                [(run_key, clean(k), clean(v)) for k, v in sorted(tags.items())])

    def _properties(self, run_key: int, properties: Any) -> None:
        if properties:  # add-only: the first value stays
            self._conn.cursor().executemany(
                "INSERT INTO run_properties VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(run_key, clean(k), clean(v)) for k, v in sorted(properties.items())])

    def _artifact(self, rec: records_pb2.Record, work: _Work) -> None:
        """Chunks wait per (run, stream, path) in the database until the last one, so
        an upload may arrive through several replicas."""
        chunk = rec.artifact
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        key = (run_key, self._stream_id, clean(chunk.path))
        conn = self._conn
        conn.execute("INSERT INTO artifact_chunks VALUES (%s, %s, %s, %s, %s) ON CONFLICT "
                     "(run_key, stream_id, path, chunk_offset) DO UPDATE SET data = "
                     "excluded.data", (*key, chunk.offset, chunk.data))
        if not chunk.last:
            return
        offsets = [row[0] for row in conn.execute(
            "SELECT chunk_offset FROM artifact_chunks WHERE run_key = %s AND stream_id = %s "
            "AND path = %s ORDER BY chunk_offset", key)]

        def rows() -> Iterator[tuple[int, bytes]]:  # a chunk in memory at a time
            for offset in offsets:
                yield offset, conn.execute(
                    "SELECT data FROM artifact_chunks WHERE run_key = %s AND stream_id = %s "
                    "AND path = %s AND chunk_offset = %s", (*key, offset)).fetchone()[0]

        where = f"artifact {chunk.path!r} of run {rec.run_id!r}"
        self._artifacts.put_stream(contiguous(where, rows()), chunk.sha256.lower(), chunk.size,
                                   where)
        conn.execute("INSERT INTO artifacts VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                     "(run_key, path) DO UPDATE SET size = excluded.size, sha256 = "
                     "excluded.sha256, content_type = excluded.content_type, time = "
                     "excluded.time", (run_key, key[2], chunk.size, chunk.sha256.lower(),
                                       clean(chunk.content_type), rec.time_unix_nano))
        conn.execute("DELETE FROM artifact_chunks WHERE run_key = %s AND stream_id = %s "
                     "AND path = %s", key)

    # ---- end of the transaction ---------------------------------------------

    def _flush(self, total: _Work, changed: dict[tuple[str, str], int]) -> None:
        conn = self._conn
        if total.series or total.ended_keys:
            flush_series(conn, total.series, total.ended_keys)
        if total.logs:
            flush_logs(conn, total.logs, total.log_runs)
        if changed:
            conn.execute("UPDATE streams SET hwm = u.hwm FROM unnest(%s::text[], %s::text[], "
                         "%s::bigint[]) AS u(w, s, hwm) WHERE streams.workspace = u.w AND "
                         "streams.stream_id = u.s",
                         ([clean(w) for w, _ in changed], [clean(s) for _, s in changed],
                          list(changed.values())))
        if self._touched:  # in key order, as every lock here is taken
            conn.execute("UPDATE runs SET last_write = GREATEST(last_write, %s) WHERE run_key "
                         "= ANY(%s)", (time.time_ns(), sorted(self._touched)))
        if total.ended_runs:
            conn.execute("SELECT pg_notify(%s, 'end ' || r) FROM unnest(%s::text[]) AS r",
                         (NOTIFY_CHANNEL, sorted(total.ended_runs)))

    def _summarise(self, total: _Work, summary: WriteSummary) -> None:
        summary.log_runs |= set(total.log_runs.values())
        summary.ended_runs |= total.ended_runs
        if not total.latest:
            return
        run_ids = sorted({run_id for run_id, _ in total.latest})
        runs = {run_id: (experiment, workspace) for run_id, experiment, workspace in
                self._conn.execute("SELECT run_id, experiment, workspace FROM runs WHERE "
                                   "run_id = ANY(%s)", ([clean(r) for r in run_ids],))}
        for (run_id, name), number in total.latest.items():
            experiment, workspace = runs.get(clean(run_id), ("", ""))
            summary.latest[(run_id, name)] = (experiment, number)
            if workspace:
                summary.workspaces[run_id] = workspace


def _merge(work: _Work, total: _Work) -> None:
    for key, pieces in work.series.items():
        total.series.setdefault(key, []).extend(pieces)
    total.logs.extend(work.logs)
    total.latest.update(work.latest)
    total.log_runs.update(work.log_runs)
    total.ended_runs |= work.ended_runs
    total.ended_keys |= work.ended_keys


def _open_points(pieces: list[SeriesPiece]) -> Points:
    """The series' last pieces if they are points, else a new one after an encoded record."""
    if not pieces or not isinstance(pieces[-1], Points):
        pieces.append(Points.empty())
    return pieces[-1]
