"""The parts of the SDK's delivery that the sender is built from.

``BatchSink`` (the agent, or an offline spool) and ``Overflow`` (the spill
directory) are the interfaces; ``PendingBatch`` is an encoded batch on its
way; ``MemorySink`` is a sink for tests and benchmarks.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mltrail.common.errors import RetryableError
from mltrail.pipeline.values import point_records
from mltrail.proto import agent_pb2, records_pb2


class BatchSink(Protocol):
    """Where encoded batches go: the agent, or a spool directory when offline."""

    description: str

    def append(self, requests: Sequence[agent_pb2.AppendRequest]) -> Iterator[agent_pb2.AppendAck]:
        """One ack per request, in order; raises on a transport failure."""
        ...

    def close(self) -> None:
        """Idempotent; makes an append blocked in another thread raise."""
        ...


class Overflow(Protocol):
    """Disk space for the oldest pending requests when memory is full (module doc)."""

    directory: Path

    def spill(self, requests: Sequence[PendingBatch]) -> str:
        """Keep ``requests`` on disk after those already there; returns the directory."""
        ...

    def has_pending(self) -> bool: ...

    def read(self, max_frames: int, max_bytes: int) -> list[PendingBatch]:
        """The oldest spilled requests not yet confirmed by ``ack_read``."""
        ...

    def ack_read(self) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class PendingBatch:
    """An encoded batch not yet acknowledged: the fields of its AppendRequest,
    kept without the copy of ``batch`` a protobuf message makes (and makes again
    on every read of the field); ``request()`` builds the message for a send."""

    stream_id: str
    first_seq: int
    last_seq: int
    batch: bytes
    droppable: bool = False

    def request(self) -> agent_pb2.AppendRequest:
        return agent_pb2.AppendRequest(stream_id=self.stream_id, first_seq=self.first_seq,
                                       last_seq=self.last_seq, batch=self.batch,
                                       droppable=self.droppable)


@dataclass
class FlushMarker:
    """Queued by ``flush``; the thread fills in the seq reached at that point."""

    event: threading.Event = field(default_factory=threading.Event)
    target_seq: int = 0


@dataclass
class SenderStats:
    records_built: int = 0
    records_acked: int = 0
    records_refused: int = 0
    records_spilled: int = 0
    send_failures: int = 0


class Backoff:
    """Exponential backoff with full jitter, reset by a success."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** min(self.failures, 16)))

    def reset(self) -> None:
        self.failures = 0



class MemorySink:
    """A sink that keeps requests in a list: for tests and benchmarks.

    ``down = True`` makes every append fail as an unreachable agent would;
    a request whose first_seq is in ``refuse`` is acknowledged with an error.
    """

    description = "an in-memory sink"

    def __init__(self) -> None:
        self.received: list[agent_pb2.AppendRequest] = []
        self.down = False
        self.refuse: set[int] = set()
        self.calls = 0

    def append(self, requests: Sequence[agent_pb2.AppendRequest]
               ) -> Iterator[agent_pb2.AppendAck]:
        self.calls += 1
        if self.down:
            raise RetryableError("UNAVAILABLE: the in-memory sink is down")
        for request in requests:
            if request.first_seq in self.refuse:
                yield agent_pb2.AppendAck(stream_id=request.stream_id, error="refused")
                continue
            self.received.append(request)
            yield agent_pb2.AppendAck(stream_id=request.stream_id, acked_seq=request.last_seq)

    def records(self) -> list[records_pb2.Record]:
        """Every record received, decoded (a ScalarSeries as its points), in arrival order."""
        return [point for q in self.received for r in records_pb2.Batch.FromString(q.batch).records
                for point in point_records(r)]

    def close(self) -> None:
        pass


def iter_acks(requests: Iterable[agent_pb2.AppendRequest]) -> Iterator[agent_pb2.AppendAck]:
    """Acks for requests accepted as they are (a sink that cannot fail per batch)."""
    for request in requests:
        yield agent_pb2.AppendAck(stream_id=request.stream_id, acked_seq=request.last_seq)

