"""File tail: files matched by globs -> encoded Batches in the agent's spool.

One thread per source runs rounds; between rounds it sleeps in
``ChangeWatcher.wait`` (inotify, else a poll), so an idle source costs no
CPU. A round::

    discover (globs, on a name event or every rescan_interval)
      -> per file, oldest first within a group: read up to ROUND_BYTES past
         its offset, cut with the decoder, decode into Records
      -> checkpoint the cut points as pending (tmp + fsync + rename)
      -> spool.append one Batch per file, then advance offset/seq in memory

Each file (one identity: dev, inode and a fingerprint of its first bytes)
is its own stream: a uuid4 stream id kept in the checkpoint, seq 1, 2, ...
After a kill the pending cut points re-create the same records with the
same seqs, so the collector skips whatever it already has (checkpoint.py).

Rotation: a file whose path no longer matches is *detached*: read to its
end through the open descriptor, kept ``rotate_wait`` seconds after its last
growth (a writer may still flush to it; a deleted file too, since a writer
that holds it open can go on appending), then its partial last line is sent
and it is let go. A rename to a name the globs still match is just a new
path. A rotation is counted when a new file takes a path a tracked file
held. Files of one group are read oldest first, and a line in pieces that
a Docker or CRI file ends in is handed to the newer file (rotation.py).
At start, a checkpointed file that no glob matches is looked up by inode in
its old directory, and a file with a rotated name of a tracked one
(``app.log.1``, ``app.log-20250101``; not compressed) that the checkpoint
does not know and that changed after the checkpoint was written is read
too, oldest first: several rotations while the agent was down lose
nothing. A checkpointed file that is gone by then is counted as lost
(``files_lost``) and logged with its name.
Truncation (copytruncate, ``> file``): the size falls below the offset, or
the first bytes change. Copies made since the file was last read (rotated
names of its path) are read first, oldest first: the one that starts as the
file's checkpoint does takes its stream on from its offset (the end of the
period that was not read yet), the others (periods that went by unread, the
agent busy) get streams of their own, then the file is read from 0 in a new
stream. With no copy it is read again from 0 in the same stream. The
fingerprint grows from the bytes the cuts hold (fingerprint.py) and the head
is checked again after every read, so a truncation and rewrite between two
reads (or between a read and a kill) is never taken for more of the old
content. At a start, the copy of a checkpointed file truncated while the
agent was down takes the checkpoint (pending cuts and the rest are read from
it); other copies of what was read are skipped. Lines written after the last
read and before a truncation that no copy holds are gone with the truncation
(copytruncate's window), and so is a copy found only after newer lines of its
group went out (file times are coarse: order is kept before completeness).

Per read the work is C-level (``pread``, ``rfind``, ``count``), one
Record per read of up to ``max_line_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
import logging
import os
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from mltrail.agent.sources.base import Router, SourceCounters
from mltrail.agent.sources.checkpoint import FINGERPRINT_BYTES, CheckpointStore, FileCheckpoint
from mltrail.agent.sources.config import SourceConfig
from mltrail.agent.sources.encode import BatchBuilder
from mltrail.agent.sources.fingerprint import (
    Fingerprint,
    fingerprint,
    grown,
    same_head,
)
from mltrail.agent.sources.rotation import Plan, TailedFile, plan_in_order
from mltrail.agent.sources.tail_copies import CopyFollowing, mtime_ns
from mltrail.agent.sources.watch import ChangeWatcher
from mltrail.agent.spool import Spool, SpoolClosedError, SpoolDiskFullError
from mltrail.common.lifecycle import Component
from mltrail.proto import records_pb2

log = logging.getLogger("mltrail.agent.sources")

ROUND_BYTES = 4 << 20  # per file per round: bounds a Batch and keeps files fair
_ERROR_PAUSE = 1.0
Piece = tuple[bytes, int, int]  # bytes to decode, how many of them are a carry, offset after


def _static_dir(pattern: str) -> str:
    """The longest leading directory of a glob without wildcards."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else "."


