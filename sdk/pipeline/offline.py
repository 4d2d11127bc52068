"""Runs with no agent: records written to a local spool, read back locally.

Two uses of the agent's ``Spool`` (the same on-disk format, so ``mltrail
sync DIR`` uploads either with ``drain_spool``):

- ``SpoolSink``: the sink of an offline run (``Run.get_context()`` with no
  launcher). Every batch is appended to ``$MLTRAIL_HOME/offline/<run_id>/``
  and acknowledged at once; ``read_records`` decodes it again, so
  ``get_metrics`` works offline.
- ``end_abandoned_runs``: an offline run whose process was killed (nothing
  could end it) is ended as failed in its own spool, by ``mltrail sync``.
- ``SpoolOverflow``: where an online sender moves what no longer fits in
  memory while the agent is unreachable. The directory is created only when
  something spills; its frames are read back, sent, and acknowledged in the
  spool once the agent is back.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mltrail.agent.spool import Position, Spool
from mltrail.common.settings import mltrail_home
from mltrail.pipeline.delivery import PendingBatch, iter_acks
from mltrail.pipeline.values import point_records
from mltrail.proto import agent_pb2, records_pb2

OFFLINE_DIR = "offline"


def offline_dir(name: str) -> Path:
    return mltrail_home() / OFFLINE_DIR / name


class SpoolSink:
    """Appends each batch to a spool directory; an append is its own ack."""

    local = True  # its writes are local: a log call past the memory bound waits for them

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.description = f"the offline spool {directory}"
        self.spool = Spool(directory, fsync="interval")

    def append(self, requests: Sequence[agent_pb2.AppendRequest]
               ) -> Iterator[agent_pb2.AppendAck]:
        for request in requests:
            self.spool.append(request.stream_id, request.first_seq, request.last_seq,
                              request.batch)
        return iter_acks(requests)

    def close(self) -> None:
        self.spool.close()


class SpoolOverflow:
    """Disk space for an online sender's oldest pending batches (module doc)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._spool: Spool | None = None
        self._read_end: Position | None = None

    def spill(self, requests: Sequence[PendingBatch]) -> str:
        spool = self._open()
        for request in requests:
            spool.append(request.stream_id, request.first_seq, request.last_seq, request.batch,
                         request.droppable)
        return str(self.directory)

    def has_pending(self) -> bool:
        return self._spool is not None and not self._spool.empty()

    def read(self, max_frames: int, max_bytes: int) -> list[PendingBatch]:
        """The oldest spilled batches not yet acknowledged (at least one, then up to
        ``max_bytes``); ``ack_read`` confirms them."""
        spool = self._open()
        frames = spool.read(spool.ack_position, max_bytes, max_frames)
        self._read_end = frames[-1].end if frames else None
        return [PendingBatch(f.stream_id, f.first_seq, f.last_seq, f.batch, f.droppable)
                for f in frames]

    def ack_read(self) -> None:
        if self._spool is not None and self._read_end is not None:
            self._spool.ack(self._read_end)
            self._read_end = None

    def close(self) -> None:
        """Close; a spill that was fully delivered leaves no directory behind."""
        if self._spool is None:
            return
        delivered = self._spool.empty()
        self._spool.close()
        if delivered:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _open(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(self.directory, fsync="interval")
        return self._spool


def end_abandoned_runs(directory: Path) -> list[str]:
    """End as failed the offline runs of ``directory`` that started and never ended.

    Only a spool no process holds (its lock is free: the writer is gone) and
    only offline runs: their stream lives in this spool alone, so the end
    record takes the next seq of it. Raises ``SpoolLockedError`` if in use."""
    spool = Spool(directory, fsync="always")
    try:
        open_runs: dict[str, str] = {}  # run_id -> stream_id
        last: dict[str, int] = {}
        for stream_id, record in _stream_records(spool):
            last[stream_id] = max(last.get(stream_id, 0), record.seq)
            event = record.run_event if record.HasField("run_event") else None
            if event is not None and event.HasField("started") and (
                    event.started.run_type == "offline"):
                open_runs[record.run_id] = stream_id
            elif event is not None and event.HasField("ended"):
                open_runs.pop(record.run_id, None)
        for run_id, stream_id in open_runs.items():
            seq = last[stream_id] = last[stream_id] + 1
            error = records_pb2.ErrorDetails(
                code="ProcessExited", exit_code=-1,
                message="the process that logged this offline run exited without ending it "
                        "(killed, or it crashed); found by mltrail sync; everything it had "
                        "written was kept")
            batch = records_pb2.Batch(stream_id=stream_id, records=[records_pb2.Record(
                seq=seq, time_unix_nano=time.time_ns(), run_id=run_id,
                run_event=records_pb2.RunEvent(ended=records_pb2.RunEnded(
                    status=records_pb2.FAILED, error=error)))])
            spool.append(stream_id, seq, seq, batch.SerializeToString())
        return list(open_runs)
    finally:
        spool.close()


def _stream_records(spool: Spool) -> Iterator[tuple[str, records_pb2.Record]]:
    position = spool.ack_position
    while frames := spool.read(position, 8 * 1024 * 1024):
        for frame in frames:
            for packed in records_pb2.Batch.FromString(frame.batch).records:
                for record in point_records(packed):
                    yield frame.stream_id, record
        position = frames[-1].end


def read_records(spool: Spool) -> Iterator[records_pb2.Record]:
    """Every record in a spool from its ack position, in order (reading an offline run)."""
    return (record for _, record in _stream_records(spool))
