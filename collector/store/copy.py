"""``mltrail store copy``: a whole history from a SQLite store into another store.

Each source run is replayed as records of one stream of its own
(``store-copy:<run_id>``, seqs from 1, always the same records in the same
order for the same source): its start (experiment, names, parent, tags,
properties), its metrics (scalar points and the other kinds, in logged
order), its log lines (chunks of one stream, level and logger), its
artifacts (read from the source artifact store a piece at a time) and its
end. They go through the destination's ``write_batch`` like any ingest, so
the destination's high-water marks make the copy resumable and idempotent:
an interrupted copy run again skips what was committed, and a second copy
stores nothing. The source's own stream marks are carried over too, so an
agent that still holds unacknowledged batches for the old store does not
store them twice in the new one. Runs and marks are copied workspace by
workspace, each into the same workspace of the destination (tokens are not
copied: their digests are keyed by the source collector's secret). At the
end every run's counts (metric records, log lines, artifacts) are compared;
a difference is an error.

Stop the collectors of the source first: a source that changes while it is
copied replays differently.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mltrail.collector.artifacts import ArtifactStore
from mltrail.collector.store.base import (
    DEFAULT_WORKSPACE,
    MAX_RUN_PAGE,
    LogQuery,
    Store,
    metric_records,
    run_page_token,
)
from mltrail.collector.store.series import SeriesQuery
from mltrail.collector.validate import validate_batch
from mltrail.common.errors import PermanentError
from mltrail.proto import collector_pb2, records_pb2

BATCH_RECORDS = 2000
BATCH_BYTES = 4 * 1024 * 1024
LOG_PAGE = 5000
ARTIFACT_PIECE = 1024 * 1024
_ENDED = (records_pb2.COMPLETED, records_pb2.FAILED, records_pb2.CANCELED)


@dataclass
class CopyReport:
    runs: int = 0
    stored: int = 0  # records the destination stored this time
    skipped: int = 0  # records it already had (an earlier copy)
    marks: int = 0
    mismatches: list[str] = field(default_factory=list)


def copy_store(source: Store, source_path: str, source_artifacts: ArtifactStore,
               destination: Store, import_marks: Callable[[dict[str, int], str], None],
               progress: Callable[[str], None] = lambda _: None) -> CopyReport:
    """``import_marks(marks, workspace)`` keeps a workspace's stream marks in the
    destination where they are higher."""
    report = CopyReport()
    for workspace in source_workspaces(source_path):
        runs = _all_runs(source, workspace)
        for number, run in enumerate(runs, 1):
            _copy_run(source, source_artifacts, destination, run, workspace, report)
            progress(f"workspace {workspace}: run {number}/{len(runs)} {run.run_id}: copied")
        marks = source_marks(source_path, workspace)
        import_marks(marks, workspace)
        report.marks += len(marks)
        report.runs += len(runs)
        for run in runs:
            before = source.get_run(run.run_id, workspace)
            after = destination.get_run(run.run_id, workspace)
            counts = [(r.metric_records, r.log_lines, r.artifacts) if r else None
                      for r in (before, after)]
            if counts[0] != counts[1]:
                report.mismatches.append(
                    f"run {run.run_id} (workspace {workspace}): source (metrics, lines, "
                    f"artifacts) {counts[0]}, destination {counts[1]}")
    return report


def _all_runs(store: Store, workspace: str) -> list[collector_pb2.RunInfo]:
    runs: list[collector_pb2.RunInfo] = []
    while page := store.list_runs(collector_pb2.ListRunsRequest(
            limit=MAX_RUN_PAGE, page_token=run_page_token(runs[-1]) if runs else ""),
            workspace):
        runs.extend(page)
    return runs


def source_workspaces(path: str) -> list[str]:
    """Every workspace of the SQLite store at ``path`` that holds runs or stream marks."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return sorted({DEFAULT_WORKSPACE} | {w for (w,) in conn.execute(
            "SELECT DISTINCT workspace FROM runs UNION SELECT workspace FROM streams")})


def source_marks(path: str, workspace: str = DEFAULT_WORKSPACE) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return {sid: int(hwm) for sid, hwm in conn.execute(
            "SELECT stream_id, hwm FROM streams WHERE workspace = ?", (workspace,))}


