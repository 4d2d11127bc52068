"""Files of one group across rotations: oldest first, a line in pieces handed on.

The files of one ordering group (``FileRoute.group``: a run's stream, a
Docker container, a CRI container directory) are read oldest first
(``_age``); a newer file of the group is read only once the older ones were
read to their end, so after a rotation the old file's end comes first::

    group:  app.log.2 (detached) -> app.log.1 (detached) -> app.log (live)
            read to its end ------> then this ----------> then this

A detached file of plain lines that ends inside a line holds its newer
files back until tail.py lets it go (``rotate_wait`` after its last growth)
and its partial last line goes out.
A file of *entries* (Docker, CRI) that ends inside a line in pieces once a
newer file of its group has data (the writer moved on: Docker rotates
between two 16 KiB pieces) hands those pieces to the newer file as its
``carry`` (``_hand_over``), decoded before its first byte, so the line is
joined whole in the newer file's stream. The carry is in the checkpoint from
the moment the older file's offset moves past it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field

from mltrail.agent.sources.base import FileRoute
from mltrail.agent.sources.checkpoint import FileCheckpoint
from mltrail.agent.sources.encode import BatchBuilder

_NUMBERED = re.compile(r"\.(\d{1,6})$")  # app.log.3: logrotate's and Docker's rotated names


@dataclass
class TailedFile:
    cp: FileCheckpoint
    fd: int
    route: FileRoute
    seen_size: int = -1  # size at the last read
    seen: tuple[int, int, int] = (-1, 0, 0)  # size, mtime, ctime: no pread while they stay
    mtime_ns: int = 0
    nlink: int = 1
    detached_since: float | None = None  # no glob matches it any more
    more: bool = False  # the last round stopped before the end of the file
    ended: bool = False  # superseded and its rest cannot be carried: send it as it is

    @property
    def lag(self) -> int:
        return max(0, self.seen_size - self.cp.offset)


@dataclass
class Plan:
    file: TailedFile
    batch: BatchBuilder
    cuts: list[tuple[int, int]] = field(default_factory=list)  # (end offset, last seq) per read
    eof: bool = True  # False: the round's budget ran out before the end of the file


def plan_in_order(files: Iterable[TailedFile],
                  plan: Callable[[TailedFile], Plan | None]) -> tuple[list[Plan], bool]:
    """One round's plans (those with cuts), oldest file first within a group; a
    group's newer files are planned only while ``_may_pass`` lets them. Also
    returns True when a carry was handed over (the checkpoint changed)."""
    plans: list[Plan] = []
    blocked: set[str] = set()
    handed_over = False
    ordered = sorted(files, key=_age)
    for i, tailed in enumerate(ordered):
        if tailed.route.group in blocked:
            continue
        planned = plan(tailed)
        if planned is not None and planned.cuts:
            plans.append(planned)
        # newer files of the group wait their turn: after a rotation, the old file's
        # end (even a partial line, sent once it is let go) comes first
        if planned is not None and not planned.eof:
            blocked.add(tailed.route.group)
            continue
        passes, handed = _may_pass(tailed, ordered[i + 1:], planned)
        handed_over |= handed
        if not passes:
            blocked.add(tailed.route.group)
    return plans, handed_over


def _may_pass(f: TailedFile, later: list[TailedFile], plan: Plan | None) -> tuple[bool, bool]:
    """May newer files of ``f``'s group be read now (``f`` was read to its end)? And
    was that by handing ``f``'s last pieces over to the next file?"""
    cut = plan.cuts[-1][0] if plan is not None and plan.cuts else f.cp.offset
    if not f.route.decoder.carries:  # a live file's partial last line: yes
        return f.detached_since is None or f.seen_size <= cut, False
    newer = next((n for n in later if n.route.group == f.route.group), None)
    if newer is None:
        return True, False
    if os.fstat(newer.fd).st_size == 0:
        return False, False  # nothing to read there yet; f may still grow
    # the writer moved on to newer, so f's size is final: sizes in this order
    if os.fstat(f.fd).st_size <= cut and not (f.cp.carry and cut == f.cp.offset):
        return True, False
    handed = not (plan is not None and plan.cuts) and _hand_over(f, newer)
    return handed, handed


def _hand_over(old: TailedFile, new: TailedFile) -> bool:
    """``old`` ends in a line in pieces and its writer moved on to ``new``: ``new``
    decodes those pieces before its first byte (its ``carry``). False: ``old``
    waits, or (``new`` was read already, or the pieces are too long) is marked
    ended, so its rest goes out as it is."""
    if old.cp.pending or old.ended:
        return False
    size = os.fstat(old.fd).st_size
    decoder = old.route.decoder
    if size - old.cp.offset > decoder.read_size:
        return False  # not read yet
    rest = old.cp.carry_bytes() + os.pread(old.fd, size - old.cp.offset, old.cp.offset)
    if decoder.cut(rest, False):
        return False  # whole lines to read first (old grew since it was read)
    if new.cp.offset or new.cp.seq or new.cp.pending or new.cp.carry or \
            len(rest) >= decoder.read_size:
        old.ended = True
        return False
    new.cp.set_carry(rest)
    old.cp.offset, old.cp.carry = size, ""
    old.seen_size = max(old.seen_size, size)
    return True


def _age(f: TailedFile) -> tuple[str, bool, int, int, int]:
    """Oldest first within a group: a detached file (renamed away, a copytruncate copy)
    before the files the globs still name, whatever their times; then by mtime, which is
    coarse (a rotation and the next write often share a tick, and a copy's time can be
    finer than the truncation's after it), then by a rotated name's number (app.log.2
    before app.log.1 before app.log), then by discovery."""
    numbered = _NUMBERED.search(f.cp.path)
    return (f.route.group, f.detached_since is None, f.mtime_ns,
            -int(numbered.group(1)) if numbered else 0, f.cp.order)


_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".lz4")


def rotated_while_down(names: Iterable[str], since_ns: int, known: Container[tuple[int, int]],
                       excluded: Callable[[str], bool]) -> dict[tuple[int, int], str]:
    """Files next to ``names`` with a rotated name of one (``app.log.1``,
    ``app.log-20250101``; not compressed), not ``known``, changed after
    ``since_ns``: rotations while the agent was down, by (dev, inode)."""
    found: dict[tuple[int, int], str] = {}
    for path in names:
        directory, base = os.path.split(path)
        try:
            entries = list(os.scandir(directory or "."))
        except OSError:
            continue
        for entry in entries:
            rest = entry.name[len(base):]
            if not entry.name.startswith(base) or rest[:1] not in (".", "-", "_") or \
                    entry.name.endswith(_COMPRESSED) or excluded(entry.path):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode) and st.st_mtime_ns > since_ns and key not in known:
                found[key] = entry.path
    return found
