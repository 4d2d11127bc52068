"""Batch validation at the edge (design.md invariant 4).

``validate_batch`` checks a whole batch before anything is written and
returns a ``ValidBatch`` or raises ``BatchRejected`` with a message naming
the stream, the record and the problem. Records are checked through
``_CHECKS``, an explicit table by body kind: a kind this collector does not
know (an empty oneof, or a field from a newer sender) is refused, never
asserted on.

NaN and infinity are accepted as a scalar value (a diverging loss is what a
user needs to see) but refused inside a JSON metric, which must be strict
JSON for every reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from mltrail.collector.store.base import DEFAULT_WORKSPACE, ScalarRun, ValidBatch
from mltrail.collector.store.chunks import (
    KIND_FLAG,
    KIND_INTEGER,
    KIND_NUMBER,
    KIND_TEXT,
    Points,
)
from mltrail.proto import records_pb2

_ENDED_STATUSES = frozenset({records_pb2.COMPLETED, records_pb2.FAILED, records_pb2.CANCELED})
_HEX = frozenset("0123456789abcdefABCDEF")
# The SDK's rules for what names things (run ids, metric names, stream names,
# experiments, stream ids), applied again here: a sender that is not our SDK
# must not store a NUL, an escape sequence or a line break in a name that a
# terminal shows later, nor a run id of 10,000 characters.
MAX_NAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_good_names: set[str] = set()  # names already checked: a run logs few names, many times


MAX_PATH_CHARS = 4096  # a log stream may be named after a file


def name_problem(text: str, longest: int = MAX_NAME_CHARS) -> str | None:
    """Why ``text`` cannot name anything, or None."""
    if len(text) > longest:
        return f"is {len(text)} characters long, over {longest}"
    found = _CONTROL.search(text)
    if found is not None:
        return (f"contains the control character U+{ord(found.group()):04X} at index "
                f"{found.start()}")
    if len(_good_names) < 100_000 and len(text) <= MAX_NAME_CHARS:
        _good_names.add(text)
    return None


def _good(text: str) -> bool:
    return text in _good_names or name_problem(text) is None


# seq, offset and size are uint64 on the wire but a signed 64-bit INTEGER in the
# store: a larger number would crash the write instead of being refused.
MAX_STORABLE = 2**63 - 1


class BatchRejected(ValueError):
    """A batch is invalid; ``reason`` is a short label for the rejected-batches counter."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _RecordProblem(ValueError):
    def __init__(self, problem: str, reason: str) -> None:
        super().__init__(problem)
        self.reason = reason


def validate_batch(batch: records_pb2.Batch, workspace: str = DEFAULT_WORKSPACE) -> ValidBatch:
    stream = batch.stream_id
    if not stream:
        raise BatchRejected("batch rejected: stream_id is empty; nothing of this batch was "
                            "stored", "no_stream")
    if not _good(stream):
        raise BatchRejected(f"batch rejected: stream_id {stream[:80]!r} "
                            f"{name_problem(stream)}; nothing of this batch was stored",
                            "bad_name")
    records = batch.records
    if not records:
        raise BatchRejected(f"batch for stream {stream!r} rejected: it has no records",
                            "empty")
    first = records[0].seq
    if first == 0:
        raise BatchRejected(f"batch for stream {stream!r} rejected: record seq 0 (index 0): "
                            "seqs start at 1; nothing of this batch was stored", "seq")
    if records[-1].seq > MAX_STORABLE:  # contiguous seqs: the last one is the largest
        raise BatchRejected(f"batch for stream {stream!r} rejected: record seq "
                            f"{records[-1].seq} (index {len(records) - 1}) is beyond the "
                            f"largest storable seq {MAX_STORABLE}; nothing of this batch was "
                            "stored", "range")
    if records[0].WhichOneof("body") == "gap":
        return _gap_batch(batch)
    runs: list[ScalarRun] = []
    open_runs: dict[tuple[str, str], ScalarRun] = {}  # the series' run being gathered
    others: list[records_pb2.Record] = []
    expected = first
    for index, rec in enumerate(records):
        # The common case inline (a call per record is a tenth of the budget):
        # a valid plain scalar joins its series' run of points.
        if rec.seq == expected and rec.WhichOneof("body") == "metric":
            metric = rec.metric
            name, run_id = metric.name, rec.run_id
            if name and run_id and metric.WhichOneof("data") == "scalar" and (
                    not metric.description) and (name in _good_names or _good(name)) and (
                    run_id in _good_names or _good(run_id)):
                scalar = metric.scalar
                value = scalar.value
                kind = value.WhichOneof("kind")
                if kind is not None:
                    run = open_runs.get((run_id, name))
                    if run is None:
                        run = open_runs[(run_id, name)] = ScalarRun(run_id, name, [],
                                                                    Points.empty())
                        runs.append(run)
                    points = run.points
                    run.seqs.append(expected)
                    points.steps.append(scalar.step if scalar.HasField("step") else None)
                    points.times.append(rec.time_unix_nano)
                    points.kinds.append(KIND_CODES[kind])
                    points.values.append(getattr(value, kind))
                    expected += 1
                    continue
        try:
            if rec.WhichOneof("body") == "metric" and rec.metric.WhichOneof("data") == "series":
                expected = _add_series(rec, expected, runs, open_runs)
                continue
            _check_record(rec, expected)
        except _RecordProblem as exc:
            raise BatchRejected(
                f"batch for stream {stream!r} rejected: record seq {rec.seq} (index "
                f"{index}): {exc}; nothing of this batch was stored", exc.reason) from None
        if open_runs and rec.WhichOneof("body") == "metric":
            open_runs.clear()  # points after it start new runs (logged order, per name)
        others.append(rec)
        expected += 1
    if expected - 1 > MAX_STORABLE:  # a series' points went past it
        raise BatchRejected(f"batch for stream {stream!r} rejected: its last seq "
                            f"{expected - 1} is beyond the largest storable seq "
                            f"{MAX_STORABLE}; nothing of this batch was stored", "range")
    return ValidBatch(stream, first, expected - 1, [compact(r) for r in runs], others,
                      workspace)


