"""The agent's spool: a write-ahead log of SDK batches on disk.

A spool is a directory::

    spool/
      segments/00000000000000000001.seg   append-only frames, oldest first
      segments/00000000000000000002.seg   <- the write segment (newest)
      ledger.json                         the acknowledged position
      dead/letters.seg                    batches the collector refused
      dead/index.jsonl                    their positions here, until a gap record replaced them

Segments hold CRC32C frames (``frames.py`` has the format); a frame's
``batch`` is an encoded Batch that the agent never decodes.

Positions are ``(segment, offset)`` pairs; they only grow::

    segment 1         segment 2                 segment 3 (write segment)
    [xxxxxxxxxxxxx]   [xxxxxx|................]  [..................|    ]
     deleted once      ack ->^        read ->^                write ->^
     all acked        (ledger.json)  (forwarder, in memory)

- write: the end of the last frame appended; ``append`` moves it.
- read: where the forwarder reads next. It lives in the forwarder, which
  goes back to ack after a failed send (the collector skips duplicates).
- ack: every frame before it was acknowledged by the collector (a frame set
  aside as dead letter is acknowledged once the gap record that replaces it
  was). ``ack`` moves it, deletes the segments wholly before it, then writes
  a copy to ``ledger.json`` (tmp + fsync + rename, at most every
  ``LEDGER_INTERVAL`` seconds). After a crash the ledger may lag (some
  frames are sent twice: harmless) or point into a deleted segment (the scan
  starts at the oldest one left), never lead. Deleting first is what frees a
  full disk: the ledger write itself needs space.

A full disk: ``append`` raises ``SpoolDiskFullError`` (retryable: the SDK
keeps the batch and resends it) and ``disk_full`` stays true until a write
succeeds. A batch dropped under ``drop_newest`` leaves a small gap frame in
its place (over the cap if need be) so the collector knows why its seqs
are missing.

Durability: ``fsync="always"`` returns from ``append`` only after an fsync
that covers the frame (one fsync serves every append waiting for it: group
commit); ``"interval"`` (default) returns after ``write()`` and a background
thread fsyncs every ``fsync_interval`` seconds; ``"never"`` leaves it to the
kernel. In every mode a frame is in the kernel before ``append`` returns, so
``kill -9`` of the agent loses nothing that was acknowledged.

On open, ``recovery.py`` takes the directory's lock (one writer per spool)
and checks frames from the ack position on, cutting and reporting torn or
corrupt ones; a damaged spool always opens.

The API is synchronous and thread-safe, so the SDK can use it from a plain
thread for offline runs; the agent calls it from worker threads.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mltrail.agent.frames import (
    FRAME_HEAD,
    MAGIC,
    PAYLOAD_HEAD,
    Position,
    SpoolFrame,
    append_dead_index,
    damaged_headers,
    encode_frame,
    find_next_frame,
    fsync_dir,
    parse_frame,
    read_dead_index,
    shift_frame,
    write_ledger,
)
from mltrail.agent.recovery import (
    ScanReport,
    SpoolLockedError,
    lock_directory,
    recover_segments,
    segment_path,
)
from mltrail.common.errors import MltrailError, RetryableError
from mltrail.common.gaps import gap_batch

__all__ = [
    "FRAME_HEAD", "MAGIC", "PAYLOAD_HEAD", "AppendOutcome", "Position", "ScanReport", "Spool",
    "SpoolClosedError", "SpoolDiskFullError", "SpoolFrame", "SpoolLockedError",
    "SpoolRefusedError",
    "encode_frame", "find_next_frame", "parse_frame",
]

log = logging.getLogger("mltrail.agent.spool")

LEDGER_INTERVAL = 0.2
FSYNC_POLICIES = ("always", "interval", "never")
FULL_POLICIES = ("block", "drop_newest")


class SpoolClosedError(MltrailError):
    """The spool was closed while a caller waited on it."""


class SpoolDiskFullError(RetryableError):
    """The disk refused a write; the spool keeps everything it had before."""


class SpoolRefusedError(MltrailError):
    """An append that can never fit (bigger than the whole cap)."""


@dataclass(frozen=True)
class AppendOutcome:
    spooled: bool  # False: dropped under drop_newest (counted)
    end: Position


@dataclass
class SpoolCounters:
    """Plain counters the agent's metrics read (the spool knows no Prometheus)."""

    appended_records: int = 0
    appended_bytes: int = 0
    dropped_records: int = 0
    dropped_batches: int = 0
    cut_bytes: int = 0
    cut_records: int = 0
    corrupt_frames: int = 0
    disk_full_errors: int = 0
    blocked_appends: int = 0
    dead_letters: int = 0
    dead_letter_records: int = 0
    ledger_errors: int = 0


