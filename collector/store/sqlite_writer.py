"""The SQLite write path: one connection, used only by the store's writer thread.

State held between calls (all of it derivable from the database, and dropped
whenever a transaction or a batch's savepoint rolls back):

    runs:      run_id -> [run_key, experiment]
    names:     metric name -> name_key
    streams:   (run_key, log stream name) -> [stream_key, next_line]

Per batch: SAVEPOINT, read the stream's high-water mark, skip duplicates,
dispatch each new record by body kind through ``_handlers``, insert the
metric rows with one executemany, write the new mark, RELEASE. A
``PermanentError`` (an artifact that does not verify) rolls the savepoint
back, so that batch contributes nothing while the others commit.
"""

from __future__ import annotations

import hashlib
import heapq
import sqlite3
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store import sqlite_schema as schema
from mltrail.collector.store.base import BatchOutcome, ScalarPoint, ValidBatch, WriteSummary
from mltrail.common.errors import PermanentError
from mltrail.common.lines import MAX_LINE_BYTES, split_long_lines
from mltrail.proto import records_pb2

_VALUE_KINDS = {"number": schema.KIND_NUMBER, "integer": schema.KIND_INTEGER,
                "text": schema.KIND_TEXT, "flag": schema.KIND_FLAG}


@dataclass
class _BatchWork:
    """Rows gathered for one batch before they are inserted."""

    stream_id: str
    hwm: int = 0
    metrics: list[tuple[Any, ...]] = field(default_factory=list)
    log_chunks: list[tuple[Any, ...]] = field(default_factory=list)
    log_streams: dict[int, list[int]] = field(default_factory=dict)  # advanced this batch
    latest: dict[tuple[str, str], float] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    log_runs: set[str] = field(default_factory=set)
    ended_runs: set[str] = field(default_factory=set)
    gaps: int = 0