def _add_series(rec: records_pb2.Record, expected: int, runs: list[ScalarRun],
                open_runs: dict[tuple[str, str], ScalarRun]) -> int:
    """A ScalarSeries record's points join their series' run (the general path, for
    what series_wire.py does not take); the seq after its last point."""
    _check_head(rec, expected)
    metric = rec.metric
    name, run_id, series = metric.name, rec.run_id, metric.series
    if not name:
        raise _RecordProblem("metric name is empty", "bad_metric")
    _check_name(name, "metric name")
    where = f"scalar series {name!r}"
    if metric.description:
        raise _RecordProblem(f"{where} has a description (a series carries none: send a "
                             "Scalar record for a described value)", "bad_metric")
    count = len(series.values)
    if not count:
        raise _RecordProblem(f"{where} has no values", "bad_metric")
    times, steps = list(series.times_unix_nano), list(series.steps)
    if len(times) != count or len(steps) not in (0, count):
        raise _RecordProblem(f"{where} has {count} values, {len(times)} times and "
                             f"{len(steps)} steps (times: one per value; steps: one per "
                             "value, or none)", "bad_metric")
    run = open_runs.get((run_id, name))
    if run is None:
        run = open_runs[(run_id, name)] = ScalarRun(run_id, name, [], Points.empty())
        runs.append(run)
    run.seqs.extend(range(expected, expected + count))
    points = run.points
    points.steps.extend(steps or [None] * count)
    points.times.extend(times)
    points.kinds.extend([KIND_NUMBER] * count)
    points.values.extend(series.values)
    return expected + count


KIND_CODES = {"number": KIND_NUMBER, "integer": KIND_INTEGER, "text": KIND_TEXT,
              "flag": KIND_FLAG}


def compact(run: ScalarRun) -> ScalarRun:
    """Contiguous seqs as a range and plain numbers as arrays (``Points.packed``): moved
    between processes in a few bytes, or as bytes."""
    seqs = run.seqs
    if seqs[-1] - seqs[0] + 1 == len(seqs):
        run.seqs = range(seqs[0], seqs[-1] + 1)
    run.points = run.points.packed()
    return run


def _gap_batch(batch: records_pb2.Batch) -> ValidBatch:
    """A gap record stands alone in its batch and covers seq..gap.last_seq."""
    rec = batch.records[0]
    where = f"batch for stream {batch.stream_id!r} rejected: gap record seq {rec.seq}"
    if len(batch.records) != 1:
        raise BatchRejected(f"{where}: a gap record must be alone in its batch (this one has "
                            f"{len(batch.records)} records); nothing of this batch was stored",
                            "bad_gap")
    if not rec.seq <= rec.gap.last_seq <= MAX_STORABLE:
        raise BatchRejected(f"{where}: last_seq {rec.gap.last_seq} is not between the seq "
                            f"and {MAX_STORABLE}; nothing of this batch was stored", "bad_gap")
    return ValidBatch(batch.stream_id, rec.seq, rec.gap.last_seq, (), (rec,))


def _check_record(rec: records_pb2.Record, expected: int) -> None:
    _check_head(rec, expected)
    kind = rec.WhichOneof("body")
    check = _CHECKS.get(kind) if kind else None
    if check is None:
        raise _RecordProblem("unknown record kind (no body this collector knows; is the "
                             "sender newer?)", "unknown_kind")
    check(rec)


