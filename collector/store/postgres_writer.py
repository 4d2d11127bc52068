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
    3. flush:     series and log streams locked in key order; each one's open
                  chunk extended in place, new chunks (chunks.py encoding) by
                  COPY; lines numbered; the new marks;
                  pg_notify per log stream (run id and position) for followers
                  on every replica, delivered at commit

Cached between calls: run_id -> run_key and metric name -> name_key (both
never change once committed; dropped whenever a transaction rolls back).
Line numbers are never cached: another replica may have added lines.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from mltrail.collector.artifacts import ArtifactStore, contiguous
from mltrail.collector.store import chunks
from mltrail.collector.store.base import BatchOutcome, ScalarPoint, ValidBatch, WriteSummary
from mltrail.collector.store.chunks import CHUNK_POINTS, Points
from mltrail.collector.store.sqlite_chunks import (
    LogPiece,
    compress_text,
    encode_times,
    extends,
    open_piece,
    plan_append,
    summary_row,
)
from mltrail.collector.store.sqlite_schema import CHUNK_ENCODED, CHUNK_SCALAR
from mltrail.collector.store.sqlite_writer import _line_times, _seq_of
from mltrail.common.errors import PermanentError
from mltrail.common.lines import MAX_LINE_BYTES, split_long_lines
from mltrail.proto import records_pb2

NOTIFY_CHANNEL = "mltrail_logs"

_CHUNK_COPY = ("COPY metric_chunks (run_key, name_key, kind, count, first_step, last_step, "
               "min_step, max_step, first_time, last_time, min_time, max_time, first_value, "
               "last_value, min_value, max_value, flags, data) FROM STDIN (FORMAT BINARY)")
_CHUNK_TYPES = ["int8", "int4", "int2", "int4", *["int8"] * 8, *["float8"] * 4, "int4",
                "bytea"]
_LOG_COPY = ("COPY log_chunks (stream_key, first_line, line_count, first_time, last_time, "
             "data, line_times, level, logger) FROM STDIN (FORMAT BINARY)")
_LOG_TYPES = ["int8", "int8", "int4", "int8", "int8", "bytea", "bytea", "text", "text"]
_VALUE_KINDS = {"number": chunks.KIND_NUMBER, "integer": chunks.KIND_INTEGER,
                "text": chunks.KIND_TEXT, "flag": chunks.KIND_FLAG}
_KEYS = "unnest(%s::bigint[], %s::bigint[]) AS u(a, b)"

# A series' pieces in logged order: scalar points, or one encoded Metric (time, bytes).
SeriesPiece: TypeAlias = Points | tuple[int, bytes]


def clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL: it is kept as U+FFFD, like undecodable bytes."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


@dataclass
class _LogLines:
    run_key: int
    stream: str
    piece: LogPiece


