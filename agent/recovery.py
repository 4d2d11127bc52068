"""Opening a spool: one writer at a time, then recover the segments on disk.

``recover_segments`` checks every frame from the ledger's position on. A
torn or corrupt frame is cut: the scan resumes at the next intact frame if
it finds one (damage in the middle), otherwise it drops the rest of that
segment (a torn tail, truncated on disk if it is the newest segment). Every
cut is reported (``ScanReport.cuts``, logged by the caller's counters); a
damaged spool always opens.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mltrail.agent.frames import Position, find_next_frame, parse_frame, read_ledger
from mltrail.common.errors import MltrailError
from mltrail.common.locks import LockHeld, take_lock

log = logging.getLogger("mltrail.agent.spool")

SEGMENT_SUFFIX = ".seg"


class SpoolLockedError(MltrailError):
    """Another process (an agent, an SDK, ``mltrail sync``) has the spool open."""


def segment_path(segments_dir: Path, index: int) -> Path:
    return segments_dir / f"{index:020d}{SEGMENT_SUFFIX}"


def lock_directory(directory: Path) -> int:
    """One writer per spool: two would interleave frames and delete each other's segments."""
    try:
        return take_lock(directory / "lock")
    except LockHeld as held:
        raise SpoolLockedError(
            f"the spool {directory} is in use by another process (pid {held.holder}); stop "
            "it or use another spool directory; nothing in the spool was changed"
        ) from None


@dataclass
class ScanReport:
    """What the opening scan found: kept frames and what it had to cut."""

    frames: int = 0
    bytes: int = 0
    cut_bytes: int = 0
    corrupt_frames: int = 0
    cuts: list[str] = field(default_factory=list)
    streams: Counter[str] = field(default_factory=Counter)  # pending frames per stream


@dataclass
class Recovered:
    sizes: dict[int, int]  # segment -> end of its last intact frame
    holes: dict[Position, int]  # damaged frame start -> next intact frame offset
    ack: Position
    report: ScanReport


def recover_segments(directory: Path, segments_dir: Path) -> Recovered:
    """Scan from the ledger's position; delete segments acknowledged before a crash."""
    indexes = sorted(
        int(p.stem) for p in segments_dir.glob("*" + SEGMENT_SUFFIX) if p.stem.isdigit()
    )
    ledger = _checked_ledger(directory, segments_dir, indexes)
    found = Recovered({}, {}, Position(0, 0), ScanReport())
    for index in indexes:
        if index < ledger.segment:
            segment_path(segments_dir, index).unlink(missing_ok=True)
            continue
        start = ledger.offset if index == ledger.segment else 0
        found.sizes[index] = _scan_segment(
            segment_path(segments_dir, index), index, start, index == indexes[-1], found)
    if not found.sizes:
        found.sizes[max(ledger.segment, 1)] = 0
    first = min(found.sizes)
    if ledger.segment in found.sizes and ledger.offset <= found.sizes[ledger.segment]:
        found.ack = max(ledger, Position(first, 0))
    else:  # the ledger's segment is gone: resend from the oldest (duplicates are skipped)
        found.ack = Position(first, 0)
    found.report.bytes = sum(found.sizes.values())
    for cut in found.report.cuts:
        log.warning("spool %s: %s", directory, cut)
    return found


def _checked_ledger(directory: Path, segments_dir: Path, indexes: list[int]) -> Position:
    ledger = read_ledger(directory)
    if ledger.segment in indexes and (
        ledger.offset > segment_path(segments_dir, ledger.segment).stat().st_size
    ):
        log.warning("spool ledger %s points past its segment's end: resending from the "
                    "oldest segment", ledger)
        return Position(0, 0)
    return ledger


def _scan_segment(path: Path, index: int, start: int, last: bool, found: Recovered) -> int:
    """Check frames from ``start``; returns the end of the last intact frame."""
    report = found.report
    data = path.read_bytes()
    offset = start
    while offset < len(data):
        frame = parse_frame(data, offset, index)
        if frame is not None:
            report.frames += 1
            report.streams[frame.stream_id] += 1
            offset = frame.end.offset
            continue
        resume = find_next_frame(data, offset, index)
        if resume is None:
            report.cut_bytes += len(data) - offset
            report.cuts.append(
                f"segment {path.name}: cut {len(data) - offset} bytes of a torn or corrupt "
                f"tail at offset {offset}; kept {offset} bytes before it"
            )
            if last:
                with open(path, "r+b") as fh:
                    fh.truncate(offset)
                    os.fsync(fh.fileno())
            return offset
        report.corrupt_frames += 1
        report.cut_bytes += resume - offset
        report.cuts.append(
            f"segment {path.name}: skipped {resume - offset} corrupt bytes at offset "
            f"{offset}; resumed at the next intact frame (offset {resume})"
        )
        found.holes[Position(index, offset)] = resume
        offset = resume
    return offset
