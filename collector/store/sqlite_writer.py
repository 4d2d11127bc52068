"""The SQLite write path: one connection, used only by the store's writer thread.

State held between calls (all of it derivable from the database, and dropped
whenever a transaction or a batch's savepoint rolls back):

    runs:      run_id -> [run_key, experiment, workspace]
    names:     metric name -> name_key
    streams:   (run_key, log stream name) -> [stream_key, next_line]

Per batch: SAVEPOINT, read the stream's high-water mark, skip duplicates,
dispatch each new record by body kind through ``_handlers``, gather scalar
points per series and log lines per stream, append them to the series'
chunks and the streams' log chunks (``sqlite_chunks``: the open chunk is
extended in place, raw while it grows: series_tail.py), write the new mark,
RELEASE; a run's end compresses its series' open chunks. A
``PermanentError`` (an artifact that does not verify) rolls the savepoint
back, so that batch contributes nothing while the others commit. A record
for a run of another workspace raises ``ForeignRun``: the batch is refused
as ``denied``, and so is every later batch of its stream in the call (were
they committed, the stream's mark would pass the refused records).
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mltrail.collector.artifacts import ArtifactStore, contiguous
from mltrail.collector.store import sqlite_schema as schema
from mltrail.collector.store.base import (
    DEFAULT_WORKSPACE,
    BatchOutcome,
    ScalarRun,
    ValidBatch,
    WriteSummary,
    corrects_inferred_end,
)
from mltrail.collector.store.chunks import Points
from mltrail.collector.store.run_delete import delete_run_rows, unreferenced
from mltrail.collector.store.sqlite_chunks import LogAppender, LogPiece, SeriesAppender
from mltrail.common.errors import PermanentError
from mltrail.common.lines import MAX_LINE_BYTES, split_long_lines
from mltrail.proto import collector_pb2, records_pb2

DISPLAY_NAME_TAG = "mltrail.display_name"  # records.proto, TagsSet: renames the run
_TERMINAL = f"({records_pb2.COMPLETED}, {records_pb2.FAILED}, {records_pb2.CANCELED})"


class ForeignRun(PermanentError):
    """A record names a run that belongs to another workspace."""


@dataclass
class _BatchWork:
    """Rows gathered for one batch before they are inserted."""

    stream_id: str
    hwm: int = 0
    series: dict[tuple[int, int], Points] = field(default_factory=dict)
    merged: set[tuple[int, int]] = field(default_factory=set)  # series copied to merge runs
    logs: dict[int, tuple[int, list[LogPiece]]] = field(default_factory=dict)  # first line
    log_streams: dict[int, list[int]] = field(default_factory=dict)  # advanced this batch
    latest: dict[tuple[str, str], float] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    log_runs: set[str] = field(default_factory=set)
    ended_runs: set[str] = field(default_factory=set)
    ended_keys: set[int] = field(default_factory=set)  # their series' open chunks close
    gaps: int = 0


class SqliteWriter:
    def __init__(self, conn: sqlite3.Connection, artifacts: ArtifactStore, where: str) -> None:
        self._conn = conn
        self._artifacts = artifacts
        self._where = where
        self._runs: dict[str, list[Any]] = {}
        self._names: dict[str, int] = {}
        self._streams: dict[tuple[int, str], list[int]] = {}
        self._workspace = DEFAULT_WORKSPACE  # of the batch being written
        self._series = SeriesAppender(conn)
        self._log_appender = LogAppender(conn)
        self._touched: set[int] = set()  # run keys written by this transaction
        self._handlers: dict[str, Callable[[records_pb2.Record, _BatchWork], None]] = {
            "metric": self._metric,
            "log": self._log,
            "run_event": self._run_event,
            "artifact": self._artifact,
            "gap": self._gap,
        }

    def write(self, batches: Sequence[ValidBatch]) -> WriteSummary:
        summary = WriteSummary()
        try:
            with schema.transaction(self._conn, f"store {self._where}"):
                denied: dict[tuple[str, str], str] = {}
                for batch in batches:
                    key = (batch.workspace, batch.stream_id)
                    if key in denied:
                        outcome = BatchOutcome(batch.stream_id, error=denied[key], denied=True)
                    else:
                        outcome = self._write_batch(batch, summary)
                    if outcome.denied:
                        denied[key] = outcome.error or ""
                    summary.outcomes.append(outcome)
                self._mark_written()
        except BaseException:
            self._touched.clear()
            self._forget()
            raise
        self._attach_experiments(summary)
        return summary

    def delete_runs(self, run_ids: Sequence[str], workspace: str
                    ) -> collector_pb2.DeleteRunsResponse:
        """``run_delete``: the rows in one transaction, then files no run refers to."""
        try:
            with schema.transaction(self._conn, f"store {self._where}"):
                answer, shas = delete_run_rows(self._conn, run_ids, workspace)
        finally:
            self._forget()  # cached keys of the deleted runs and their streams
        for sha in unreferenced(self._conn, shas):
            self._artifacts.remove(sha)
        return answer

    def _mark_written(self) -> None:
        """When each run got records last: ``mltrail show`` says how long ago."""
        if self._touched:
            now = time.time_ns()
            self._conn.executemany("UPDATE runs SET last_write = ? WHERE run_key = ?",
                                   [(now, key) for key in self._touched])
            self._touched.clear()

    def _forget(self) -> None:
        """Caches may hold rows a rollback undid; they refill from the database (the
        runs touched stay: a key a savepoint undid matches no row)."""
        self._runs.clear()
        self._names.clear()
        self._streams.clear()

    # ---- one batch ----------------------------------------------------------

    def _write_batch(self, batch: ValidBatch, summary: WriteSummary) -> BatchOutcome:
        conn = self._conn
        self._workspace = batch.workspace
        row = conn.execute("SELECT hwm FROM streams WHERE workspace = ? AND stream_id = ?",
                           (batch.workspace, batch.stream_id)).fetchone()
        hwm = row[0] if row else 0
        outcome = BatchOutcome(batch.stream_id, acked_seq=max(hwm, 0))
        skip = min(max(hwm - batch.first_seq + 1, 0), batch.count)
        outcome.duplicates = skip
        if skip == batch.count:
            return outcome
        if batch.first_seq > hwm + 1:  # a hole: never committed silently (invariant 3)
            outcome.expected_seq = hwm + 1
            return outcome
        conn.execute("SAVEPOINT batch")
        try:
            work = self._write_records(batch, hwm)
        except PermanentError as exc:
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            self._forget()
            return BatchOutcome(batch.stream_id, acked_seq=hwm, error=str(exc),
                                denied=isinstance(exc, ForeignRun))
        conn.execute("INSERT INTO streams VALUES (?, ?, ?) ON CONFLICT(workspace, stream_id) "
                     "DO UPDATE SET hwm = excluded.hwm",
                     (batch.workspace, batch.stream_id, batch.last_seq))
        conn.execute("RELEASE batch")
        outcome.acked_seq = batch.last_seq
        outcome.stored = batch.count - skip
        outcome.kinds = work.kinds
        outcome.gap = work.gaps > 0
        self._merge(work, summary)
        return outcome

    def _write_records(self, batch: ValidBatch, hwm: int) -> _BatchWork:
        """Records above ``hwm``: the others by handler, then the scalars in one executemany."""
        work = _BatchWork(batch.stream_id, hwm)
        scalars, others = batch.scalars, batch.others
        if scalars and any(rec.WhichOneof("body") == "metric" for rec in others):
            stored = self._merged_rows(scalars, others, hwm, work)
        else:
            for rec in others:
                self._other_rows(rec, hwm, work)
            stored = self._scalar_rows(scalars, hwm, work)
        if stored:
            work.kinds["metric"] = work.kinds.get("metric", 0) + stored
        self._flush(work)
        return work

    def _flush(self, work: _BatchWork) -> None:
        for (run_key, name_key), points in work.series.items():
            self._series.append(run_key, name_key, points)
        work.series.clear()
        work.merged.clear()
        for stream_key, (first_line, pieces) in work.logs.items():
            self._log_appender.append(stream_key, first_line, pieces)
        if work.log_streams:
            self._conn.executemany("UPDATE log_streams SET next_line = ? WHERE stream_key = ?",
                                   [(entry[1], key) for key, entry in work.log_streams.items()])
        work.logs.clear()
        work.log_streams.clear()
        for run_key in work.ended_keys:  # after the points that came with the end
            self._series.close_run(run_key)
        work.ended_keys.clear()

    def _merged_rows(self, scalars: Sequence[ScalarRun], others: Sequence[records_pb2.Record],
                     hwm: int, work: _BatchWork) -> int:
        """Both sources by seq: metric rows keep their logged order as rowid order, so a
        name logged as a plain scalar and as another kind keeps its order (invariant 6;
        no ScalarRun spans another metric record). Only a batch with both kinds of metric
        pays for this."""
        stored = 0
        for item in heapq.merge(scalars, others, key=_seq_of):
            if isinstance(item, ScalarRun):
                stored += self._scalar_rows((item,), hwm, work)
            else:
                self._other_rows(item, hwm, work)
        return stored

    def _other_rows(self, rec: records_pb2.Record, hwm: int, work: _BatchWork) -> None:
        if rec.seq <= hwm and not (rec.HasField("gap") and rec.gap.last_seq > hwm):
            return
        kind = rec.WhichOneof("body")
        handler = self._handlers.get(kind) if kind else None
        if handler is None:  # ingest validated; a new kind here is a bug upstream
            raise PermanentError(f"record seq {rec.seq}: unknown record kind {kind!r}")
        handler(rec, work)
        work.kinds[kind] = work.kinds.get(kind, 0) + 1

    def _scalar_rows(self, runs: Sequence[ScalarRun], hwm: int, work: _BatchWork) -> int:
        """Gather the points above ``hwm`` per series: a few lookups per run of points."""
        series, latest, touched = work.series, work.latest, self._touched
        stored = 0
        for run in runs:
            above = run.above(hwm)
            if above is None:
                continue
            points = above.points
            entry = self._runs.get(run.run_id)
            key = (entry[0] if entry and entry[2] == self._workspace
                   else self._run_key(run.run_id, points.times[0]),
                   self._names.get(run.name) or self._name_key(run.name))
            target = series.get(key)
            if target is None:  # the batch's own points: nothing extends them in place
                series[key] = points
            else:  # a copy: the batch stays as it came (a retry may reuse it)
                if key not in work.merged:
                    work.merged.add(key)
                    first, target = target, Points.empty()
                    target.extend(first)
                    series[key] = target
                target.extend(points)
            touched.add(key[0])
            stored += len(points)
            value = above.latest()
            if value is not None:
                latest[(run.run_id, run.name)] = value
        return stored

    @staticmethod
    def _merge(work: _BatchWork, summary: WriteSummary) -> None:
        for key, number in work.latest.items():
            summary.latest[key] = ("", number)
        summary.log_runs |= work.log_runs
        summary.ended_runs |= work.ended_runs

    def _attach_experiments(self, summary: WriteSummary) -> None:
        for (run_id, name), (_, number) in summary.latest.items():
            entry = self._runs.get(run_id)
            summary.latest[(run_id, name)] = (entry[1] if entry else "", number)
            if entry:
                summary.workspaces[run_id] = entry[2]

    # ---- keys ---------------------------------------------------------------

    def _run_key(self, run_id: str, time_ns: int) -> int:
        """The run's key; a new run is created in the batch's workspace; ForeignRun if
        the run exists in another."""
        entry = self._runs.get(run_id)
        if entry is None:
            conn = self._conn
            row = conn.execute("SELECT run_key, experiment, workspace FROM runs WHERE "
                               "run_id = ?", (run_id,)).fetchone()
            if row is None:
                cur = conn.execute("INSERT INTO runs (run_id, status, start_time, workspace) "
                                   "VALUES (?, ?, ?, ?)",
                                   (run_id, records_pb2.RUNNING, time_ns, self._workspace))
                row = (cur.lastrowid, "", self._workspace)
            entry = self._runs[run_id] = list(row)
        self._touched.add(int(entry[0]))
        if entry[2] != self._workspace:
            raise ForeignRun(f"run {run_id!r} belongs to another workspace than this token's "
                             f"({self._workspace!r}); send it with a writer token of the "
                             "run's workspace")
        return int(entry[0])

    def _name_key(self, name: str) -> int:
        key = self._names.get(name)
        if key is not None:
            return key
        conn = self._conn
        row = conn.execute("SELECT name_key FROM metric_names WHERE name = ?", (name,)).fetchone()
        if row is None:
            row = (conn.execute("INSERT INTO metric_names (name) VALUES (?)", (name,)).lastrowid,)
        self._names[name] = int(row[0])
        return int(row[0])

    def _log_stream(self, run_key: int, name: str) -> list[int]:
        entry = self._streams.get((run_key, name))
        if entry is not None:
            return entry
        conn = self._conn
        row = conn.execute("SELECT stream_key, next_line FROM log_streams "
                           "WHERE run_key = ? AND name = ?", (run_key, name)).fetchone()
        if row is None:
            cur = conn.execute("INSERT INTO log_streams (run_key, name, next_line) "
                               "VALUES (?, ?, 0)", (run_key, name))
            row = (cur.lastrowid, 0)
        entry = self._streams[(run_key, name)] = [int(row[0]), int(row[1])]
        return entry

    # ---- handlers, one per record body kind -----------------------------------

    def _metric(self, rec: records_pb2.Record, work: _BatchWork) -> None:
        """The rare kinds (and scalars with a description): kept as the encoded Metric."""
        metric = rec.metric
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        name_key = self._name_key(metric.name)
        pending = work.series.pop((run_key, name_key), None)
        work.merged.discard((run_key, name_key))
        if pending is not None:  # the points logged before it go first (logged order)
            self._series.append(run_key, name_key, pending)
        self._series.append_encoded(run_key, name_key, rec.time_unix_nano,
                                    metric.SerializeToString())

    def _log(self, rec: records_pb2.Record, work: _BatchWork) -> None:
        chunk = rec.log
        if not chunk.data:
            return
        data, splits = split_long_lines(chunk.data, MAX_LINE_BYTES)
        text = data.decode("utf-8", errors="replace")
        if text.endswith("\n"):
            text = text[:-1]
        count = text.count("\n") + 1
        times = _line_times(chunk, splits)
        first_time, last_time = (times[0], times[-1]) if times else (rec.time_unix_nano,) * 2
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        stream = self._log_stream(run_key, chunk.stream)
        pending = work.logs.setdefault(stream[0], (stream[1], []))[1]
        pending.append(LogPiece(count, first_time, last_time, text, times, chunk.level,
                                chunk.logger))
        stream[1] += count
        work.log_streams[stream[0]] = stream
        work.log_runs.add(rec.run_id)

    def _run_event(self, rec: records_pb2.Record, work: _BatchWork) -> None:
        event = rec.run_event
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        kind = event.WhichOneof("event")
        conn = self._conn
        if kind == "started":
            self._run_started(rec, run_key)
        elif kind == "tags":
            tags = dict(event.tags.tags)
            name = tags.pop(DISPLAY_NAME_TAG, None)
            if name is not None:
                conn.execute("UPDATE runs SET display_name = ? WHERE run_key = ?",
                             (name, run_key))
            conn.executemany("INSERT OR REPLACE INTO run_tags VALUES (?, ?, ?)",
                             [(run_key, k, v) for k, v in tags.items()])
            conn.executemany("DELETE FROM run_tags WHERE run_key = ? AND key = ?",
                             [(run_key, k) for k in event.tags.removed])
        elif kind == "properties":
            conn.executemany("INSERT OR IGNORE INTO run_properties VALUES (?, ?, ?)",
                             [(run_key, k, v) for k, v in event.properties.properties.items()])
        elif kind == "ended":
            ended = event.ended
            error = ended.error.SerializeToString() if ended.HasField("error") else None
            values = (ended.status, rec.time_unix_nano, error, run_key)
            if conn.execute("UPDATE runs SET status = ?, end_time = ?, error = ? "
                            f"WHERE run_key = ? AND status NOT IN {_TERMINAL}",
                            values).rowcount == 0:
                row = conn.execute("SELECT error FROM runs WHERE run_key = ?",
                                   (run_key,)).fetchone()
                if row is not None and corrects_inferred_end(row[0], ended):
                    conn.execute("UPDATE runs SET status = ?, end_time = ?, error = ? "
                                 "WHERE run_key = ?", values)
            work.ended_runs.add(rec.run_id)
            work.ended_keys.add(run_key)
        else:
            raise PermanentError(f"record seq {rec.seq}: unknown run event {kind!r}")

    def _run_started(self, rec: records_pb2.Record, run_key: int) -> None:
        started = rec.run_event.started
        conn = self._conn
        # A registered run (Experiment.submit) is NotStarted until its launcher's start;
        # that start keeps what it leaves empty, and never revives an ended run.
        status = (records_pb2.RUN_STATUS_UNSPECIFIED if started.registered
                  else records_pb2.RUNNING)
        conn.execute(
            "UPDATE runs SET experiment = COALESCE(NULLIF(?, ''), experiment), "
            "display_name = COALESCE(NULLIF(?, ''), display_name), "
            "parent_run_id = COALESCE(NULLIF(?, ''), parent_run_id), "
            "run_type = COALESCE(NULLIF(?, ''), run_type), start_time = ?, "
            f"status = CASE WHEN status IN {_TERMINAL} THEN status ELSE ? END "
            "WHERE run_key = ?",
            (started.experiment, started.display_name, started.parent_run_id, started.run_type,
             rec.time_unix_nano, status, run_key))
        conn.executemany("INSERT OR REPLACE INTO run_tags VALUES (?, ?, ?)",
                         [(run_key, k, v) for k, v in started.tags.items()])
        conn.executemany("INSERT OR IGNORE INTO run_properties VALUES (?, ?, ?)",
                         [(run_key, k, v) for k, v in started.properties.items()])
        if started.experiment:
            self._runs[rec.run_id][1] = started.experiment

    def _gap(self, rec: records_pb2.Record, work: _BatchWork) -> None:
        """The explanation of a hole; only its part above the mark, if it overlaps it."""
        gap = rec.gap
        self._conn.execute("INSERT OR REPLACE INTO stream_gaps VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (self._workspace, work.stream_id, max(rec.seq, work.hwm + 1),
                            gap.last_seq, gap.records, gap.reason, rec.time_unix_nano))
        work.gaps += 1

    def _artifact(self, rec: records_pb2.Record, work: _BatchWork) -> None:
        """Chunks wait per (run, stream, path) until the last one: two streams uploading
        one path at once do not mix. Chunks of stream '' came from a schema version 1
        store (an upload in flight at the upgrade); they belong to whoever completes it."""
        chunk = rec.artifact
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        key = (run_key, work.stream_id, chunk.path)
        conn = self._conn
        conn.execute("INSERT OR REPLACE INTO artifact_chunks VALUES (?, ?, ?, ?, ?)",
                     (*key, chunk.offset, chunk.data))
        if not chunk.last:
            return
        offsets = conn.execute("SELECT offset, stream_id FROM artifact_chunks WHERE run_key = ? "
                               "AND stream_id IN (?, '') AND path = ? ORDER BY offset",
                               key).fetchall()

        def rows() -> Iterator[tuple[int, bytes]]:  # a chunk in memory at a time
            for offset, stream_id in offsets:
                yield offset, conn.execute(
                    "SELECT data FROM artifact_chunks WHERE run_key = ? AND stream_id = ? AND "
                    "path = ? AND offset = ?", (run_key, stream_id, chunk.path, offset)
                ).fetchone()[0]

        where = f"artifact {chunk.path!r} of run {rec.run_id!r}"
        self._artifacts.put_stream(contiguous(where, rows()), chunk.sha256.lower(), chunk.size,
                                   where)
        conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?)",
                     (run_key, chunk.path, chunk.size, chunk.sha256.lower(),
                      chunk.content_type, rec.time_unix_nano))
        conn.execute("DELETE FROM artifact_chunks WHERE run_key = ? AND stream_id IN (?, '') "
                     "AND path = ?", key)


def _seq_of(item: ScalarRun | records_pb2.Record) -> int:
    return item.seq


def _line_times(chunk: records_pb2.LogChunk, splits: dict[int, int]) -> array[int]:
    """Per-line times after splitting (a split line's pieces share its time); empty: none."""
    if not chunk.line_times_unix_nano:
        return array("q")
    times = list(chunk.line_times_unix_nano)
    if splits:
        expanded: list[int] = []
        for index, t in enumerate(times):
            expanded.extend([t] * splits.get(index, 1))
        times = expanded
    return array("q", times)
