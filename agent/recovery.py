"""Opening a spool: one writer at a time, then recover the segments on disk.

``recover_segments`` checks every frame from the ledger's position on. A
torn or corrupt frame is cut: the scan resumes at the next intact frame if
it finds one (damage in the middle), otherwise it drops the rest of that
segment (a torn tail, truncated on disk if it is the newest segment). Every
cut is reported (``ScanReport.cuts``, logged by the caller's counters); a
damaged spool always opens.

The records cut are counted too (``ScanReport.cut_records``), per stream as a
union of seq ranges: the seqs in a damaged frame's header where it can still
be read, and the seqs an intact frame after a cut skips over in its stream
(a header hit by the damage, a frame torn off a segment's end).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mltrail.agent.frames import (
    Position,
    SpoolFrame,
    damaged_headers,
    find_next_frame,
    parse_frame,
    read_ledger,
)
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
    cut_records: int = 0
    cut_seqs: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # merged ranges
    cuts: list[str] = field(default_factory=list)
    streams: Counter[str] = field(default_factory=Counter)  # pending frames per stream


@dataclass
class Recovered:
    sizes: dict[int, int]  # segment -> end of its last intact frame
    holes: dict[Position, int]  # damaged frame start -> next intact frame offset
    ack: Position
    report: ScanReport
    lost: _CutSeqs = field(default_factory=lambda: _CutSeqs())


class _CutSeqs:
    """Per stream, the seq ranges cut: see the module docstring."""

    def __init__(self) -> None:
        self.ranges: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
        self._last: dict[str, tuple[int, int]] = {}  # stream -> (highest seq kept, cuts then)
        self._cuts = 0

    def kept(self, frame: SpoolFrame) -> None:
        sid = frame.stream_id
        seen, cuts = self._last.get(sid, (0, self._cuts))
        if cuts < self._cuts and frame.first_seq > seen + 1:
            self.ranges[sid].append((seen + 1, frame.first_seq - 1))
        self._last[sid] = (max(seen, frame.last_seq), self._cuts)

    def cut(self, data: bytes, start: int, end: int) -> str:
        """Note a cut of ``data[start:end]``; says which seqs its readable headers held."""
        self._cuts += 1
        headers = damaged_headers(data, start, end)
        for sid, first, last in headers:
            self.ranges[sid].append((first, last))
        if not headers:
            return "no frame header in it could be read"
        return "frames of " + ", ".join(f"stream {sid} seqs {first}-{last}"
                                        for sid, first, last in headers)

    def merged(self) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list[tuple[int, int]]] = {}
        for sid, ranges in self.ranges.items():
            merged: list[tuple[int, int]] = []
            for first, last in sorted(ranges):
                if merged and first <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], last))
                else:
                    merged.append((first, last))
            out[sid] = merged
        return out


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
    report = found.report
    report.bytes = sum(found.sizes.values())
    report.cut_seqs = found.lost.merged()
    report.cut_records = sum(last - first + 1 for ranges in report.cut_seqs.values()
                             for first, last in ranges)
    for cut in report.cuts:
        log.warning("spool %s: %s", directory, cut)
    if report.cuts:
        log.error("spool %s: %s", directory, cut_summary(directory, report))
    return found


def cut_summary(directory: Path, report: ScanReport) -> str:
    """What was cut at open, how many records, what it means and what to do."""
    streams = "; ".join(
        f"{sid} seqs {', '.join(f'{a}-{b}' for a, b in ranges)}"
        for sid, ranges in list(report.cut_seqs.items())[:5])
    more = len(report.cut_seqs) - 5
    return (
        f"cut {report.cut_records} records ({report.cut_bytes} bytes, {len(report.cuts)} "
        f"damaged places) from damaged segments at open"
        f"{': ' + streams if streams else ''}{f' and {more} more streams' if more > 0 else ''}; "
        "every intact frame was kept; the records cut cannot be sent and the collector gets "
        "a gap record for their seqs when their streams send more (counted in "
        "mltrail_agent_dropped_records{reason=\"not_in_spool\"}); check the disk under "
        f"{directory} (a crash in mid-write, or a failing disk) and the runs of those streams")


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
            found.lost.kept(frame)
            offset = frame.end.offset
            continue
        resume = find_next_frame(data, offset, index)
        held = found.lost.cut(data, offset, len(data) if resume is None else resume)
        if resume is None:
            report.cut_bytes += len(data) - offset
            report.cuts.append(
                f"segment {path.name}: cut {len(data) - offset} bytes of a torn or corrupt "
                f"tail at offset {offset} ({held}); kept {offset} bytes before it"
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
            f"{offset} ({held}); resumed at the next intact frame (offset {resume})"
        )
        found.holes[Position(index, offset)] = resume
        offset = resume
    return offset
