"""The background sender: queue -> Records -> encoded Batches -> a sink.

One ``Sender`` owns one stream (a uuid4 ``stream_id``, seq from 1, no gaps)::

    run.log() --append--> queue (collections.deque of (size, item); never waits on the network)
                            |  sender thread: build Records, number them, encode each Batch once
                            v
                          unacked (AppendRequests in memory, oldest first)
                            |  one short Append stream per cycle to the sink (agent or spool)
                            v
                          AppendAck(acked_seq) removes requests from the front; an ack that says
    "not now" (code UNAVAILABLE: the agent's disk is full, or it is stopping)
    removes nothing and counts as a failed cycle: the request is kept and sent
    again, like one the agent never got

    built_seq = last seq given to a record     acked_seq = last seq the sink acknowledged

A failed cycle leaves ``unacked`` as it is; the next cycle (after a backoff
with full jitter) sends all of it again, and the collector skips what it
already has by (stream_id, seq).

One bound: ``memory_limit`` (``MLTRAIL_MEMORY_MIB``) covers everything the
sender holds: queued items (sized by ``values.held_size``: strings, lists,
tables, console and file chunks at what they take in memory), encoded
requests, spilled requests read back for sending, and requests a send still
holds. A log call that takes it past the bound moves the oldest records to
an ``Overflow`` (a spool directory on disk) itself, until 3/4 of the bound
is held: encoded requests first, then queued items built a batch at a time.
That is local work (encoding and a disk write of about a quarter of the
bound); the lock it takes is never held over a send, so a log call never
waits on the network. The disk then holds the oldest pending requests and
memory the newest; the next sends read the disk first, so the order of the
stream holds. A request spilled while a send held it and then acknowledged
is skipped when the disk is read back, so nothing is sent twice. What is
left at exit is moved to disk too, for ``mltrail sync DIR``.
``flush`` puts a marker in the queue; once the thread reaches it, it knows
the seq to wait for.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import grpc

from mltrail.common.errors import (
    RETRYABLE_CODES,
    MltrailError,
    RetryableError,
    code_from_number,
    from_rpc_error,
)
from mltrail.common.rpc import MAX_RECORD_BYTES, MESSAGE_LIMITS
from mltrail.pipeline.delivery import (
    Backoff,
    BatchSink,
    FlushMarker,
    MemorySink,
    Overflow,
    PendingBatch,
    SenderStats,
    iter_acks,
)
from mltrail.pipeline.values import (
    CONSOLE,
    RUN_EVENT,
    SCALAR,
    SCALAR_HELD,
    QueueItem,
    SeriesPacker,
    add_record,
    held_size,
    item_size,
)
from mltrail.proto import agent_pb2, agent_pb2_grpc, records_pb2

log = logging.getLogger("mltrail.sdk")

MAX_BATCH_RECORDS = 5000
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_REQUESTS_PER_CYCLE = 64
# A batch ends before an item that would take its estimated size (an upper
# bound) past MAX_BATCH_BYTES, so it is at most MAX_BATCH_BYTES or one item
# alone: within the agent's MAX_APPEND_BYTES. A larger item would be refused
# by the agent (or by gRPC, and retried forever); it is refused here.
MAX_ITEM_BYTES = MAX_RECORD_BYTES
DEFAULT_MEMORY_LIMIT = 64 * 1024 * 1024  # MLTRAIL_MEMORY_MIB's default


class Sender:
    """Batches queued items and delivers them to ``sink`` on a daemon thread.

    ``memory_limit`` bounds the bytes the sender holds (module doc, "One
    bound"); ``overflow`` is where it spills past it.
    """

    def __init__(
        self,
        sink: BatchSink,
        overflow: Overflow | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        interval: float = 0.05,
        stream_id: str | None = None,
        pack_series: bool = True,
    ) -> None:
        self.sink = sink
        self.pack_series = pack_series  # values.SeriesPacker; False: a Record per point
        self.overflow = overflow
        self.interval = interval
        self.stream_id = stream_id or uuid.uuid4().hex
        # (held bytes, item): the size travels with the item, so taking it off costs nothing
        self.queue: deque[tuple[int, QueueItem | FlushMarker]] = deque()
        self.stats = SenderStats()
        self._lock = threading.RLock()  # the stream's order: building, spilling, unacked
        # Queued bytes = what log calls added - what the builder took. Each counter has
        # one kind of writer, and an int += on an attribute is not interrupted by another
        # thread under the GIL (no call or jump inside it), so no lock: one costs more
        # than the rest of a log call.
        self._enqueued_bytes = 0  # written by log calls only
        self._dequeued_bytes = 0  # written by the builder only (under _lock)
        self._held_elsewhere = 0  # console lines `mltrail run` holds back (count_held)
        self._spill_at = 0  # a log call spills once _enqueued_bytes passes it (_rebound)
        self._unacked: deque[PendingBatch] = deque()
        self._unacked_bytes = 0
        self._reading_bytes = 0  # spilled batches read back, and their requests
        self._sending_bytes = 0  # the requests (copies) of a send of unacked batches
        self._detached_bytes = 0  # requests spilled while a send still holds them
        self._inflight: set[int] = set()  # id() of the requests the current send holds
        self._spill_retry_at = 0.0
        self._builder = 0  # the thread in _build_batch
        self._built_seq = 0
        self._acked_seq = 0
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._failing = False  # the last send failed; cleared by the next success
        self._last_warning = -1e9
        self._last_refusal = -1e9
        self._last_spill_warning = -1e9
        self._changed = threading.Condition()
        self._waiting: dict[int, int] = {}  # id(item) -> size, for enqueue_waiting's items
        self._waiting_bytes = 0
        self._wake = threading.Event()
        self._stopping = False
        # told (run_id, started) once the sink acknowledged a run's start or end
        self.on_run_acked: Callable[[str, bool], None] | None = None
        self._run_events: deque[tuple[int, str, bool]] = deque()  # (seq, run_id, started)
        self.set_memory_limit(memory_limit)
        self._thread = threading.Thread(target=self._loop, name="mltrail-sender", daemon=True)
        self._thread.start()

    def set_memory_limit(self, memory_limit: int) -> None:
        """The bound, and what follows from it (`mltrail run` raises its own: README)."""
        with self._lock:
            self.memory_limit = memory_limit
            # A batch being built, encoded and written costs a few times its size (and
            # leaves as much to the C allocator's heaps): 1/64 of the bound, at most
            # MAX_BATCH_BYTES, keeps that small.
            self._batch_bytes = min(MAX_BATCH_BYTES, max(256 << 10, memory_limit // 64))
            # what one send may hold (a first request always goes): an eighth of the bound
            self._send_budget = max(1 << 20, min(16 << 20, memory_limit // 8))
            self._rebound()

    # ---- called from user threads ----------------------------------------

    def enqueue(self, item: QueueItem) -> None:
        """Queue ``item``; never waits on the network. Past the memory bound the call
        itself moves the oldest records to the overflow directory (a local write)."""
        if item[0] is SCALAR and type(item[5]) is not str and not item[4]:
            # run.log of a number: held_size, inlined (the name at 4 bytes a character,
            # UTF-8's most, rather than a call to measure it)
            size = SCALAR_HELD + 4 * len(item[3])
        else:
            size = held_size(item)
        self.queue.append((size, item))
        self._enqueued_bytes += size
        if self._enqueued_bytes > self._spill_at:  # held_bytes() > memory_limit
            self._relieve()

    def enqueue_scalar(self, item: QueueItem) -> None:
        """``enqueue`` for `run.log` of a number under a name checked before, with no
        description: at a fixed size (values.SCALAR_HELD; the name is the shared
        object validation keeps, counted in no record)."""
        self.queue.append((SCALAR_HELD, item))
        self._enqueued_bytes += SCALAR_HELD
        if self._enqueued_bytes > self._spill_at:  # held_bytes() > memory_limit
            self._relieve()

    def enqueue_waiting(self, item: QueueItem, size: int, backlog: int) -> None:
        """Queue ``item`` (about ``size`` bytes) once fewer than ``backlog`` bytes
        queued this way wait to be built into batches.

        For `mltrail run`'s console: a command printing faster than the agent
        takes it is slowed down (its pipe fills) instead of the queue growing
        until memory runs out. ``enqueue`` itself never waits."""
        with self._changed:
            while self._waiting_bytes >= backlog and not self._stopping:
                self._wake.set()
                self._changed.wait(0.5)
            self._waiting_bytes += size
            self._waiting[id(item)] = size
        self.enqueue(item)
        self._wake.set()

    def held_bytes(self) -> int:
        """What the sender holds in memory: queued items, encoded batches, spilled
        batches read back for sending or still held by a send."""
        return (self._enqueued_bytes - self._dequeued_bytes + self._unacked_bytes
                + self._held_elsewhere + self._reading_bytes + self._sending_bytes
                + self._detached_bytes)

    def _rebound(self) -> None:
        """After a change to what is held besides the queue: where log calls spill."""
        self._spill_at = self.memory_limit - (self.held_bytes() - self._enqueued_bytes)

    def count_held(self, delta: int) -> None:
        """Bytes held for this sender elsewhere (console lines the launcher holds
        back during a flood) count in the bound too; past it, the sender spills."""
        self._held_elsewhere += delta
        self._rebound()
        if delta > 0 and self.held_bytes() > self.memory_limit:
            self._relieve()

    def flush(self, timeout: float, progress: Callable[[int, float], None] | None = None) -> int:
        """Wait until everything queued so far is acknowledged; returns records still pending."""
        marker = FlushMarker()
        self.queue.append((0, marker))
        self._wake.set()
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while True:
            remaining = self._pending_for(marker)
            left = deadline - time.monotonic()
            if remaining == 0 or left <= 0:
                return remaining
            if progress is not None and time.monotonic() - started > 1.0:
                progress(remaining, time.monotonic() - started)
            with self._changed:
                self._changed.wait(min(left, 1.0))

    def _pending_for(self, marker: FlushMarker) -> int:
        if not marker.event.is_set():  # an estimate: the queue also holds the marker
            return self._built_seq - self._acked_seq + max(0, len(self.queue) - 1)
        return max(0, marker.target_seq - self._acked_seq)

    def pending(self) -> int:
        return self._built_seq - self._acked_seq + len(self.queue)

    @property
    def acked_seq(self) -> int:
        return self._acked_seq

    def close(self, timeout: float) -> int:
        """Flush up to ``timeout``, stop the thread, move what is left to the overflow.

        Returns how many records were not acknowledged (kept in the overflow
        directory if there is one, else lost with the process).
        """
        self.flush(timeout)
        self._stopping = True
        self._wake.set()
        with self._changed:
            self._changed.notify_all()  # a log call waiting for a local sink
        self._thread.join(timeout=1.0)  # a cycle ends at once unless a send is blocked
        if self._thread.is_alive():
            # An Append may block for a minute (the agent's spool full under `block`):
            # closing the sink cancels it. The thread must be gone before what is left
            # is counted and spilled, or its late ack would pop what was spilled.
            self.sink.close()
            self._thread.join()
        with self._lock:
            if self.overflow is not None:
                self._spill_down(0, final=True)  # a batch at a time: within the bound
            while self.queue:  # count what is left exactly: every item gets its seq
                self._build_batch()
            remaining = self._built_seq - self._acked_seq
        if self.overflow is not None:
            self.overflow.close()
        self.sink.close()
        return remaining

    def _relieve(self) -> None:
        """Past the bound: spill the oldest records until 15/16 of it is held.

        Local work only (encoding, a disk write; the lock is never held over a
        send). Without an overflow, a local sink (an offline spool) is waited
        for, since its writes are local too."""
        if threading.current_thread() is self._thread:
            return  # a record logged by the sender's own thread (a logging handler)
        if self.overflow is None:
            if getattr(self.sink, "local", False):
                with self._changed:
                    while self.held_bytes() > self.memory_limit and not self._stopping:
                        self._wake.set()
                        self._changed.wait(0.5)
            return
        if time.monotonic() < self._spill_retry_at:  # its disk failed a moment ago
            return
        if self._builder == threading.get_ident():
            return  # a record logged while this thread builds (a logging handler): later
        self._spill_to_target()

    def _spill_to_target(self) -> None:
        with self._lock:
            self._spill_down(self.memory_limit - self.memory_limit // 16)

    # ---- the sender thread ------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._cycle()
            except Exception:  # a bug here must not kill delivery silently
                log.exception("mltrail sender: unexpected error; retrying")
                time.sleep(self.interval)
            with self._changed:
                self._changed.notify_all()

    def _cycle(self) -> None:
        # Encoded only what the next send takes: a batch encoded here and spilled and
        # freed by a log call's thread would grow the C allocator's heaps of both.
        while self.queue and self._unacked_bytes < self._send_budget:
            with self._lock:  # a batch at a time: a log call past the bound waits little
                self._build_batch()
        if time.monotonic() >= self._retry_at:
            if self.overflow is not None and self.overflow.has_pending():
                self._send_spilled()
            elif self._unacked:
                self._send_unacked()
        if self.overflow is not None and self.held_bytes() > self.memory_limit:
            self._spill_to_target()
        if (self.queue or self._unacked) and time.monotonic() >= self._retry_at:
            self._wake.set()  # more to do now: no idle wait

    def _build_batch(self) -> None:
        """Turn up to one batch worth of queued items into one AppendRequest (lock held)."""
        self._builder = threading.get_ident()
        try:
            self._build_one()
        finally:
            self._builder = 0

    def _build_one(self) -> None:
        batch = records_pb2.Batch(stream_id=self.stream_id)
        packer = SeriesPacker(batch, self.pack_series)  # float points: a record a series
        first = self._built_seq + 1
        seq, size, end = first, 0, first + MAX_BATCH_RECORDS
        queue = self.queue
        held = 0
        console = False  # a batch of console output only: the agent may drop it
        limit = self._batch_bytes
        # Markers met while points are held: a series' points take their seqs together,
        # so a point logged before the marker may get a seq after a later one's. They are
        # answered with the batch's last seq.
        markers: list[FlushMarker] = []
        while queue and seq + packer.points < end and size < limit:
            item_held, item = queue[0]
            if isinstance(item, FlushMarker):
                queue.popleft()
                if packer.points:
                    markers.append(item)
                else:
                    item.target_seq = seq - 1
                    item.event.set()
                continue
            item_bytes = item_size(item)
            if seq + packer.points > first and (size + item_bytes > limit
                                                or (item[0] == CONSOLE) != console):
                break  # it goes first in the next batch
            console = item[0] == CONSOLE
            queue.popleft()
            held += item_held
            if self._waiting:
                self._built_waiting(item)
            if packer.add(item):
                size += item_bytes
                continue
            seq = packer.flush(seq)  # the points before it keep their place
            if item_bytes > MAX_ITEM_BYTES:  # validation bounds calls far below this
                self._refuse_item(item, f"about {item_bytes} bytes, over {MAX_ITEM_BYTES}")
                continue
            records = len(batch.records)
            try:
                add_record(batch, item, seq)
            except Exception as exc:  # e.g. a string protobuf cannot encode
                del batch.records[records:]  # a record half filled
                self._refuse_item(item, exc)
                continue
            if item[0] == RUN_EVENT and self.on_run_acked is not None:
                self._note_run_event(seq, item)
            seq += 1
            size += item_bytes
        seq = packer.flush(seq)
        if seq > first:
            self._add_request(batch, first, seq - 1, console)
        for marker in markers:
            marker.target_seq = seq - 1
            marker.event.set()
        self._dequeued_bytes += held  # after the request is counted: never below real
        self._rebound()

    def _note_run_event(self, seq: int, item: QueueItem) -> None:
        kind = item[3].WhichOneof("event")
        if kind in ("started", "ended"):
            self._run_events.append((seq, item[1], kind == "started"))

    def _built_waiting(self, item: QueueItem) -> None:
        size = self._waiting.pop(id(item), 0)
        if size:
            with self._changed:
                self._waiting_bytes -= size
                self._changed.notify_all()

    def _refuse_item(self, item: QueueItem, reason: object) -> None:
        """Count and drop an item no batch can carry, before it takes a seq: its
        neighbours go on, and nothing waits for its ack (invariant 4)."""
        self.stats.records_refused += 1
        now = time.monotonic()
        if now - self._last_refusal > 60.0:  # rate limit: once a minute
            self._last_refusal = now
            log.error("mltrail: a %s record of run %s could not be sent and was dropped "
                      "(%d so far): %s", item[0], item[1], self.stats.records_refused, reason)

    def _add_request(self, batch: records_pb2.Batch, first: int, last: int,
                     droppable: bool = False) -> None:
        data = batch.SerializeToString()
        self._unacked.append(PendingBatch(self.stream_id, first, last, data, droppable))
        self._unacked_bytes += len(data)
        self._built_seq = last
        self.stats.records_built += last - first + 1

    def _send_unacked(self) -> None:
        with self._lock:  # the oldest requests, up to the send budget
            pending: list[PendingBatch] = []
            size = 0
            for batch in self._unacked:
                if len(pending) == self._requests_per_send() or (
                        pending and size + len(batch.batch) > self._send_budget):
                    break
                pending.append(batch)
                size += len(batch.batch)
            self._inflight = {id(p) for p in pending}
            self._sending_bytes = size
            self._rebound()
        try:
            requests = [p.request() for p in pending]  # copies: _sending_bytes
            for batch, ack in zip(pending, self.sink.append(requests), strict=False):
                with self._lock:
                    self._on_ack(batch, ack)  # raises on "not now": the rest stays
                    if self._unacked and self._unacked[0] is batch:
                        self._unacked.popleft()
                        self._unacked_bytes -= len(batch.batch)
                        self._rebound()
                    # else a log call spilled it meanwhile: _send_spilled skips it
                self._tell_run_acked()
        except (MltrailError, OSError) as exc:
            self._on_failure(exc)
            return
        finally:
            with self._lock:
                self._inflight = set()
                self._sending_bytes = self._detached_bytes = 0
                self._rebound()
        self._on_success()

    def _send_spilled(self) -> None:
        """The disk holds the oldest pending requests: they go first."""
        assert self.overflow is not None  # checked by the caller
        with self._lock:
            read = self.overflow.read(self._requests_per_send(), self._send_budget)
            # those a send acknowledged after a log call had spilled them are done
            requests = [r for r in read if r.last_seq > self._acked_seq]
            if not requests:
                self.overflow.ack_read()
                return
            self._reading_bytes = 2 * sum(len(r.batch) for r in requests)  # and each request
            self._rebound()
        acked = 0
        try:
            messages = [r.request() for r in requests]
            for request, ack in zip(requests, self.sink.append(messages), strict=False):
                with self._lock:
                    self._on_ack(request, ack)
                self._tell_run_acked()
                acked += 1
        except (MltrailError, OSError) as exc:
            self._on_failure(exc)
            return
        finally:
            self._reading_bytes = 0
            self._rebound()
        if acked == len(requests):
            with self._lock:
                self.overflow.ack_read()
        self._on_success()

    def _requests_per_send(self) -> int:
        """While the sink fails, one request finds out whether it is back (and
        reading more of the disk back into memory would be in vain)."""
        return 1 if self._failing else MAX_REQUESTS_PER_CYCLE

    def _on_success(self) -> None:
        self._backoff.reset()
        if self._failing:
            self._failing = False
            log.warning("mltrail: %s is reachable again; delivery resumed", self.sink.description)

    def _on_ack(self, request: PendingBatch, ack: agent_pb2.AppendAck) -> None:
        count = request.last_seq - request.first_seq + 1
        if ack.code and code_from_number(ack.code) in RETRYABLE_CODES:
            raise RetryableError(f"{self.sink.description} cannot take records now: {ack.error}",
                                 retry_after=ack.retry_after_ms / 1000 or None)
        if ack.error:
            # Refused as invalid: retrying would fail the same way (invariant 4).
            self.stats.records_refused += count
            log.error("mltrail: %s refused records %d..%d of stream %s: %s",
                      self.sink.description, request.first_seq, request.last_seq,
                      request.stream_id, ack.error)
        else:
            self.stats.records_acked += count
        self._acked_seq = max(self._acked_seq, request.last_seq)

    def _tell_run_acked(self) -> None:
        """Run starts and ends the sink acknowledged (outside the lock: a callback)."""
        events = self._run_events
        while events and events[0][0] <= self._acked_seq and self.on_run_acked is not None:
            _, run_id, started = events.popleft()
            self.on_run_acked(run_id, started)

    def _on_failure(self, exc: Exception) -> None:
        self.stats.send_failures += 1
        self._failing = True
        delay = self._backoff.next_delay()
        if isinstance(exc, RetryableError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        self._retry_at = time.monotonic() + delay
        now = time.monotonic()
        if now - self._last_warning > 60.0:  # rate limit: once a minute
            self._last_warning = now
            log.warning(
                "mltrail: cannot deliver to %s (%s); %d records kept in memory, retrying",
                self.sink.description, exc, self.pending())

    def _spill_down(self, target: int, final: bool = False) -> None:
        """Move the oldest records in memory to the overflow until at most ``target``
        bytes are held (lock held): encoded batches first, then queued items, built
        and written a batch at a time, so the stream's order holds on disk."""
        assert self.overflow is not None  # checked by the callers
        spilled, where = 0, str(self.overflow.directory)
        while self.held_bytes() > target:
            if not self._unacked:
                if not self.queue:
                    break
                self._build_batch()
                continue
            request = self._unacked[0]
            try:
                where = self.overflow.spill([request])
            except (MltrailError, OSError) as exc:  # its disk is full too: keep them in memory
                self._spill_failed(exc, final)
                break
            self._unacked.popleft()
            self._unacked_bytes -= len(request.batch)
            if id(request) in self._inflight:  # a send holds it until it returns
                self._detached_bytes += len(request.batch)
            spilled += request.last_seq - request.first_seq + 1
        self._rebound()
        if not spilled:
            return
        self.stats.records_spilled += spilled
        now = time.monotonic()
        if now - self._last_spill_warning > 60.0:  # once a minute, however often it spills
            self._last_spill_warning = now
            log.warning("mltrail: %s takes records slower than they come or is unreachable; "
                        "%d records moved from memory to %s so far (memory bound %d MiB); "
                        "they are sent from there", self.sink.description,
                        self.stats.records_spilled, where, self.memory_limit >> 20)

    def _spill_failed(self, exc: Exception, final: bool) -> None:
        self._spill_retry_at = time.monotonic() + 1.0
        now = time.monotonic()
        if final or now - self._last_spill_warning > 60.0:
            self._last_spill_warning = now
            assert self.overflow is not None
            log.error("mltrail: cannot move records to %s (%s); %d records stay in memory, "
                      "over the memory bound", self.overflow.directory, exc, self.pending())


class AgentSink:
    """The agent's ``Append`` stream over its unix socket; one short stream per call."""

    def __init__(self, socket_path: str, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.description = f"the mltrail agent at {socket_path}"
        self.timeout = timeout
        self.channel = grpc.insecure_channel(f"unix:{socket_path}", options=[
            *MESSAGE_LIMITS,
            # A local socket is cheap to try: an agent that is back is found within
            # seconds (gRPC's own default backs off to two minutes), as the spill waits.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ])
        self.stub = agent_pb2_grpc.AgentStub(self.channel)

    def append(self, requests: Sequence[agent_pb2.AppendRequest]) -> Iterator[agent_pb2.AppendAck]:
        try:
            yield from self.stub.Append(iter(requests), timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        except ValueError as err:  # "Channel closed!": Sender.close cancelled the send
            raise RetryableError(f"the channel to the agent is closed: {err}") from None

    def wait_forwarded(self, stream_id: str, seq: int, timeout: float
                       ) -> agent_pb2.WaitForwardedResponse:
        request = agent_pb2.WaitForwardedRequest(
            stream_id=stream_id, seq=seq, timeout_seconds=timeout)
        try:
            return self.stub.WaitForwarded(request, timeout=timeout + 5.0)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def info(self, timeout: float = 5.0) -> agent_pb2.AgentInfo:
        try:
            return self.stub.Info(agent_pb2.AgentInfoRequest(), timeout=timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def close(self) -> None:
        self.channel.close()




__all__ = ["AgentSink", "Backoff", "BatchSink", "FlushMarker", "MemorySink", "Overflow",
           "PendingBatch", "Sender", "SenderStats", "iter_acks"]