class Spool:
    """Append-only, CRC-framed segments with a ledger; see the module docstring."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: str = "interval",
        fsync_interval: float = 0.2,
        max_bytes: int = 1 << 30,
        full_policy: str = "block",
        segment_bytes: int = 16 << 20,
        on_append: Callable[[], None] | None = None,
        writer: Callable[[int, bytes], int] = os.write,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        if full_policy not in FULL_POLICIES:
            raise ValueError(f"full_policy must be one of {FULL_POLICIES}, got {full_policy!r}")
        self.directory = Path(directory)
        self.fsync_policy = fsync
        self.max_bytes = max_bytes
        self.full_policy = full_policy
        self.segment_bytes = segment_bytes
        self.counters = SpoolCounters()
        self._on_append = on_append
        self._write = writer
        self._cond = threading.Condition()
        self._closed = False
        self._blocked = 0
        self._full_logged = False
        self._written_total = 0  # logical bytes appended since open (fsync tokens)
        self._synced_total = 0
        self._syncing = False
        self._ledger_time = 0.0
        self._ledger_pos = Position(0, 0)
        self._read_fds: dict[int, int] = {}
        self._holes: dict[Position, int] = {}  # corrupt frame start -> next frame offset
        self.disk_full = False  # the last write failed for lack of space
        self._segments_dir = self.directory / "segments"
        self._dead_dir = self.directory / "dead"
        self._segments_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_directory(self.directory)
        recovered = recover_segments(self.directory, self._segments_dir)
        self._sizes: dict[int, int] = recovered.sizes  # segment -> end of its last intact frame
        self._holes = recovered.holes
        self._ack = self._ledger_pos = recovered.ack
        self.scan_report = recovered.report
        self.counters.cut_bytes += recovered.report.cut_bytes
        self.counters.cut_records += recovered.report.cut_records
        self.counters.corrupt_frames += recovered.report.corrupt_frames
        self._write_index = max(self._sizes)
        self.dead: dict[Position, str] = read_dead_index(self._dead_dir, self._ack)
        self._fd = os.open(self._segment_path(self._write_index),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fsync_dir(self._segments_dir)
        self._sync_thread: threading.Thread | None = None
        if fsync == "interval":
            self._sync_thread = threading.Thread(
                target=self._sync_loop, args=(fsync_interval,), name="mltrail-spool-fsync",
                daemon=True,
            )
            self._sync_thread.start()

    # ---- opening -------------------------------------------------------

    def _segment_path(self, index: int) -> Path:
        return segment_path(self._segments_dir, index)

    # ---- writing -------------------------------------------------------

    def append(
        self, stream_id: str, first_seq: int, last_seq: int, batch: bytes, droppable: bool = False
    ) -> AppendOutcome:
        """Spool one batch; returns once it is in the spool under the fsync policy.

        A full spool blocks (``block``) or drops a droppable batch
        (``drop_newest``, counted). A full disk raises ``SpoolDiskFullError``
        and keeps everything spooled before.
        """
        frame = encode_frame(stream_id, first_seq, last_seq, batch, droppable)
        if len(frame) > self.max_bytes:
            raise SpoolRefusedError(
                f"a batch of {len(frame)} bytes cannot fit in a spool capped at {self.max_bytes}"
            )
        with self._cond:
            spooled = self._wait_for_room(len(frame), droppable)
            if not spooled:  # a gap record in its place: the collector learns why
                frame = encode_frame(stream_id, first_seq, last_seq, gap_batch(
                    stream_id, first_seq, last_seq, "dropped by the agent: spool full "
                    "(full_policy drop_newest)", last_seq - first_seq + 1))
                self.counters.dropped_records += last_seq - first_seq + 1
                self.counters.dropped_batches += 1
            end, token = self._write_frame(frame)
            if spooled:
                self.counters.appended_records += last_seq - first_seq + 1
                self.counters.appended_bytes += len(batch)
        if self._on_append is not None:
            self._on_append()
        if self.fsync_policy == "always":
            self._sync_up_to(token)
        return AppendOutcome(spooled, end)

    def append_gap(self, stream_id: str, first_seq: int, last_seq: int, reason: str) -> None:
        """Spool a gap record for seqs the agent will never have (a refused batch)."""
        frame = encode_frame(stream_id, first_seq, last_seq, gap_batch(
            stream_id, first_seq, last_seq, reason, last_seq - first_seq + 1))
        with self._cond:
            if self._closed:
                raise SpoolClosedError("the spool is closed (the agent is stopping)")
            self._write_frame(frame)
        if self._on_append is not None:
            self._on_append()

    def _wait_for_room(self, size: int, droppable: bool) -> bool:
        """Called with the lock held; False means: drop this batch."""
        while True:
            if self._closed:
                raise SpoolClosedError("the spool is closed (the agent is stopping)")
            if self.bytes + size <= self.max_bytes:
                if self._full_logged and self._blocked == 0:
                    self._full_logged = False
                return True
            if droppable and self.full_policy == "drop_newest":
                return False
            if not self._full_logged:
                log.warning(
                    "spool %s is full (%d of %d bytes): appends wait until the collector "
                    "acknowledges and segments are deleted", self.directory, self.bytes,
                    self.max_bytes,
                )
                self._full_logged = True
            self.counters.blocked_appends += 1
            self._blocked += 1
            try:
                self._cond.wait(timeout=1.0)
            finally:
                self._blocked -= 1

    def _write_frame(self, frame: bytes) -> tuple[Position, int]:
        size = self._sizes[self._write_index]
        if size > 0 and size + len(frame) > self.segment_bytes:
            try:
                self._roll()
            except OSError as exc:
                self._raise_write_error(exc)
            size = 0
        try:
            written = 0
            while written < len(frame):
                written += self._write(self._fd, frame[written:])
        except OSError as exc:
            self._undo_partial_write(size)
            self._raise_write_error(exc)
        if self.disk_full:
            self.disk_full = False
            log.warning("spool %s: writes succeed again; the disk has room", self.directory)
        self._sizes[self._write_index] = size + len(frame)
        self._written_total += len(frame)
        return Position(self._write_index, size + len(frame)), self._written_total

    def _undo_partial_write(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:  # the frame stays torn on disk; the next open cuts it
            log.error("spool: cannot remove a partial frame (%s); the next start will cut it",
                      exc)

    def _raise_write_error(self, exc: OSError) -> None:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self.counters.disk_full_errors += 1
            if not self.disk_full:  # once per episode: an SDK retries every second
                log.error(
                    "spool %s: the disk is full (%s); kept %d spooled bytes; new batches are "
                    "answered 'retry later' (senders keep them) until the collector "
                    "acknowledges and segments are deleted, or space is freed",
                    self.directory, exc.strerror, self.bytes)
            self.disk_full = True
            raise SpoolDiskFullError(
                f"agent spool disk is full at {self.directory}: the batch was not spooled "
                f"(what was spooled before is kept); free disk space, then retry",
                retry_after=1.0,
            ) from None
        raise SpoolDiskFullError(
            f"agent spool write failed at {self.directory}: {exc}; the batch was not spooled",
            retry_after=1.0,
        ) from None

    def _roll(self) -> None:
        """Start a new write segment (lock held); on an OSError nothing has changed."""
        if self.fsync_policy != "never":
            os.fsync(self._fd)
            self._synced_total = self._written_total
        path = self._segment_path(self._write_index + 1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(self._fd)
        self._fd = fd
        self._write_index += 1
        self._sizes[self._write_index] = 0
        try:
            fsync_dir(self._segments_dir)
        except OSError as exc:  # the new file exists; a crash before this loses nothing
            log.error("spool %s: fsync of the segments directory failed: %s",
                      self.directory, exc)

    # ---- fsync ---------------------------------------------------------

    def _sync_up_to(self, token: int) -> None:
        """Group commit: one fsync covers every append written before it began."""
        with self._cond:
            while self._syncing and self._synced_total < token:
                self._cond.wait()
            if self._synced_total >= token or self._closed:
                return
            self._syncing = True
            target = self._written_total
            fd = os.dup(self._fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
            with self._cond:
                self._syncing = False
                self._synced_total = max(self._synced_total, target)
                self._cond.notify_all()

    def _sync_loop(self, interval: float) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                token = self._written_total
            if token > self._synced_total:
                try:
                    self._sync_up_to(token)
                except OSError as exc:
                    log.error("spool %s: fsync failed: %s", self.directory, exc)
            time.sleep(interval)

    # ---- reading -------------------------------------------------------

    def read(self, start: Position, max_bytes: int, max_frames: int = 10_000) -> list[SpoolFrame]:
        """Intact frames from ``start`` (at least one if any), up to ``max_bytes``."""
        frames: list[SpoolFrame] = []
        total = 0
        pos = self._clamp(start)
        while total < max_bytes and len(frames) < max_frames:
            with self._cond:
                end = self._sizes.get(pos.segment)
                later = [i for i in self._sizes if i > pos.segment]
            if end is None or pos.offset >= end:
                if not later:
                    break
                pos = Position(min(later), 0)
                continue
            frame = self._read_frame(pos, end)
            if frame is None:
                pos = Position(pos.segment, self._holes.get(pos, end))
                continue
            if frames and total + len(frame.batch) > max_bytes:
                break
            frames.append(frame)
            total += len(frame.batch)
            pos = frame.end
        return frames

    def _clamp(self, pos: Position) -> Position:
        with self._cond:
            first = min(self._sizes)
        return pos if pos.segment >= first else Position(first, 0)

    def _read_frame(self, pos: Position, end: int) -> SpoolFrame | None:
        if pos in self._holes:
            return None
        fd = self._read_fd(pos.segment)
        head = os.pread(fd, FRAME_HEAD.size, pos.offset)
        length = FRAME_HEAD.unpack(head)[0] if len(head) == FRAME_HEAD.size else 0
        if pos.offset + FRAME_HEAD.size + length <= end:
            data = head + os.pread(fd, length, pos.offset + FRAME_HEAD.size)
            frame = parse_frame(data, 0, pos.segment)
            if frame is not None:
                return shift_frame(frame, pos)
        self._resync_at(pos, end)
        return None

    def _resync_at(self, pos: Position, end: int) -> None:
        """Damage found while forwarding: skip to the next intact frame, count it."""
        data = os.pread(self._read_fd(pos.segment), end - pos.offset, pos.offset)
        resume = find_next_frame(data, 0)
        target = end if resume is None else pos.offset + resume
        self._holes[pos] = target
        held = damaged_headers(data, 0, target - pos.offset)
        records = sum(last - first + 1 for _, first, last in held)
        self.counters.corrupt_frames += 1
        self.counters.cut_bytes += target - pos.offset
        self.counters.cut_records += records
        log.error("spool segment %d: corrupt frame at offset %d; skipped %d bytes holding "
                  "%d records (%s); their seqs go to the collector as a gap record; check "
                  "the disk under %s", pos.segment, pos.offset, target - pos.offset, records,
                  ", ".join(f"stream {sid} seqs {a}-{b}" for sid, a, b in held)
                  or "no header readable", self.directory)

    def _read_fd(self, segment: int) -> int:
        fd = self._read_fds.get(segment)
        if fd is None:
            fd = os.open(self._segment_path(segment), os.O_RDONLY)
            self._read_fds[segment] = fd
        return fd

    # ---- acknowledging -------------------------------------------------

    def ack(self, position: Position, durable: bool = False) -> None:
        """Every frame before ``position`` is done; delete fully acked segments.

        ``durable`` writes the ledger now (after a dead letter, so a crash does
        not set the same batch aside twice); otherwise it is written at most
        every ``LEDGER_INTERVAL`` seconds.
        """
        with self._cond:
            later = [i for i in self._sizes if i > position.segment]
            if later and position.offset >= self._sizes.get(position.segment, 0):
                position = Position(min(later), 0)  # the end of a segment: the next one's start
            if position <= self._ack:
                return
            self._ack = position
            if position == self.write_position and position.offset > 0 and (
                    self._blocked or self.disk_full):
                self._free_write_segment()
            done = [i for i in self._sizes if i < self._ack.segment]
            for index in done:  # first: on a full disk this is what makes room
                self._delete_segment(index)
            if self.dead:
                self.dead = {p: r for p, r in self.dead.items() if p >= self._ack}
            now = time.monotonic()
            if done or durable or now - self._ledger_time >= LEDGER_INTERVAL:
                self._try_write_ledger(self._ack)
            if done:
                self._cond.notify_all()

    def _delete_segment(self, index: int) -> None:
        del self._sizes[index]
        fd = self._read_fds.pop(index, None)
        if fd is not None:
            os.close(fd)
        self._holes = {p: r for p, r in self._holes.items() if p.segment != index}
        self._segment_path(index).unlink(missing_ok=True)

    def _write_ledger(self, position: Position) -> None:
        write_ledger(self.directory, position)
        self._ledger_time = time.monotonic()
        self._ledger_pos = position

    def _free_write_segment(self) -> None:
        """The cap or the disk is full and everything is acked: start a new write
        segment, so the old one can be deleted (lock held)."""
        try:
            self._roll()
        except OSError as exc:  # no room even for that: the next ack tries again
            log.error("spool %s: cannot start a new segment (%s)", self.directory, exc)
            return
        self._ack = Position(self._write_index, 0)

    def _try_write_ledger(self, position: Position) -> None:
        """A ledger that cannot be written lags (resends after a crash), never stops acks."""
        try:
            self._write_ledger(position)
        except OSError as exc:
            self.counters.ledger_errors += 1
            self._ledger_time = time.monotonic()  # retried at the next interval
            (self.directory / "ledger.json.tmp").unlink(missing_ok=True)
            log.error("spool %s: cannot write the ledger (%s); it lags, so a restart may "
                      "resend some acknowledged batches (the collector skips them)",
                      self.directory, exc)

    def dead_letter(self, frame: SpoolFrame, reason: str) -> None:
        """Keep a batch the collector refused under dead/, for a person to inspect.

        The frame stays in the spool, marked in ``dead``: the forwarder sends a
        gap record in its place and acknowledges it once that is committed."""
        self._dead_dir.mkdir(exist_ok=True)
        data = encode_frame(frame.stream_id, frame.first_seq, frame.last_seq, frame.batch,
                            frame.droppable)
        with open(self._dead_dir / "letters.seg", "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with open(self._dead_dir / "reasons.log", "a", encoding="utf-8") as fh:
            fh.write(f"{frame.stream_id} {frame.first_seq}-{frame.last_seq}: {reason}\n")
        append_dead_index(self._dead_dir, frame.start, reason)
        with self._cond:
            self.dead[frame.start] = reason
            self.counters.dead_letters += 1
            self.counters.dead_letter_records += frame.records

    # ---- state -----------------------------------------------------------

    @property
    def write_position(self) -> Position:
        return Position(self._write_index, self._sizes[self._write_index])

    @property
    def ack_position(self) -> Position:
        return self._ack

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def segments(self) -> int:
        return len(self._sizes)

    @property
    def pending_bytes(self) -> int:
        """Bytes not yet acknowledged by the collector (approximate over holes)."""
        with self._cond:
            return sum(
                size - (self._ack.offset if index == self._ack.segment else 0)
                for index, size in self._sizes.items()
                if index >= self._ack.segment
            )

    def empty(self) -> bool:
        """True when the collector acknowledged everything spooled."""
        with self._cond:
            return self._ack >= self.write_position or self.pending_bytes == 0

    def close(self) -> None:
        """Flush, write the ledger, release waiters; idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            if self.fsync_policy != "never":
                os.fsync(self._fd)
            os.close(self._fd)
            self._write_ledger(self._ack)
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            os.close(self._lock_fd)
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=5)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

