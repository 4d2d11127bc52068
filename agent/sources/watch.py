"""Waiting for file changes without a busy loop: inotify through ctypes, or a poll.

``ChangeWatcher.wait(timeout)`` blocks in ``poll(2)`` on an inotify
descriptor that watches directories (events for every file in them) and on a
self-pipe that ``wake()`` writes to from another thread. It returns what it
saw: ``names`` is True when a name changed (created, moved, deleted, or the
kernel's queue overflowed), so the caller re-runs its globs; a plain write
only wakes it. Where inotify is missing (not Linux, a limit reached) the
watcher degrades to sleeping ``timeout`` and reporting a possible change,
so the caller polls at its idle interval. Files on network file systems and
files renamed out of a watched directory produce no events; the caller's
periodic timeout covers them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import select
import struct
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("mltrail.agent.sources")

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

DIR_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
            | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
NAME_EVENTS = (IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
               | IN_MOVE_SELF | IN_Q_OVERFLOW | IN_IGNORED | IN_ATTRIB)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (name follows)


@dataclass(frozen=True)
class Changes:
    any: bool  # something may have changed (always True after a timeout without inotify)
    names: bool  # a name changed: re-run the globs


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.inotify_init1  # noqa: B018 (a probe: raises AttributeError off Linux)
    except (OSError, AttributeError):
        return None
    return libc


class ChangeWatcher:
    """Directory watches plus a wake pipe; one per source thread."""

    def __init__(self, use_inotify: bool = True) -> None:
        self._libc = _libc() if use_inotify else None
        self._fd = -1
        if self._libc is not None:
            self._fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if self._fd < 0:
                log.warning("inotify unavailable (%s): polling for file changes instead",
                            os.strerror(ctypes.get_errno()))
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        if self._fd >= 0:
            self._poller.register(self._fd, select.POLLIN)
        self._watched: dict[str, int] = {}

    @property
    def notifies(self) -> bool:
        """True when changes arrive as events (inotify), False when polling."""
        return self._fd >= 0

    def watch(self, directories: Iterable[str]) -> None:
        """Watch each existing directory (idempotent); missing ones are skipped."""
        if self._fd < 0 or self._libc is None:
            return
        for directory in directories:
            if directory in self._watched:
                continue
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), DIR_MASK)
            if wd >= 0:
                self._watched[directory] = wd
            elif ctypes.get_errno() == 28:  # ENOSPC: the user's watch limit
                log.warning("inotify watch limit reached at %s: that directory is polled",
                            directory)

    def forget_missing(self) -> None:
        """Drop directories that no longer exist, so a re-created one is watched again."""
        for directory in [d for d in self._watched if not os.path.isdir(d)]:
            del self._watched[directory]

    def wait(self, timeout: float) -> Changes:
        """Block until an event, ``wake()`` or ``timeout`` seconds."""
        ready = self._poller.poll(max(0, int(timeout * 1000)))
        if not ready:
            return Changes(any=self._fd < 0, names=self._fd < 0)
        names = False
        for fd, _ in ready:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            else:
                names |= self._drain_events()
        return Changes(any=True, names=names)

    def _drain_events(self) -> bool:
        names = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return names
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                names |= bool(mask & NAME_EVENTS)
                offset += _EVENT.size + length

    def wake(self) -> None:
        """Make a blocked ``wait`` return now; safe from any thread."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1