class _Replay:
    """Records of one run's copy stream, written in batches as they accumulate."""

    def __init__(self, destination: Store, run_id: str, workspace: str,
                 report: CopyReport) -> None:
        self._destination = destination
        self._workspace = workspace
        self._run_id = run_id
        self._report = report
        self._stream = f"store-copy:{run_id}"
        self._records: list[records_pb2.Record] = []
        self._bytes = 0
        self._seq = 0

    def add(self, time_ns: int, **body: object) -> None:
        self._seq += 1
        record = records_pb2.Record(seq=self._seq, time_unix_nano=time_ns, run_id=self._run_id,
                                    **body)
        self._records.append(record)
        self._bytes += record.ByteSize()
        if len(self._records) >= BATCH_RECORDS or self._bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._records:
            return
        batch = records_pb2.Batch(stream_id=self._stream, records=self._records)
        outcome = self._destination.write_batch([validate_batch(batch, self._workspace)]
                                                  ).outcomes[0]
        if outcome.error:
            raise PermanentError(f"copying run {self._run_id!r}: the destination refused "
                                 f"records {self._records[0].seq}-{self._records[-1].seq} "
                                 f"({outcome.error}); what was copied before is kept")
        self._report.stored += outcome.stored
        self._report.skipped += outcome.duplicates
        self._records, self._bytes = [], 0


def _copy_run(source: Store, artifacts: ArtifactStore, destination: Store,
              run: collector_pb2.RunInfo, workspace: str, report: CopyReport) -> None:
    replay = _Replay(destination, run.run_id, workspace, report)
    replay.add(run.start_time_unix_nano, run_event=records_pb2.RunEvent(
        started=records_pb2.RunStarted(
            experiment=run.experiment, display_name=run.display_name,
            parent_run_id=run.parent_run_id, run_type=run.run_type, tags=dict(run.tags),
            properties=dict(run.properties))))
    for record in metric_records(source.read_series(SeriesQuery(run.run_id))):
        replay.add(record.time_unix_nano, metric=record.metric)
    for chunk in _log_chunks(source, run.run_id):
        replay.add(chunk.line_times_unix_nano[0], log=chunk)
    for info in source.list_artifacts(run.run_id):
        for chunk in _artifact_chunks(artifacts, info):
            replay.add(info.time_unix_nano, artifact=chunk)
    if run.status in _ENDED:
        ended = records_pb2.RunEnded(status=run.status)
        if run.HasField("error"):
            ended.error.CopyFrom(run.error)
        replay.add(run.end_time_unix_nano, run_event=records_pb2.RunEvent(ended=ended))
    replay.flush()


def _log_chunks(store: Store, run_id: str) -> Iterator[records_pb2.LogChunk]:
    """The run's lines, per stream in order, as chunks of lines sharing level and logger."""
    for stream in sorted(store.log_positions(run_id)):
        start = 0
        while lines := store.read_logs(LogQuery(run_id, streams=[stream], from_line=start,
                                                limit=LOG_PAGE)):
            start = lines[-1].line + 1
            group: list[collector_pb2.LogLine] = []
            for line in lines:
                if group and (line.level, line.logger) != (group[0].level, group[0].logger):
                    yield _chunk(stream, group)
                    group = []
                group.append(line)
            yield _chunk(stream, group)


def _chunk(stream: str, lines: list[collector_pb2.LogLine]) -> records_pb2.LogChunk:
    text = "".join(line.text + "\n" for line in lines)
    return records_pb2.LogChunk(stream=stream, data=text.encode(), level=lines[0].level,
                                logger=lines[0].logger,
                                line_times_unix_nano=[line.time_unix_nano for line in lines])


def _artifact_chunks(artifacts: ArtifactStore, info: collector_pb2.ArtifactInfo
                     ) -> Iterator[records_pb2.ArtifactChunk]:
    offset = 0
    pending: bytes | None = None
    for piece in artifacts.read(info.sha256, ARTIFACT_PIECE):
        if pending is not None:
            yield records_pb2.ArtifactChunk(path=info.path, offset=offset, data=pending)
            offset += len(pending)
        pending = piece
    yield records_pb2.ArtifactChunk(path=info.path, offset=offset, data=pending or b"",
                                    last=True, sha256=info.sha256, size=info.size,
                                    content_type=info.content_type)