class SqliteWriter:
    def __init__(self, conn: sqlite3.Connection, artifacts: ArtifactStore, where: str) -> None:
        self._conn = conn
        self._artifacts = artifacts
        self._where = where
        self._runs: dict[str, list[Any]] = {}
        self._names: dict[str, int] = {}
        self._streams: dict[tuple[int, str], list[int]] = {}
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
                for batch in batches:
                    summary.outcomes.append(self._write_batch(batch, summary))
                self._mark_written()
        except BaseException:
            self._forget()
            raise
        self._attach_experiments(summary)
        return summary

    def _mark_written(self) -> None:
        """When each run got records last: ``mltrail show`` says how long ago."""
        if self._touched:
            now = time.time_ns()
            self._conn.executemany("UPDATE runs SET last_write = ? WHERE run_key = ?",
                                   [(now, key) for key in self._touched])
            self._touched.clear()

    def _forget(self) -> None:
        """Caches may hold rows a rollback undid; they refill from the database."""
        self._touched.clear()
        self._runs.clear()
        self._names.clear()
        self._streams.clear()

    # ---- one batch ----------------------------------------------------------

    def _write_batch(self, batch: ValidBatch, summary: WriteSummary) -> BatchOutcome:
        conn = self._conn
        row = conn.execute("SELECT hwm FROM streams WHERE stream_id = ?",
                           (batch.stream_id,)).fetchone()
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
            return BatchOutcome(batch.stream_id, acked_seq=hwm, error=str(exc))
        conn.execute("INSERT INTO streams VALUES (?, ?) ON CONFLICT(stream_id) "
                     "DO UPDATE SET hwm = excluded.hwm", (batch.stream_id, batch.last_seq))
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
        conn = self._conn
        if work.metrics:
            conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", work.metrics)
        if work.log_chunks:
            conn.executemany("INSERT INTO log_chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             work.log_chunks)
            conn.executemany("UPDATE log_streams SET next_line = ? WHERE stream_key = ?",
                             [(entry[1], key) for key, entry in work.log_streams.items()])
        return work

    def _merged_rows(self, scalars: Sequence[ScalarPoint], others: Sequence[records_pb2.Record],
                     hwm: int, work: _BatchWork) -> int:
        """Both sources in seq order: metric rows keep their logged order as rowid order,
        so a name logged as a plain scalar and as another kind keeps its order
        (invariant 6). Only a batch with both kinds of metric pays for this."""
        stored = 0
        for item in heapq.merge(scalars, others, key=_seq_of):
            if isinstance(item, tuple):
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

    def _scalar_rows(self, points: Sequence[ScalarPoint], hwm: int, work: _BatchWork) -> int:
        """Append metric rows for the points above ``hwm``; the hot loop, kept minimal."""
        rows, latest = work.metrics, work.latest
        runs, names, codes = self._runs, self._names, _VALUE_KINDS
        before = len(rows)
        touched, last_key = self._touched, None
        for seq, run_id, name, time_ns, step, kind, value in points:
            if seq <= hwm:
                continue
            entry = runs.get(run_id)
            run_key = entry[0] if entry else self._run_key(run_id, time_ns)
            if run_key != last_key:
                touched.add(run_key)
                last_key = run_key
            code = codes[kind]
            rows.append((run_key, names.get(name) or self._name_key(name), time_ns, step, code,
                         value))
            if code <= schema.KIND_INTEGER:
                latest[(run_id, name)] = value
        return len(rows) - before

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

    # ---- keys ---------------------------------------------------------------

    def _run_key(self, run_id: str, time_ns: int) -> int:
        entry = self._runs.get(run_id)
        if entry is not None:
            self._touched.add(entry[0])
            return int(entry[0])
        conn = self._conn
        row = conn.execute("SELECT run_key, experiment FROM runs WHERE run_id = ?",
                           (run_id,)).fetchone()
        if row is None:
            cur = conn.execute("INSERT INTO runs (run_id, status, start_time) VALUES (?, ?, ?)",
                               (run_id, records_pb2.RUNNING, time_ns))
            row = (cur.lastrowid, "")
        self._runs[run_id] = list(row)
        self._touched.add(int(row[0]))
        return int(row[0])

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
        work.metrics.append((run_key, name_key, rec.time_unix_nano, None, schema.KIND_ENCODED,
                             metric.SerializeToString()))

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
        work.log_chunks.append((stream[0], stream[1], count, first_time, last_time, text,
                                times.tobytes() if times else None, chunk.level, chunk.logger))
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
            conn.executemany("INSERT OR REPLACE INTO run_tags VALUES (?, ?, ?)",
                             [(run_key, k, v) for k, v in event.tags.tags.items()])
        elif kind == "properties":
            conn.executemany("INSERT OR IGNORE INTO run_properties VALUES (?, ?, ?)",
                             [(run_key, k, v) for k, v in event.properties.properties.items()])
        elif kind == "ended":
            ended = event.ended
            error = ended.error.SerializeToString() if ended.HasField("error") else None
            conn.execute("UPDATE runs SET status = ?, end_time = ?, error = ? WHERE run_key = ?",
                         (ended.status, rec.time_unix_nano, error, run_key))
            work.ended_runs.add(rec.run_id)
        else:
            raise PermanentError(f"record seq {rec.seq}: unknown run event {kind!r}")

    def _run_started(self, rec: records_pb2.Record, run_key: int) -> None:
        started = rec.run_event.started
        conn = self._conn
        conn.execute(
            "UPDATE runs SET experiment = ?, display_name = ?, parent_run_id = ?, run_type = ?, "
            "start_time = ? WHERE run_key = ?",
            (started.experiment, started.display_name, started.parent_run_id, started.run_type,
             rec.time_unix_nano, run_key))
        conn.executemany("INSERT OR REPLACE INTO run_tags VALUES (?, ?, ?)",
                         [(run_key, k, v) for k, v in started.tags.items()])
        conn.executemany("INSERT OR IGNORE INTO run_properties VALUES (?, ?, ?)",
                         [(run_key, k, v) for k, v in started.properties.items()])
        self._runs[rec.run_id][1] = started.experiment

    def _gap(self, rec: records_pb2.Record, work: _BatchWork) -> None:
        """The explanation of a hole; only its part above the mark, if it overlaps it."""
        gap = rec.gap
        self._conn.execute("INSERT OR REPLACE INTO stream_gaps VALUES (?, ?, ?, ?, ?, ?)",
                           (work.stream_id, max(rec.seq, work.hwm + 1), gap.last_seq,
                            gap.records, gap.reason, rec.time_unix_nano))
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
        rows = conn.execute("SELECT offset, data FROM artifact_chunks WHERE run_key = ? AND "
                            "stream_id IN (?, '') AND path = ? ORDER BY offset", key).fetchall()
        content = _assemble(rec, rows)
        self._artifacts.put(content)
        conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?, ?, ?)",
                     (run_key, chunk.path, len(content), chunk.sha256.lower(),
                      chunk.content_type, rec.time_unix_nano))
        conn.execute("DELETE FROM artifact_chunks WHERE run_key = ? AND stream_id IN (?, '') "
                     "AND path = ?", key)


def _seq_of(item: ScalarPoint | records_pb2.Record) -> int:
    return item[0] if isinstance(item, tuple) else item.seq


def _assemble(rec: records_pb2.Record, rows: list[tuple[int, bytes]]) -> bytes:
    """The whole file from its chunks, verified against the last chunk's size and sha256."""
    chunk = rec.artifact
    where = f"artifact {chunk.path!r} of run {rec.run_id!r}"
    expected_offset = 0
    for offset, data in rows:
        if offset != expected_offset:
            raise PermanentError(f"{where}: chunk at offset {expected_offset} is missing "
                                 f"(next chunk starts at {offset})")
        expected_offset += len(data)
    content = b"".join(data for _, data in rows)
    if len(content) != chunk.size:
        raise PermanentError(f"{where}: size mismatch: expected {chunk.size} bytes, "
                             f"actual {len(content)}")
    actual = hashlib.sha256(content).hexdigest()
    if actual != chunk.sha256.lower():
        raise PermanentError(f"{where}: sha256 mismatch: expected {chunk.sha256}, "
                             f"actual {actual}")
    return content


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