@dataclass
class _Work:
    """Rows gathered for one batch (then merged into the transaction's)."""

    hwm: int = 0
    gaps: int = 0
    series: dict[tuple[int, int], list[SeriesPiece]] = field(default_factory=dict)
    logs: list[_LogLines] = field(default_factory=list)
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
            "gap": self._gap,
        }
        self._touched: set[int] = set()  # run keys written by this transaction

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
            self._touched.clear()
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
        if batch.first_seq > hwm + 1:  # a hole: never committed silently (invariant 3)
            outcome.expected_seq = hwm + 1
            return outcome
        self._stream_id = batch.stream_id
        work = _Work(hwm=hwm)
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
        outcome.gap = work.gaps > 0
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
        if rec.seq <= hwm and not (rec.HasField("gap") and rec.gap.last_seq > hwm):
            return
        kind = rec.WhichOneof("body")
        handler = self._handlers.get(kind) if kind else None
        if handler is None:
            raise PermanentError(f"record seq {rec.seq}: unknown record kind {kind!r}")
        handler(rec, work)
        work.kinds[kind] = work.kinds.get(kind, 0) + 1

    def _scalar_rows(self, points: Sequence[ScalarPoint], hwm: int, work: _Work) -> int:
        """Gather the points above ``hwm`` per series; the hot loop, kept minimal."""
        series, latest = work.series, work.latest
        runs, names, codes = self._runs, self._names, _VALUE_KINDS
        stored = 0
        last_key: tuple[int, int] | None = None
        target = Points.empty()
        touched = self._touched
        for seq, run_id, name, time_ns, step, kind, value in points:
            if seq <= hwm:
                continue
            key = (runs.get(run_id) or self._run_key(run_id, time_ns),
                   names.get(name) or self._name_key(name))
            if key != last_key:
                target = _open_points(series.setdefault(key, []))
                touched.add(key[0])
                last_key = key
            code = codes[kind]
            target.steps.append(step)
            target.times.append(time_ns)
            target.kinds.append(code)
            target.values.append(value)
            stored += 1
            if code <= chunks.KIND_INTEGER:
                latest[(run_id, name)] = value
        return stored

    # ---- keys ---------------------------------------------------------------

    def _run_key(self, run_id: str, time_ns: int) -> int:
        key = self._runs.get(run_id)
        if key is not None:
            self._touched.add(key)
            return key
        conn = self._conn
        row = conn.execute("INSERT INTO runs (run_id, status, start_time) VALUES (%s, %s, %s) "
                           "ON CONFLICT (run_id) DO NOTHING RETURNING run_key",
                           (clean(run_id), records_pb2.RUNNING, time_ns)).fetchone()
        if row is None:  # a concurrent insert waits for the other's commit, then lands here
            row = conn.execute("SELECT run_key FROM runs WHERE run_id = %s",
                               (clean(run_id),)).fetchone()
        self._runs[run_id] = int(row[0])
        self._touched.add(int(row[0]))
        return int(row[0])

    def _gap(self, rec: records_pb2.Record, work: _Work) -> None:
        """The explanation of a hole; only its part above the mark, if it overlaps it."""
        gap = rec.gap
        self._conn.execute(
            "INSERT INTO stream_gaps VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (stream_id, "
            "first_seq) DO UPDATE SET last_seq = excluded.last_seq, records = excluded.records, "
            "reason = excluded.reason, time = excluded.time",
            (clean(self._stream_id), max(rec.seq, work.hwm + 1), gap.last_seq, gap.records,
             clean(gap.reason), rec.time_unix_nano))
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
        work.logs.append(_LogLines(run_key, clean(chunk.stream), LogPiece(
            text.count("\n") + 1, first_time, last_time, text, times, clean(chunk.level),
            clean(chunk.logger))))
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

    def _flush(self, total: _Work, changed: dict[str, int]) -> None:
        conn = self._conn
        if total.series:
            self._flush_series(total.series)
        if total.logs:
            self._flush_logs(total)
        if changed:
            conn.execute("UPDATE streams SET hwm = u.hwm FROM unnest(%s::text[], %s::bigint[]) "
                         "AS u(stream_id, hwm) WHERE streams.stream_id = u.stream_id",
                         (list(changed), list(changed.values())))
        if self._touched:  # in key order, as every lock here is taken
            conn.execute("UPDATE runs SET last_write = GREATEST(last_write, %s) WHERE run_key "
                         "= ANY(%s)", (time.time_ns(), sorted(self._touched)))
        if total.ended_runs:
            conn.execute("SELECT pg_notify(%s, 'end ' || r) FROM unnest(%s::text[]) AS r",
                         (NOTIFY_CHANNEL, sorted(total.ended_runs)))

    def _lock(self, table: str, columns: str, keys: list[tuple[Any, Any]],
              second: str = "bigint") -> None:
        """Create the missing rows of ``keys`` and lock them all, in key order."""
        params = ([a for a, _ in keys], [b for _, b in keys])
        a, b = columns.split(", ")
        pairs = f"unnest(%s::bigint[], %s::{second}[]) AS u(a, b)"
        extra = ", 0" if table == "log_streams" else ""
        self._conn.execute(f"INSERT INTO {table} ({columns}{', next_line' if extra else ''}) "
                           f"SELECT u.a, u.b{extra} FROM {pairs} ORDER BY u.a, u.b "
                           "ON CONFLICT DO NOTHING", params)
        self._conn.execute(f"SELECT 1 FROM {table} t JOIN {pairs} ON t.{a} = u.a AND "
                           f"t.{b} = u.b ORDER BY t.{a}, t.{b} FOR UPDATE OF t",
                           params).fetchall()

    def _flush_series(self, series: dict[tuple[int, int], list[SeriesPiece]]) -> None:
        """Each series' open chunk extended in place (under its series lock, so no other
        replica extends it meanwhile), the rest as new chunk rows by COPY."""
        conn = self._conn
        keys = sorted(series)
        self._lock("metric_series", "run_key, name_key", keys)
        heads = {(r, n): (key, count, data) for r, n, key, count, data in conn.execute(
            f"SELECT u.a, u.b, c.id, c.count, c.data FROM {_KEYS} CROSS JOIN LATERAL (SELECT "
            "id, kind, count, data FROM metric_chunks WHERE run_key = u.a AND name_key = u.b "
            f"ORDER BY id DESC LIMIT 1) c WHERE c.kind = {CHUNK_SCALAR} AND c.count < "
            f"{CHUNK_POINTS}", ([k[0] for k in keys], [k[1] for k in keys])).fetchall()}
        rows: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for key in keys:
            pieces = series[key]
            head = heads.get(key)
            if head is not None and isinstance(pieces[0], Points):
                points = chunks.decode(bytes(head[2]))
                room = CHUNK_POINTS - len(points)
                points.extend(pieces[0].slice(0, room))
                updates.append((*summary_row(chunks.summarize(points)), chunks.encode(points),
                                head[0]))
                pieces[0] = pieces[0].slice(room, len(pieces[0]))
            rows.extend(_chunk_rows(key, pieces))
        if updates:
            conn.cursor().executemany(
                "UPDATE metric_chunks SET (count, first_step, last_step, min_step, max_step, "
                "first_time, last_time, min_time, max_time, first_value, last_value, "
                "min_value, max_value, flags, data) = (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s) WHERE id = %s", updates)
        _copy(conn, _CHUNK_COPY, _CHUNK_TYPES, rows)

    def _flush_logs(self, total: _Work) -> None:
        """Lock the log streams in (run_key, name) order, number the lines, extend each
        stream's open chunk and add new chunks, then wake followers on every replica."""
        conn = self._conn
        keys = sorted({(lines.run_key, lines.stream) for lines in total.logs})
        self._lock("log_streams", "run_key, name", keys, "text")
        params = ([k for k, _ in keys], [n for _, n in keys])
        streams = {(r, n): [key, line] for r, n, key, line in conn.execute(
            "SELECT s.run_key, s.name, s.stream_key, s.next_line FROM log_streams s JOIN "
            "unnest(%s::bigint[], %s::text[]) AS u(a, b) ON s.run_key = u.a AND s.name = u.b",
            params).fetchall()}
        heads = {row[0]: row[1:] for row in conn.execute(
            "SELECT s.stream_key, c.first_line, c.line_count, c.first_time, c.last_time, "
            "c.data, c.line_times, c.level, c.logger FROM log_streams s JOIN unnest("
            "%s::bigint[], %s::text[]) AS u(a, b) ON s.run_key = u.a AND s.name = u.b CROSS "
            "JOIN LATERAL (SELECT * FROM log_chunks WHERE stream_key = s.stream_key ORDER BY "
            "first_line DESC LIMIT 1) c", params).fetchall()}
        pending: dict[tuple[int, str], list[LogPiece]] = {}
        for lines in total.logs:
            pending.setdefault((lines.run_key, lines.stream), []).append(lines.piece)
        rows: list[tuple[Any, ...]] = []
        for key in keys:
            stream_key, next_line = streams[key]
            head_row = heads.get(stream_key)
            head, first = None, next_line
            if head_row is not None and extends(head_row, next_line):
                head, first = open_piece(head_row)
            plan = plan_append(head, first, pending[key])
            if head is not None:
                line, piece = plan.pop(0)
                conn.execute("UPDATE log_chunks SET line_count = %s, first_time = %s, "
                             "last_time = %s, data = %s, line_times = %s, level = %s, "
                             "logger = %s WHERE stream_key = %s AND first_line = %s",
                             (*_log_values(piece), stream_key, line))
            rows.extend((stream_key, line, *_log_values(piece)) for line, piece in plan)
            streams[key][1] = next_line + sum(piece.count for piece in pending[key])
        _copy(conn, _LOG_COPY, _LOG_TYPES, rows)
        positions = [streams[key] for key in keys]
        conn.execute("UPDATE log_streams SET next_line = u.n FROM unnest(%s::bigint[], "
                     "%s::bigint[]) AS u(k, n) WHERE log_streams.stream_key = u.k",
                     ([key for key, _ in positions], [line for _, line in positions]))
        conn.execute("SELECT pg_notify(%s, u.n || ' ' || u.r) FROM unnest(%s::bigint[], "
                     "%s::text[]) AS u(n, r)",
                     (NOTIFY_CHANNEL, [line for _, line in positions],
                      [total.log_runs[run_key] for run_key, _ in keys]))

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
    for key, pieces in work.series.items():
        total.series.setdefault(key, []).extend(pieces)
    total.logs.extend(work.logs)
    total.latest.update(work.latest)
    total.log_runs.update(work.log_runs)
    total.ended_runs |= work.ended_runs


