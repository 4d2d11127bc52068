"""Truncations and copytruncate's copies, for the file tail (tail.py): finding the
copies and reading them in the right order, so that what a truncation took from a
file is read from its copy.

``CopyFollowing`` is the part of ``TailSource`` that deals with copies (a mixin: it
works on the source's files, checkpoints and counters); tail.py's module docstring
says what a truncation and a start do with them.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque

from mltrail.agent.sources.base import Router, SourceCounters
from mltrail.agent.sources.checkpoint import FINGERPRINT_BYTES, FileCheckpoint
from mltrail.agent.sources.fingerprint import (
    Fingerprint,
    file_head,
    fingerprint,
    same_head,
    starts_alike,
    starts_with,
)
from mltrail.agent.sources.rotation import TailedFile, rotated_while_down

log = logging.getLogger("mltrail.agent.sources")

_UNSEEN_MARGIN_NS = 50_000_000


class CopyFollowing:
    """What a tail does with copytruncate's copies (see the module docstring)."""

    name: str
    router: Router
    counters: SourceCounters
    _files: dict[tuple[int, int], TailedFile]
    _saved: dict[tuple[int, int], FileCheckpoint]
    _saved_at_ns: int | None
    _read_heads: deque[Fingerprint]
    _order: int
    _dirty: bool

    def _excluded(self, path: str) -> bool:
        raise NotImplementedError  # TailSource's

    def _track(self, key: tuple[int, int], path: str, detached: bool) -> None:
        raise NotImplementedError  # TailSource's

    def _rotated_while_down(self, matched: dict[tuple[int, int], str]
                            ) -> dict[tuple[int, int], str]:
        if self._saved_at_ns is None:
            return {}
        names = set(matched.values()) | {cp.path for cp in self._saved.values()}
        known = set(matched) | set(self._saved) | set(self._files)
        found = rotated_while_down(names, self._saved_at_ns, known, self._excluded)
        for key, path in list(found.items()):
            if self._took_over(key, path):
                continue
            if self._is_copy(path):  # copytruncate's copy: what it holds was read already
                del found[key]
        for path in sorted(found.values()):
            log.info("source %s: %s was rotated while the agent was down; reading it",
                     self.name, path)
        return found

    def _took_over(self, key: tuple[int, int], path: str) -> bool:
        """Whether ``path`` is copytruncate's copy of a checkpointed file that was
        truncated while the agent was down (same inode at its path, no longer holding
        what the checkpoint read): the checkpoint moves to the copy, which holds that and
        the end of the period written before the truncation, so both are read from it
        (pending cuts re-created with their seqs), and the file starts a new stream."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            size = os.fstat(fd).st_size
            for old, cp in list(self._saved.items()):
                end = max([cp.offset, *(e for e, _ in cp.pending)])
                if cp.fp_len and size >= end and same_head(fd, (cp.fp_len, cp.fp_crc)) \
                        and self._truncated_while_down(cp, end):
                    del self._saved[old]
                    cp.dev, cp.ino = key
                    self._saved[key] = cp
                    log.info("source %s: %s was truncated while the agent was down; its "
                             "copy %s holds the rest: reading it from byte %d", self.name,
                             cp.path, path, cp.offset)
                    return True
            return False
        finally:
            os.close(fd)

    @staticmethod
    def _truncated_while_down(cp: FileCheckpoint, end: int) -> bool:
        try:
            fd = os.open(cp.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False  # gone or renamed: not copytruncate (_find_moved looks for it)
        try:
            st = os.fstat(fd)
            return (st.st_dev, st.st_ino) == (cp.dev, cp.ino) and (
                st.st_size < end or not same_head(fd, (cp.fp_len, cp.fp_crc)))
        finally:
            os.close(fd)

    def _is_copy(self, path: str) -> bool:
        """Whether ``path`` starts as a checkpointed file does (a copy of it), or is empty
        (a copy being made: read when it is whole, it would hold lines read already)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return True  # gone already: nothing to read
        try:
            if os.fstat(fd).st_size == 0:
                return True
            return any(cp.fp_len and fingerprint(fd, cp.fp_len) == (cp.fp_len, cp.fp_crc)
                       for cp in self._saved.values())
        finally:
            os.close(fd)

    def _copied_before_truncation(self, f: TailedFile, since_ns: int, truncated: bool
                                  ) -> bool:
        """Copytruncate's copies of ``f`` made since it was last read (files with a rotated
        name of its path), read before what ``f`` holds now, oldest first, so that a
        period that went by unread, or the end of the one being read, is not lost. Looked
        for when ``f`` was seen ``truncated``, and while its fingerprint is short (little or
        nothing read of it: a truncation can go unseen). The copy that starts as ``f``'s
        checkpoint does holds what ``f`` held: ``f``'s stream goes on there, and ``f`` starts
        a stream of its own. A copy that starts as ``f`` does now is of what ``f`` holds
        (its truncation still to come), and one that starts as content read before does
        (``_read_heads``) is of that: neither is read. True when copies are read first."""
        # File times are coarse, and finer on a file whose times were asked for: a copy's
        # time and the truncation's after it can be a few ms either way. Seen truncated,
        # take copies from the tick of the last read on (content tells them apart); not
        # seen, only those clearly later (else a copy of what was read before, let go,
        # would pass for a period never read).
        since_ns = since_ns - 1 if truncated else since_ns + _UNSEEN_MARGIN_NS
        found = rotated_while_down([f.cp.path], since_ns,
                                   set(self._files) | set(self._saved), self._excluded)
        path0, dev, ino = f.cp.path, f.cp.dev, f.cp.ino  # the copy may take f.cp
        fresh = self.router.route(path0) if found else None
        if fresh is None:
            return False
        now = os.pread(f.fd, FINGERPRINT_BYTES, 0)
        copies = []  # oldest first; not: gone, empty, or a copy of what f holds now
        for key, path in sorted(found.items(), key=lambda kv: mtime_ns(kv[1])):
            head = file_head(path)
            if head and not starts_alike(head, now):  # empty: a copy still being made
                copies.append((key, path, head))
        mine = (f.cp.fp_len, f.cp.fp_crc)
        goes_on = next((i for i, (_, _, head) in enumerate(copies) if starts_with(head, mine)),
                       None)
        followed, read = False, []
        for i, (key, path, head) in enumerate(copies):
            if i == goes_on:
                followed = self._goes_on_in(f, key, path)
                if followed:
                    read.append(path)
            elif goes_on is not None and i < goes_on:
                continue  # older than what f's stream read: now it would come after that
            elif not any(starts_with(head, fp) for fp in self._read_heads):
                self._track(key, path, detached=True)  # a period never read
                read.append(path)
        if not read:
            return False
        if f.cp.fp_len:
            self._read_heads.append((f.cp.fp_len, f.cp.fp_crc))
        self.counters.rotated("truncate")
        log.info("source %s: %s was truncated; reading its copies (%s) first", self.name,
                 path0, ", ".join(read))
        if followed:
            self._order += 1
            f.cp = FileCheckpoint(stream_id=uuid.uuid4().hex, path=path0, dev=dev, ino=ino,
                                  order=self._order)
            f.route = fresh
        elif truncated:
            self._truncated(f, counted=True)
        self._dirty = True
        return True

    def _goes_on_in(self, f: TailedFile, key: tuple[int, int], path: str) -> bool:
        """Whether the file at ``path`` holds what ``f``'s checkpoint read (its copy); if
        so it is tracked with that checkpoint and ``f``'s decoder."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        st = os.fstat(fd)
        cp = f.cp
        if (st.st_dev, st.st_ino) != key or st.st_size < cp.offset or \
                not same_head(fd, (cp.fp_len, cp.fp_crc)):
            os.close(fd)
            return False
        cp.path, cp.dev, cp.ino = path, key[0], key[1]
        self._files[key] = TailedFile(cp, fd, f.route, mtime_ns=st.st_mtime_ns,
                                      detached_since=time.monotonic())
        return True

    def _truncated(self, f: TailedFile, counted: bool = False) -> None:
        """Same stream, seq goes on; the content starts again at 0 (and its fingerprint
        grows again from what is read of it)."""
        if f.cp.fp_len:
            self._read_heads.append((f.cp.fp_len, f.cp.fp_crc))
        if not counted:
            self.counters.rotated("truncate")
            log.info("source %s: %s was truncated; reading it again from its start",
                     self.name, f.cp.path)
        f.cp.offset = 0
        f.cp.pending = []  # what they covered went with the truncation
        f.cp.fp_len, f.cp.fp_crc = fingerprint(f.fd, 0)
        self._dirty = True


def mtime_ns(path: str) -> int:
    """A file's modification time (0: gone)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
