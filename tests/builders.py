"""Build mltrail.v1 records and send them to a collector, for tests and benches.

Tests talk the wire protocol directly here, so the collector is tested
without the agent or the SDK in the way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc

from mltrail.common.rpc import MAX_MESSAGE
from mltrail.proto import collector_pb2, collector_pb2_grpc, records_pb2


def new_stream_id() -> str:
    return uuid.uuid4().hex


def value(v: Any) -> records_pb2.Value:
    if isinstance(v, bool):
        return records_pb2.Value(flag=v)
    if isinstance(v, int):
        return records_pb2.Value(integer=v)
    if isinstance(v, float):
        return records_pb2.Value(number=v)
    return records_pb2.Value(text=str(v))


def record(seq: int, run_id: str, t: int | None = None, **body: Any) -> records_pb2.Record:
    return records_pb2.Record(
        seq=seq, run_id=run_id, time_unix_nano=t if t is not None else time.time_ns(), **body
    )


def started(seq: int, run_id: str, experiment: str = "exp", t: int | None = None,
            **fields: Any) -> records_pb2.Record:
    return record(seq, run_id, t, run_event=records_pb2.RunEvent(
        started=records_pb2.RunStarted(experiment=experiment, **fields)))


def ended(seq: int, run_id: str, status: int = records_pb2.COMPLETED,
          error: records_pb2.ErrorDetails | None = None, t: int | None = None
          ) -> records_pb2.Record:
    return record(seq, run_id, t, run_event=records_pb2.RunEvent(
        ended=records_pb2.RunEnded(status=status, error=error)))


def scalar(seq: int, run_id: str, name: str, v: Any, step: int | None = None,
           t: int | None = None) -> records_pb2.Record:
    s = records_pb2.Scalar(value=value(v))
    if step is not None:
        s.step = step
    return record(seq, run_id, t, metric=records_pb2.Metric(name=name, scalar=s))


def series(seq: int, run_id: str, name: str, values: Sequence[float],
           steps: Sequence[int] | None = None, times: Sequence[int] | None = None
           ) -> records_pb2.Record:
    """A ScalarSeries record of ``values`` (points seq, seq + 1, ...), as the SDK packs
    ``run.log`` of floats; times a microsecond apart unless given."""
    if times is None:
        start = time.time_ns() // 1000 * 1000
        times = [start + 1000 * i for i in range(len(values))]
    packed = records_pb2.ScalarSeries(values=values, times_unix_nano=times, steps=steps or [])
    return record(seq, run_id, times[0] if times else None,
                  metric=records_pb2.Metric(name=name, series=packed))


def log(seq: int, run_id: str, data: bytes, stream: str = "stdout", **fields: Any
        ) -> records_pb2.Record:
    return record(seq, run_id, log=records_pb2.LogChunk(stream=stream, data=data, **fields))


def artifact(first_seq: int, run_id: str, path: str, data: bytes, piece: int = 1024 * 1024,
             sha256: str | None = None) -> list[records_pb2.Record]:
    """``data`` as ArtifactChunk records of ``piece`` bytes; the last carries size and sha256
    (pass ``sha256`` to send a wrong one)."""
    import hashlib

    offsets = list(range(0, len(data), piece)) or [0]
    out = []
    for n, offset in enumerate(offsets):
        last = n == len(offsets) - 1
        chunk = records_pb2.ArtifactChunk(
            path=path, offset=offset, data=data[offset:offset + piece], last=last,
            sha256=(sha256 or hashlib.sha256(data).hexdigest()) if last else "",
            size=len(data) if last else 0)
        out.append(record(first_seq + n, run_id, artifact=chunk))
    return out


def batch(stream_id: str, records: Sequence[records_pb2.Record]) -> records_pb2.Batch:
    return records_pb2.Batch(stream_id=stream_id, records=records)


def scalar_batches(run_id: str, stream_id: str, count: int, per_batch: int = 5000,
                   first_seq: int = 1) -> Iterator[records_pb2.Batch]:
    """``count`` scalar records (metric "loss", step = seq) in batches."""
    seq = first_seq
    end = first_seq + count
    while seq < end:
        n = min(per_batch, end - seq)
        yield batch(stream_id, [scalar(s, run_id, "loss", s * 0.5, step=s)
                                for s in range(seq, seq + n)])
        seq += n


class IngestClient:
    """A blocking client of Ingest.Write: one request in flight at a time."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", MAX_MESSAGE),
        ])
        self.stub = collector_pb2_grpc.IngestStub(self.channel)
        self._next_id = 0

    def write(self, batches: Iterable[records_pb2.Batch], timeout: float = 60.0
              ) -> collector_pb2.IngestResponse:
        """Send one request holding ``batches``; returns its response."""
        self._next_id += 1
        req = collector_pb2.IngestRequest(request_id=self._next_id, batches=list(batches))
        responses = list(self.stub.Write(iter([req]), timeout=timeout))
        assert len(responses) == 1, responses
        return responses[0]

    def write_stream(self, requests: Iterable[collector_pb2.IngestRequest],
                     timeout: float = 300.0) -> Iterator[collector_pb2.IngestResponse]:
        """Pipelined: every request on one stream, responses as they come."""
        return iter(self.stub.Write(iter(requests), timeout=timeout))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