def _check_head(rec: records_pb2.Record, expected: int) -> None:
    """What every record needs: the expected seq and a run id."""
    if rec.seq != expected:
        raise _RecordProblem(f"seq {rec.seq} where {expected} was expected (seqs within a "
                             "batch must be contiguous and increasing)", "seq")
    if not rec.run_id:
        raise _RecordProblem("run_id is empty", "no_run_id")
    _check_name(rec.run_id, "run_id")


# ---- one check per record body kind ---------------------------------------------


def _check_name(text: str, field: str, longest: int = MAX_NAME_CHARS) -> None:
    problem = None if text in _good_names else name_problem(text, longest)
    if problem is not None:
        raise _RecordProblem(f"{field} {text[:80]!r} {problem}", "bad_name")


def _check_run_event(rec: records_pb2.Record) -> None:
    event = rec.run_event
    kind = event.WhichOneof("event")
    if kind == "started":
        started = event.started
        for field, text in (("experiment", started.experiment),
                            ("display_name", started.display_name),
                            ("parent_run_id", started.parent_run_id)):
            if text:
                _check_name(text, field)
        _check_keys(started.tags, "tag")
        _check_keys(started.properties, "property")
    elif kind == "tags":
        _check_keys(event.tags.tags, "tag")
        for key in event.tags.removed:
            _check_name(key, "removed tag")
    elif kind == "properties":
        _check_keys(event.properties.properties, "property")
    if kind is None:
        raise _RecordProblem("unknown run event (none of started, tags, properties, ended)",
                             "unknown_run_event")
    if kind == "ended" and event.ended.status not in _ENDED_STATUSES:
        raise _RecordProblem(
            f"run ended with status {records_pb2.RunStatus.Name(event.ended.status)}; expected "
            "COMPLETED, FAILED or CANCELED", "bad_run_event")


def _check_keys(pairs: Mapping[str, str], what: str) -> None:
    """Tag and property keys are names, as the SDK checks them (values are free text)."""
    for key in pairs:
        _check_name(key, f"{what} key")


def _check_metric(rec: records_pb2.Record) -> None:
    metric = rec.metric
    if not metric.name:
        raise _RecordProblem("metric name is empty", "bad_metric")
    _check_name(metric.name, "metric name")
    kind = metric.WhichOneof("data")
    if kind == "scalar":
        if metric.scalar.value.WhichOneof("kind") is None:
            raise _RecordProblem(f"scalar metric {metric.name!r} has no value", "bad_metric")
    elif kind == "json":
        _check_json(metric.name, metric.json.json)
    elif kind == "row":
        for cell in metric.row.cells:
            _check_name(cell.column, "column name")
    elif kind == "table":
        for column in metric.table.columns:
            _check_name(column.name, "column name")
    elif kind is None:
        raise _RecordProblem(f"metric {metric.name!r} has no data (unknown metric kind)",
                             "bad_metric")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in strict JSON")


def _check_json(name: str, text: str) -> None:
    try:
        json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise _RecordProblem(f"JSON metric {name!r} is not strict JSON: {exc}",
                             "bad_json") from None


def _check_log(rec: records_pb2.Record) -> None:
    chunk = rec.log
    if not chunk.stream:
        raise _RecordProblem("log chunk has no stream name", "bad_log")
    _check_name(chunk.stream, "log stream", MAX_PATH_CHARS)
    times = len(chunk.line_times_unix_nano)
    if times:
        data = chunk.data
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
        if times != lines:
            raise _RecordProblem(f"log chunk has {lines} lines but {times} line times",
                                 "bad_log")


def _check_artifact(rec: records_pb2.Record) -> None:
    chunk = rec.artifact
    if not chunk.path:
        raise _RecordProblem("artifact chunk has no path", "bad_artifact")
    _check_name(chunk.path, "artifact path", MAX_PATH_CHARS)
    if chunk.path.startswith("/") or any(p in ("", ".", "..") for p in chunk.path.split("/")):
        raise _RecordProblem(f"artifact path {chunk.path[:80]!r} is not a relative path without "
                             "'.', '..' or empty parts", "bad_artifact")
    if chunk.last and (len(chunk.sha256) != 64 or not set(chunk.sha256) <= _HEX):
        raise _RecordProblem(f"last chunk of artifact {chunk.path!r} has no valid sha256 "
                             f"(got {chunk.sha256!r})", "bad_artifact")
    if chunk.offset > MAX_STORABLE or chunk.size > MAX_STORABLE:
        raise _RecordProblem(f"artifact {chunk.path!r} chunk offset {chunk.offset} or size "
                             f"{chunk.size} is beyond the largest storable {MAX_STORABLE}",
                             "range")


_CHECKS: dict[str, Callable[[records_pb2.Record], None]] = {
    "run_event": _check_run_event,
    "metric": _check_metric,
    "log": _check_log,
    "artifact": _check_artifact,
}
