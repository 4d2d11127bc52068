"""The PostgreSQL write path: one transaction per ``write_batch``, safe across replicas.

Per transaction, in this order (every lock in a fixed order, so two replicas
writing overlapping streams wait for each other instead of deadlocking):

    1. streams:   insert the request's stream ids that are new (sorted), then
                  SELECT ... ORDER BY stream_id FOR UPDATE: every high-water
                  mark of the request is locked until commit, so a replica
                  that receives the same batch waits, then sees it as a
                  duplicate (never check-then-insert)
    2. per batch: skip what is at or below the mark; gather metric rows and log
                  pieces in memory; run events and artifact chunks are written
                  at once, inside a savepoint when the batch has such records
                  (an artifact that does not verify rolls back that batch only)
    3. flush:     log streams locked in (run_key, name) order and their lines
                  numbered; metric rows and log chunks by COPY; the new marks;
                  pg_notify per log stream (run id and position) for followers
                  on every replica, delivered at commit

Cached between calls: run_id -> run_key and metric name -> name_key (both
never change once committed; dropped whenever a transaction rolls back).
Line numbers are never cached: another replica may have added lines.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store.base import BatchOutcome, ScalarPoint, ValidBatch, WriteSummary
from mltrail.collector.store.sqlite_schema import (
    KIND_ENCODED,
    KIND_FLAG,
    KIND_INTEGER,
    KIND_NUMBER,
    KIND_TEXT,
)
from mltrail.collector.store.sqlite_writer import _assemble, _line_times, _seq_of
from mltrail.common.errors import PermanentError
from mltrail.common.lines import MAX_LINE_BYTES, split_long_lines
from mltrail.proto import records_pb2

NOTIFY_CHANNEL = "mltrail_logs"

_METRIC_COPY = ("COPY metrics (run_key, name_key, time, step, kind, num, ival, data) "
                "FROM STDIN (FORMAT BINARY)")
_METRIC_TYPES = ["int8", "int4", "int8", "int8", "int2", "float8", "int8", "bytea"]
_LOG_COPY = ("COPY log_chunks (stream_key, first_line, line_count, first_time, last_time, "
             "text, line_times, level, logger) FROM STDIN (FORMAT BINARY)")
_LOG_TYPES = ["int8", "int8", "int4", "int8", "int8", "bytea", "bytea", "text", "text"]


def clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL: it is kept as U+FFFD, like undecodable bytes."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


@dataclass
class _LogPiece:
    run_key: int
    stream: str
    count: int
    row: tuple[Any, ...]  # the log_chunks row after stream_key and first_line


@dataclass
class _Work:
    """Rows gathered for one batch (then merged into the transaction's)."""

    metrics: list[tuple[Any, ...]] = field(default_factory=list)
    logs: list[_LogPiece] = field(default_factory=list)
    latest: dict[tuple[str, str], float] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    log_runs: dict[int, str] = field(default_factory=dict)  # run_key -> run_id
    ended_runs: set[str] = field(default_factory=set)


class PostgresWriter:
    def __init__(self, artifacts: ArtifactStore) -> None:
        self._artifacts = artifacts
        self._runs: dict[str, int] = {}
        self._names: dict[str, int] = {}
        self._conn: Any = None
        self._stream_id = ""
        self._handlers: dict[str, Callable[[records_pb2.Record, _Work], None]] = {
            "metric": self._metric,
            "log": self._log,
            "run_event": self._run_event,
            "artifact": self._artifact,
        }

    def write(self, conn: Any, batches: Sequence[ValidBatch]) -> WriteSummary:
        """Everything of one request in ``conn``'s open transaction (the caller commits)."""
        self._conn = conn
        summary = WriteSummary()
        total = _Work()
        try:
            marks = self._lock_streams(sorted({batch.stream_id for batch in batches}))
            changed: dict[str, int] = {}
            for batch in batches:
                outcome = self._write_batch(batch, marks, total)
                if outcome.stored:
                    changed[batch.stream_id] = marks[batch.stream_id] = outcome.acked_seq
                summary.outcomes.append(outcome)
            self._flush(total, changed)
            self._summarise(total, summary)
        except BaseException:
            self.forget()
            raise
        finally:
            self._conn = None
        return summary

    def forget(self) -> None:
        """Caches may hold rows a rollback undid; they refill from the database."""
        self._runs.clear()
        self._names.clear()

    def _lock_streams(self, stream_ids: list[str]) -> dict[str, int]:
        conn = self._conn
        conn.execute("INSERT INTO streams (stream_id, hwm) SELECT unnest(%s::text[]), 0 "
                     "ON CONFLICT (stream_id) DO NOTHING", (stream_ids,))
        rows = conn.execute("SELECT stream_id, hwm FROM streams WHERE stream_id = ANY(%s) "
                            "ORDER BY stream_id FOR UPDATE", (stream_ids,)).fetchall()
        return {stream_id: int(hwm) for stream_id, hwm in rows}

    # ---- one batch ----------------------------------------------------------

    def _write_batch(self, batch: ValidBatch, marks: dict[str, int], total: _Work
                     ) -> BatchOutcome:
        hwm = marks[batch.stream_id]
        outcome = BatchOutcome(batch.stream_id, acked_seq=max(hwm, 0))
        skip = min(max(hwm - batch.first_seq + 1, 0), batch.count)
        outcome.duplicates = skip
        if skip == batch.count:
            return outcome
        outcome.gap = batch.first_seq > hwm + 1
        self._stream_id = batch.stream_id
        work = _Work()
        try:
            if batch.others:  # run events and artifacts write now: a savepoint guards them
                with self._conn.transaction():
                    self._gather(batch, hwm, work)
            else:
                self._gather(batch, hwm, work)
        except PermanentError as exc:
            self.forget()
            return BatchOutcome(batch.stream_id, acked_seq=hwm, error=str(exc))
        outcome.acked_seq = batch.last_seq
        outcome.stored = batch.count - skip
        outcome.kinds = work.kinds
        _merge(work, total)
        return outcome

    def _gather(self, batch: ValidBatch, hwm: int, work: _Work) -> None:
        scalars, others = batch.scalars, batch.others
        stored = 0
        if scalars and any(rec.WhichOneof("body") == "metric" for rec in others):
            for item in heapq.merge(scalars, others, key=_seq_of):  # invariant 6
                if isinstance(item, tuple):
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
        if rec.seq <= hwm:
            return
        kind = rec.WhichOneof("body")
        handler = self._handlers.get(kind) if kind else None
        if handler is None:
            raise PermanentError(f"record seq {rec.seq}: unknown record kind {kind!r}")
        handler(rec, work)
        work.kinds[kind] = work.kinds.get(kind, 0) + 1

    def _scalar_rows(self, points: Sequence[ScalarPoint], hwm: int, work: _Work) -> int:
        """Metric rows for the points above ``hwm``; the hot loop, kept minimal."""
        rows, latest = work.metrics, work.latest
        runs, names = self._runs, self._names
        before = len(rows)
        for seq, run_id, name, time_ns, step, kind, value in points:
            if seq <= hwm:
                continue
            run_key = runs.get(run_id) or self._run_key(run_id, time_ns)
            name_key = names.get(name) or self._name_key(name)
            if kind == "number":
                rows.append((run_key, name_key, time_ns, step, KIND_NUMBER, value, None, None))
                latest[(run_id, name)] = value
            elif kind == "integer":
                rows.append((run_key, name_key, time_ns, step, KIND_INTEGER, None, value, None))
                latest[(run_id, name)] = value
            elif kind == "text":
                rows.append((run_key, name_key, time_ns, step, KIND_TEXT, None, None,
                             str(value).encode()))
            else:
                rows.append((run_key, name_key, time_ns, step, KIND_FLAG, None, int(value),
                             None))
        return len(rows) - before

    # ---- keys ---------------------------------------------------------------

    def _run_key(self, run_id: str, time_ns: int) -> int:
        key = self._runs.get(run_id)
        if key is not None:
            return key
        conn = self._conn
        row = conn.execute("INSERT INTO runs (run_id, status, start_time) VALUES (%s, %s, %s) "
                           "ON CONFLICT (run_id) DO NOTHING RETURNING run_key",
                           (clean(run_id), records_pb2.RUNNING, time_ns)).fetchone()
        if row is None:  # a concurrent insert waits for the other's commit, then lands here
            row = conn.execute("SELECT run_key FROM runs WHERE run_id = %s",
                               (clean(run_id),)).fetchone()
        self._runs[run_id] = int(row[0])
        return int(row[0])

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
        metric = rec.metric
        work.metrics.append((self._run_key(rec.run_id, rec.time_unix_nano),
                             self._name_key(metric.name), rec.time_unix_nano, None,
                             KIND_ENCODED, None, None, metric.SerializeToString()))

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
        count = text.count("\n") + 1
        work.logs.append(_LogPiece(run_key, clean(chunk.stream), count, (
            count, first_time, last_time, text.encode(), times.tobytes() if times else None,
            clean(chunk.level), clean(chunk.logger))))
        work.log_runs[run_key] = rec.run_id

    def _run_event(self, rec: records_pb2.Record, work: _Work) -> None:
        event = rec.run_event
        run_key = self._run_key(rec.run_id, rec.time_unix_nano)
        kind = event.WhichOneof("event")
        if kind == "started":
            started = rec.run_event.started
            self._conn.execute(
                "UPDATE runs SET experiment = %s, display_name = %s, parent_run_id = %s, "
                "run_type = %s, start_time = %s WHERE run_key = %s",
                (clean(started.experiment), clean(started.display_name),
                 clean(started.parent_run_id), clean(started.run_type), rec.time_unix_nano,
                 run_key))
            self._tags(run_key, started.tags)
            self._properties(run_key, started.properties)
        elif kind == "tags":
            self._tags(run_key, event.tags.tags)
        elif kind == "properties":
            self._properties(run_key, event.properties.properties)
        elif kind == "ended":
            ended = event.ended
            error = ended.error.SerializeToString() if ended.HasField("error") else None
            self._conn.execute("UPDATE runs SET status = %s, end_time = %s, error = %s "
                               "WHERE run_key = %s",
                               (ended.status, rec.time_unix_nano, error, run_key))
            work.ended_runs.add(rec.run_id)
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
        rows = conn.execute("SELECT chunk_offset, data FROM artifact_chunks WHERE run_key = %s "
                            "AND stream_id = %s AND path = %s ORDER BY chunk_offset",
                            key).fetchall()
        content = _assemble(rec, rows)
        self._artifacts.put(content)
        conn.execute("INSERT INTO artifacts VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                     "(run_key, path) DO UPDATE SET size = excluded.size, sha256 = "
                     "excluded.sha256, content_type = excluded.content_type, time = "
                     "excluded.time", (run_key, key[2], len(content), chunk.sha256.lower(),
                                       clean(chunk.content_type), rec.time_unix_nano))
        conn.execute("DELETE FROM artifact_chunks WHERE run_key = %s AND stream_id = %s "
                     "AND path = %s", key)

    # ---- end of the transaction ---------------------------------------------

    def _flush(self, total: _Work, changed: dict[str, int]) -> None:
        conn = self._conn
        if total.metrics:
            with conn.cursor() as cur, cur.copy(_METRIC_COPY) as copy:
                copy.set_types(_METRIC_TYPES)
                for row in total.metrics:
                    copy.write_row(row)
        if total.logs:
            self._flush_logs(total)
        if changed:
            conn.execute("UPDATE streams SET hwm = u.hwm FROM unnest(%s::text[], %s::bigint[]) "
                         "AS u(stream_id, hwm) WHERE streams.stream_id = u.stream_id",
                         (list(changed), list(changed.values())))
        if total.ended_runs:
            conn.execute("SELECT pg_notify(%s, 'end ' || r) FROM unnest(%s::text[]) AS r",
                         (NOTIFY_CHANNEL, sorted(total.ended_runs)))

    def _flush_logs(self, total: _Work) -> None:
        """Lock the log streams in (run_key, name) order, number the pieces' lines."""
        conn = self._conn
        keys = sorted({(piece.run_key, piece.stream) for piece in total.logs})
        run_keys, names = [k for k, _ in keys], [n for _, n in keys]
        conn.execute("INSERT INTO log_streams (run_key, name, next_line) SELECT k, n, 0 "
                     "FROM unnest(%s::bigint[], %s::text[]) AS u(k, n) "
                     "ON CONFLICT (run_key, name) DO NOTHING", (run_keys, names))
        rows = conn.execute(
            "SELECT s.run_key, s.name, s.stream_key, s.next_line FROM log_streams s "
            "JOIN unnest(%s::bigint[], %s::text[]) AS u(k, n) ON s.run_key = u.k AND "
            "s.name = u.n ORDER BY s.run_key, s.name FOR UPDATE OF s",
            (run_keys, names)).fetchall()
        streams = {(run_key, name): [key, line] for run_key, name, key, line in rows}
        with conn.cursor() as cur, cur.copy(_LOG_COPY) as copy:
            copy.set_types(_LOG_TYPES)
            for piece in total.logs:
                entry = streams[(piece.run_key, piece.stream)]
                copy.write_row((entry[0], entry[1], *piece.row))
                entry[1] += piece.count
        positions = list(streams.values())
        conn.execute("UPDATE log_streams SET next_line = u.n FROM unnest(%s::bigint[], "
                     "%s::bigint[]) AS u(k, n) WHERE log_streams.stream_key = u.k",
                     ([key for key, _ in positions], [line for _, line in positions]))
        conn.execute("SELECT pg_notify(%s, u.n || ' ' || u.r) FROM unnest(%s::bigint[], "
                     "%s::text[]) AS u(n, r)",
                     (NOTIFY_CHANNEL, [line for _, line in positions],
                      [total.log_runs[run_key] for run_key, _ in streams]))

    def _summarise(self, total: _Work, summary: WriteSummary) -> None:
        summary.log_runs |= set(total.log_runs.values())
        summary.ended_runs |= total.ended_runs
        if not total.latest:
            return
        run_ids = sorted({run_id for run_id, _ in total.latest})
        experiments = dict(self._conn.execute(
            "SELECT run_id, experiment FROM runs WHERE run_id = ANY(%s)",
            ([clean(r) for r in run_ids],)).fetchall())
        for (run_id, name), number in total.latest.items():
            summary.latest[(run_id, name)] = (experiments.get(clean(run_id), ""), number)


def _merge(work: _Work, total: _Work) -> None:
    total.metrics.extend(work.metrics)
    total.logs.extend(work.logs)
    total.latest.update(work.latest)
    total.log_runs.update(work.log_runs)
    total.ended_runs |= work.ended_runs