def _open_points(pieces: list[SeriesPiece]) -> Points:
    """The series' last pieces if they are points, else a new one after an encoded record."""
    if not pieces or not isinstance(pieces[-1], Points):
        pieces.append(Points.empty())
    return pieces[-1]


def _chunk_rows(key: tuple[int, int], pieces: list[SeriesPiece]) -> list[tuple[Any, ...]]:
    run_key, name_key = key
    rows: list[tuple[Any, ...]] = []
    for piece in pieces:
        if isinstance(piece, Points):
            for first in range(0, len(piece), CHUNK_POINTS):
                part = piece.slice(first, first + CHUNK_POINTS)
                rows.append((run_key, name_key, CHUNK_SCALAR,
                             *summary_row(chunks.summarize(part)), chunks.encode(part)))
        else:
            time_ns, data = piece
            rows.append((run_key, name_key, CHUNK_ENCODED, 1, None, None, None, None,
                         time_ns, time_ns, time_ns, time_ns, None, None, None, None, 0, data))
    return rows


def _log_values(piece: LogPiece) -> tuple[Any, ...]:
    return (piece.count, piece.first_time, piece.last_time, compress_text(piece.text),
            encode_times(piece.times), piece.level, piece.logger)


def _copy(conn: Any, sql: str, types: list[str], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        with conn.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