class TailSource(CopyFollowing, Component):
    """Tails the files a ``Router`` names into ``spool``; see the module docstring."""

    def __init__(self, config: SourceConfig, router: Router, spool: Spool,
                 checkpoint_dir: str | os.PathLike[str], *, fsync: bool = True,
                 on_appended: Callable[[int, int], None] | None = None,
                 watcher: ChangeWatcher | None = None) -> None:
        self.config = config
        self.name = config.name
        self.router = router
        self.spool = spool
        self.counters = SourceCounters()
        self.store = CheckpointStore(Path(checkpoint_dir) / f"{config.name}.json", fsync=fsync)
        self._on_appended = on_appended or (lambda records, size: None)
        self._watcher = watcher or ChangeWatcher()
        self._files: dict[tuple[int, int], TailedFile] = {}
        self._saved: dict[tuple[int, int], FileCheckpoint] = {}
        self._initial = False  # first discovery of a source with no checkpoint yet
        self._order = 0
        self._dirty = False
        self._stop = threading.Event()
        self._rescan = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: set[str] = set()
        self._vacated: set[str] = set()  # paths tracked files were renamed away from
        self._saved_at_ns: int | None = None  # when the checkpoint was last written
        # fingerprints of content read before (files let go, truncated, replaced): a copy
        # that starts as one of them is not read again as a period never seen
        self._read_heads: deque[Fingerprint] = deque(maxlen=256)

    # ---- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        existed, entries = await asyncio.to_thread(self.store.load)
        self._initial = not existed
        with contextlib.suppress(OSError):
            self._saved_at_ns = self.store.path.stat().st_mtime_ns
        self._saved = {(e.dev, e.ino): e for e in entries}
        self._read_heads.extend((e.fp_len, e.fp_crc) for e in entries if e.fp_len)
        self._order = max((e.order for e in entries), default=0)
        self._thread = threading.Thread(target=self._run, name=f"mltrail-source-{self.name}",
                                        daemon=True)
        self._thread.start()

    async def shutdown(self, timeout: float) -> None:
        """Stop reading; what was read is in the spool and the checkpoint says so."""
        self._stop.set()
        self._watcher.wake()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout)

    def rescan(self) -> None:
        """Run the globs at the next round (a router learned of new files)."""
        self._rescan.set()
        self._watcher.wake()

    # ---- stats (read by /metrics from another thread) ---------------------------

    def files_watched(self) -> int:
        return len(self._files)

    def lags(self) -> list[tuple[str, int]]:
        """Bytes behind each file's end now (its size by name when the name is still
        its own; else the size at the last read)."""
        out = []
        for key, f in list(self._files.items()):
            size = f.seen_size
            try:
                st = os.stat(f.cp.path)
                if (st.st_dev, st.st_ino) == key:
                    size = st.st_size
            except OSError:
                pass
            out.append((f.cp.path, max(0, size - f.cp.offset)))
        return out

    def lines_split(self) -> int:
        files = list(self._files.values())
        return self.counters.lines_split + sum(f.route.decoder.lines_split for f in files)

    def lines_repaired(self) -> int:
        files = list(self._files.values())
        return self.counters.lines_repaired + sum(f.route.decoder.lines_repaired for f in files)

    # ---- the loop --------------------------------------------------------------

    def _run(self) -> None:
        rescan_at = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._rescan.is_set() or now >= rescan_at:
                    self._rescan.clear()
                    self._discover(first=rescan_at == 0.0)
                    rescan_at = now + self.config.rescan_interval
                if self._step():
                    continue
                changes = self._watcher.wait(self._idle_timeout(rescan_at))
                if changes.names:
                    self._rescan.set()
            self._save_if_dirty()
        except SpoolClosedError:
            log.info("source %s: the spool closed; stopping", self.name)
        finally:
            self._close_all()

    def _idle_timeout(self, rescan_at: float) -> float:
        if not self._watcher.notifies or any(
                f.detached_since is not None for f in self._files.values()):
            return self.config.poll_interval
        return max(0.0, rescan_at - time.monotonic())

    def _step(self) -> bool:
        """One round; True when it appended something (so go again at once)."""
        try:
            return self._round()
        except SpoolClosedError:
            raise
        except SpoolDiskFullError as exc:
            log.error("source %s: %s; reading pauses, the files keep the lines", self.name, exc)
        except Exception:
            self.counters.errors += 1
            log.exception("source %s: a round failed; trying again in %.0fs", self.name,
                          _ERROR_PAUSE)
        self._stop.wait(_ERROR_PAUSE)
        return False

    def _round(self) -> bool:
        plans, handed_over = plan_in_order(self._files.values(), self._plan)
        if handed_over:
            self._dirty = True  # a carry moved to a newer file
        if plans:
            for plan in plans:
                plan.file.cp.pending = plan.cuts
            self._save()  # the intent, before any append: a restart re-cuts the same way
            for plan in plans:
                self._append(plan)
        self._let_go_finished()
        if not plans:
            self._save_if_dirty()
        return bool(plans)

    # ---- discovery -------------------------------------------------------------

    def _discover(self, first: bool = False) -> None:
        matched: dict[tuple[int, int], str] = {}
        patterns = self.router.patterns()
        for pattern in patterns:
            for path in sorted(glob.glob(pattern, recursive=True)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and not self._excluded(path):
                    matched.setdefault((st.st_dev, st.st_ino), path)
        self._watcher.forget_missing()
        self._watcher.watch({_static_dir(p) for p in patterns}
                            | {os.path.dirname(p) or "." for p in matched.values()})
        rotated = self._rotated_while_down(matched) if first else {}
        found = {**matched, **rotated}
        for key, path in sorted(found.items(), key=lambda kv: mtime_ns(kv[1])):
            self._track(key, path, detached=key in rotated)
        now = time.monotonic()
        for key, tailed in self._files.items():
            if key not in matched and tailed.detached_since is None:
                tailed.detached_since = now
        if first:
            self._find_moved()
            self._initial = False

    def _excluded(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) for p in self.config.exclude)

    def _track(self, key: tuple[int, int], path: str, detached: bool) -> None:
        tailed = self._files.get(key)
        if tailed is not None:
            if tailed.cp.path != path:
                self._vacated.add(tailed.cp.path)
                self._vacated.discard(path)
                tailed.cp.path = path
                self._dirty = True
            tailed.detached_since = time.monotonic() if detached else None
            return
        tailed = self._open(key, path)
        if tailed is not None:
            self._files[key] = tailed
            if detached:
                tailed.detached_since = time.monotonic()

    def _find_moved(self) -> None:
        """Checkpointed files no glob matched: renamed while the agent was down?"""
        for key, saved in list(self._saved.items()):
            directory = os.path.dirname(saved.path) or "."
            try:
                entries = list(os.scandir(directory))
            except OSError:
                entries = []
            found = next((e for e in entries if e.inode() == key[1] and e.is_file()), None)
            if found is None:  # gone while the agent was down: what it still held is lost
                del self._saved[key]
                self.counters.files_lost += 1
                log.error("source %s: %s (read up to byte %d) was gone when the agent started; "
                          "lines written to it after that were lost", self.name, saved.path,
                          saved.offset)
            else:
                self._track(key, found.path, detached=True)
        # what is left exists but has no route yet (a container not yet discovered):
        # its position waits in _saved until it does

    def _open(self, key: tuple[int, int], path: str) -> TailedFile | None:
        route = self.router.route(path)
        if route is None:
            if path not in self._refused:
                self._refused.add(path)
                log.warning("source %s: no run for %s (check run_id_from); not read",
                            self.name, path)
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if path not in self._refused:
                self._refused.add(path)
                self.counters.errors += 1
                log.warning("source %s: cannot open %s (%s); will retry", self.name, path,
                            exc.strerror)
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != key:
            os.close(fd)  # replaced between stat and open: the next scan sees the new one
            return None
        self._refused.discard(path)
        cp = self._resume(key, fd, path, st.st_size)
        if cp.seq == 0 and not cp.pending and (
                path in self._vacated or any(f.cp.path == path for f in self._files.values())):
            self.counters.rotated("rename")  # a new file where a tracked one was
        self._vacated.discard(path)
        self._dirty = True
        return TailedFile(cp, fd, route, mtime_ns=st.st_mtime_ns)

    def _resume(self, key: tuple[int, int], fd: int, path: str, size: int) -> FileCheckpoint:
        saved = self._saved.pop(key, None)
        if saved is not None and saved.fp_len <= size and \
                fingerprint(fd, saved.fp_len) == (saved.fp_len, saved.fp_crc):
            if saved.path != path:
                self._vacated.add(saved.path)
            saved.path = path
            return saved
        if saved is not None:  # same inode, other content: replaced or truncated while down
            self.counters.rotated("truncate")
            self.counters.files_lost += 1
            log.error("source %s: %s (read up to byte %d) was replaced or truncated when the "
                      "agent started; lines written to it after that were lost", self.name,
                      saved.path, saved.offset)
        start = size if self._initial and self.config.start_at == "end" else 0
        fp_len, fp_crc = fingerprint(fd, start)  # what is skipped; reads grow it
        self._order += 1
        return FileCheckpoint(stream_id=uuid.uuid4().hex, path=path, dev=key[0], ino=key[1],
                              fp_len=fp_len, fp_crc=fp_crc, offset=start, order=self._order)

    # ---- reading -----------------------------------------------------------------

    def _plan(self, f: TailedFile) -> Plan | None:
        st = os.fstat(f.fd)
        changed = (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != f.seen
        read_at = f.mtime_ns
        f.mtime_ns, f.nlink, f.seen = st.st_mtime_ns, st.st_nlink, \
            (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        final = self._finishing(f, st.st_size) or (f.ended and st.st_size > f.cp.offset)
        if not (changed or f.more or f.cp.pending or final):
            return None  # a truncated file rewritten to the same size still shows in mtime
        same = self._same_content(f, st.st_size)
        if (not same or f.cp.fp_len < FINGERPRINT_BYTES) and \
                self._copied_before_truncation(f, read_at, truncated=not same):
            f.more = True  # read after its copies: the next round takes them first
            return None
        if not same:
            self._truncated(f)
        f.seen_size = st.st_size
        replay = bool(f.cp.pending)
        pieces, eof = (self._pending_pieces(f), False) if replay else self._new_pieces(f, final)
        fp = (f.cp.fp_len, f.cp.fp_crc)
        for raw, carried, end in pieces:  # the fingerprint vouches for what the cuts hold
            fp = grown(fp, end - len(raw) + carried, raw[carried:])
        if pieces and not same_head(f.fd, fp):
            f.more = True  # truncated and rewritten while it was read: the next round
            return None    # starts it again, and these bytes are not the file's
        f.cp.fp_len, f.cp.fp_crc = fp
        plan = self._decoded(f, pieces, final, replay)
        plan.eof = eof
        f.more = not eof
        return plan

    def _finishing(self, f: TailedFile, size: int) -> bool:
        """A detached file that stopped growing: send its partial line, then let go."""
        if f.detached_since is None or size != f.seen_size:
            return False
        return time.monotonic() - f.detached_since >= self.config.rotate_wait

    def _same_content(self, f: TailedFile, size: int) -> bool:
        cp = f.cp
        if size < cp.offset or not same_head(f.fd, (cp.fp_len, cp.fp_crc)):
            return False
        if cp.fp_len < min(cp.offset, FINGERPRINT_BYTES):  # a checkpoint of an older agent
            cp.fp_len, cp.fp_crc = fingerprint(f.fd, cp.offset)
        return True

    def _new_pieces(self, f: TailedFile, final: bool) -> tuple[list[Piece], bool]:
        """Reads past the offset, cut where the decoder may cut; and whether they reached
        the end of the file (else the round's budget ran out)."""
        decoder = f.route.decoder
        pieces: list[Piece] = []
        pos = f.cp.offset
        carry = f.cp.carry_bytes()  # the older file's pieces: decoded first
        while pos - f.cp.offset < ROUND_BYTES:
            buf = carry + os.pread(f.fd, max(0, decoder.read_size - len(carry)), pos)
            end = decoder.cut(buf, final and len(buf) < decoder.read_size)
            if end == 0:
                return pieces, True
            end = max(end, len(carry))  # a carry is never cut (it holds no line end)
            pos += end - len(carry)
            pieces.append((buf[:end] if end < len(buf) else buf, len(carry), pos))
            carry = b""
        return pieces, False

    def _pending_pieces(self, f: TailedFile) -> list[Piece]:
        """The byte ranges of the pending cuts, read again after a restart or a failed
        append (those the file still holds: a truncation took the rest)."""
        pieces: list[Piece] = []
        pos = f.cp.offset
        carry = f.cp.carry_bytes()
        for end, _ in f.cp.pending:
            raw = os.pread(f.fd, end - pos, pos)
            if len(raw) < end - pos:
                f.cp.pending = f.cp.pending[:len(pieces)]  # truncated since
                break
            pieces.append((carry + raw, len(carry), end))
            carry, pos = b"", end
        return pieces

    def _decoded(self, f: TailedFile, pieces: list[Piece], final: bool, replay: bool) -> Plan:
        """The plan of ``pieces``: their records (a replay re-creates the same seqs)."""
        plan = Plan(f, BatchBuilder(f.cp.stream_id))
        seq = f.cp.seq
        for n, (raw, _, end) in enumerate(pieces):
            if replay:
                seq = self._add(plan.batch, f, seq, raw, not raw.endswith(b"\n"), True)
                if seq != f.cp.pending[n][1]:
                    log.error("source %s: %s re-read as seqs ..%d, not ..%d as before; the "
                              "collector may keep some lines twice or miss some", self.name,
                              f.cp.path, seq, f.cp.pending[n][1])
            else:
                seq = self._add(plan.batch, f, seq, raw, final)
            plan.cuts.append((end, seq))
        return plan

    def _add(self, batch: BatchBuilder, f: TailedFile, seq: int, raw: bytes,
             final: bool, replay: bool = False) -> int:
        now = time.time_ns()
        run_id = f.route.run_id
        decoder = f.route.decoder
        counted = (decoder.lines_split, decoder.lines_repaired)
        if seq == 0 and f.route.properties:
            seq += 1
            batch.add_record(records_pb2.Record(seq=seq, time_unix_nano=now, run_id=run_id,
                                                run_event=_properties(f.route.properties)))
        for chunk in decoder.decode(raw, final):
            seq += 1
            batch.add_log(seq, chunk.time_ns or now, run_id, chunk.stream, chunk.data,
                          chunk.partial)
        if replay:  # a replayed range was counted when it was first read
            decoder.lines_split, decoder.lines_repaired = counted
        else:
            self.counters.lines_read += raw.count(b"\n")
            self.counters.bytes_read += len(raw)
        return seq

    # ---- committing ----------------------------------------------------------------

    def _append(self, plan: Plan) -> None:
        f = plan.file
        first = f.cp.seq + 1
        last = plan.cuts[-1][1]
        data = plan.batch.build()
        self.spool.append(f.cp.stream_id, first, last, data)
        f.cp.offset, f.cp.seq = plan.cuts[-1]
        f.cp.pending = []
        f.cp.carry = ""  # every plan starts at the offset, so its first record held it
        self._dirty = True
        records = plan.batch.records
        self.counters.records += records
        self._on_appended(records, len(data))

    def _let_go_finished(self) -> None:
        for key, f in list(self._files.items()):
            if f.detached_since is None or f.seen_size != f.cp.offset:
                continue
            if not self._finishing(f, os.fstat(f.fd).st_size):
                continue
            if f.nlink == 0:
                self.counters.rotated("delete")
            if f.cp.fp_len:
                self._read_heads.append((f.cp.fp_len, f.cp.fp_crc))
            del self._files[key]
            self._close(f)
            self._dirty = True

    def _entries(self) -> list[FileCheckpoint]:
        return [f.cp for f in self._files.values()]

    def _save(self) -> None:
        self.store.save(self._entries())
        self.counters.checkpoint_writes += 1
        self._dirty = False

    def _save_if_dirty(self) -> None:
        if self._dirty:
            self._save()

    def _close(self, f: TailedFile) -> None:
        os.close(f.fd)
        self.counters.lines_split += f.route.decoder.lines_split
        self.counters.lines_repaired += f.route.decoder.lines_repaired

    def _close_all(self) -> None:
        files, self._files = list(self._files.values()), {}
        for f in files:
            self._close(f)
        self._watcher.close()


def _properties(props: dict[str, str]) -> records_pb2.RunEvent:
    return records_pb2.RunEvent(properties=records_pb2.PropertiesAdded(properties=props))



