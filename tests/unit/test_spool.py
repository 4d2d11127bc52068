"""The spool on its own: frames, positions, ledger, cuts, cap policies, full disk."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest

from mltrail.agent.spool import (
    FRAME_HEAD,
    Position,
    Spool,
    SpoolDiskFullError,
    encode_frame,
    parse_frame,
)
from mltrail.proto import records_pb2


def fill(spool: Spool, count: int, size: int = 100, sid: str = "s1", first: int = 1,
         droppable: bool = False) -> list[int]:
    """Append ``count`` frames of one record each; returns their seqs."""
    seqs = list(range(first, first + count))
    for seq in seqs:
        spool.append(sid, seq, seq, bytes([seq % 251]) * size, droppable)
    return seqs


def read_all(spool: Spool, start: Position | None = None) -> list[int]:
    frames = spool.read(start or spool.ack_position, 1 << 30)
    return [f.first_seq for f in frames]


def segment_files(directory: Path) -> list[Path]:
    return sorted((directory / "segments").glob("*.seg"))


def test_frame_round_trip_and_crc_catches_a_flip() -> None:
    data = bytearray(encode_frame("abc", 5, 9, b"batch-bytes", droppable=True))
    frame = parse_frame(bytes(data), 0)
    assert frame is not None
    assert (frame.stream_id, frame.first_seq, frame.last_seq, frame.droppable, frame.batch) == (
        "abc", 5, 9, True, b"batch-bytes")
    assert frame.end.offset == len(data)
    data[-1] ^= 0x01
    assert parse_frame(bytes(data), 0) is None


def test_append_read_ack_across_segments_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000, fsync="always")
    fill(spool, 30)
    assert len(segment_files(tmp_path)) > 3
    assert read_all(spool) == list(range(1, 31))
    frames = spool.read(spool.ack_position, 1 << 30)
    spool.ack(frames[19].end)
    assert read_all(spool) == list(range(21, 31))
    segments_before = spool.segments
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=1000)
    assert read_all(reopened) == list(range(21, 31))  # the ledger kept the ack position
    assert reopened.segments <= segments_before
    assert reopened.scan_report.cut_bytes == 0
    assert reopened.scan_report.streams["s1"] == 10
    reopened.close()


def test_acknowledged_segments_are_deleted_and_empty_spool_reports_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000, fsync="never")
    fill(spool, 40)
    assert not spool.empty()
    last = spool.read(spool.ack_position, 1 << 30)[-1]
    spool.ack(last.end)
    assert spool.empty()
    assert len(segment_files(tmp_path)) == 1  # only the write segment is left
    fill(spool, 3, first=41)
    assert read_all(spool) == [41, 42, 43]
    spool.close()


def test_torn_last_frame_is_cut_and_reported(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 10)
    spool.close()
    seg = segment_files(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as fh:
        fh.truncate(size - 7)  # a crash in the middle of the last write
    reopened = Spool(tmp_path)
    assert read_all(reopened) == list(range(1, 10))
    report = reopened.scan_report
    assert report.cut_bytes == 100 + FRAME_HEAD.size + 22 + 2 - 7
    assert "torn or corrupt tail" in report.cuts[0]
    assert seg.stat().st_size == report.bytes  # truncated on disk too
    fill(reopened, 1, first=10)  # appends go on after the cut
    assert read_all(reopened) == list(range(1, 11))
    reopened.close()


def test_flipped_byte_mid_segment_keeps_every_intact_frame(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1500)
    fill(spool, 30)
    spool.close()
    segs = segment_files(tmp_path)
    assert len(segs) >= 3
    for seg in (segs[0], segs[-1]):  # an older segment and the write segment
        data = bytearray(seg.read_bytes())
        data[len(data) // 2] ^= 0xFF
        seg.write_bytes(bytes(data))
    reopened = Spool(tmp_path, segment_bytes=1500)
    kept = read_all(reopened)
    assert len(kept) == 28  # exactly the two damaged frames are gone
    assert kept == sorted(kept)
    assert len(reopened.scan_report.cuts) == 2
    assert all("resumed at the next intact frame" in c for c in reopened.scan_report.cuts)
    assert reopened.counters.corrupt_frames == 2
    reopened.close()


def test_records_cut_at_open_are_counted_in_the_middle_and_at_the_end(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path, fsync="always")
    starts = []
    for i in range(10):  # one-record frames of s1 between ten-record frames of s2
        for sid, first, last in (("s1", i + 1, i + 1), ("s2", 10 * i + 1, 10 * i + 10)):
            starts.append(spool.bytes)
            spool.append(sid, first, last, bytes([i]) * 100)
    spool.close()
    seg = segment_files(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[starts[3] + 60] ^= 0xFF  # in the batch of s2 11-20: its header still reads
    data[starts[6] + FRAME_HEAD.size] ^= 0xFF  # the magic of s1 seq 4: no header to read
    seg.write_bytes(bytes(data[:-7]))  # and a torn tail: s2 91-100
    caplog.set_level("WARNING", logger="mltrail.agent.spool")
    reopened = Spool(tmp_path)
    report = reopened.scan_report
    assert report.cut_seqs == {"s2": [(11, 20), (91, 100)], "s1": [(4, 4)]}
    assert report.cut_records == reopened.counters.cut_records == 21
    assert report.corrupt_frames == 2 and len(report.cuts) == 3
    assert "stream s2 seqs 11-20" in report.cuts[0]
    assert "no frame header in it could be read" in report.cuts[1]
    assert "stream s2 seqs 91-100" in report.cuts[2]
    summary = [r.getMessage() for r in caplog.records if "cut 21 records" in r.getMessage()]
    assert len(summary) == 1 and "not_in_spool" in summary[0] and "check the disk" in summary[0]
    kept = [(f.stream_id, f.first_seq) for f in reopened.read(reopened.ack_position, 1 << 30)]
    assert kept == [(sid, first) for sid, first in
                    [(s, f) for i in range(10) for s, f in (("s1", i + 1), ("s2", 10 * i + 1))]
                    if (sid, first) not in {("s2", 11), ("s1", 4), ("s2", 91)}]
    reopened.close()


def test_seqs_skipped_without_damage_are_not_counted_as_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 2)
    fill(spool, 2, first=7)  # a jump (the collector asks for 3-6 later), then a resend
    fill(spool, 3, first=5)
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.scan_report.cut_records == 0 and reopened.scan_report.cut_seqs == {}
    reopened.close()


def test_garbage_length_at_tail_does_not_stop_opening(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 3)
    spool.close()
    seg = segment_files(tmp_path)[-1]
    with open(seg, "ab") as fh:
        fh.write(b"\xff\xff\xff\x7f" + b"\x00" * 20)
    reopened = Spool(tmp_path)
    assert read_all(reopened) == [1, 2, 3]
    assert reopened.scan_report.cut_bytes == 24
    reopened.close()


def test_full_spool_blocks_the_appender_until_acks_free_space(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=3000, segment_bytes=1000, fsync="never")
    fill(spool, 20)  # about 2,700 bytes
    done = threading.Event()

    def late_append() -> None:
        fill(spool, 10, first=21)
        done.set()

    thread = threading.Thread(target=late_append)
    thread.start()
    assert not done.wait(0.5)  # blocked: the spool is full
    assert spool.counters.blocked_appends >= 1
    received: list[int] = []
    deadline = time.monotonic() + 10
    while len(received) < 30 and time.monotonic() < deadline:
        frames = spool.read(spool.ack_position, 1 << 30)
        if frames:
            received += [f.first_seq for f in frames]
            spool.ack(frames[-1].end)
        else:
            time.sleep(0.01)
    thread.join(5)
    assert done.is_set()
    assert received == list(range(1, 31))  # nothing lost, in order
    assert spool.counters.dropped_records == 0
    spool.close()


def test_drop_newest_drops_only_droppable_and_counts_exactly(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2000, full_policy="drop_newest", fsync="never")
    fill(spool, 10, droppable=True)  # about 1,350 bytes
    outcomes = [spool.append("s1", seq, seq + 4, b"x" * 100, True).spooled
                for seq in range(11, 61, 5)]
    assert outcomes.count(False) == spool.counters.dropped_batches > 0
    assert spool.counters.dropped_records == 5 * outcomes.count(False)
    frames = spool.read(spool.ack_position, 1 << 30)
    gaps = [records_pb2.Batch.FromString(f.batch).records[0] for f in frames
            if b"drop_newest" in f.batch]
    assert len(frames) - len(gaps) == 10 + outcomes.count(True)
    # each dropped batch left a gap record in its place: every seq is accounted for
    assert [f.first_seq for f in frames] == [*range(1, 11), *range(11, 61, 5)]
    assert len(gaps) == outcomes.count(False)
    assert all(g.gap.last_seq == g.seq + 4 and g.gap.records == 5 for g in gaps)
    spool.close()


class FullDiskWriter:
    """A writer that fails with ENOSPC after ``allowed`` writes, half-writing the frame."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.full = True

    def __call__(self, fd: int, data: bytes) -> int:
        import os

        if self.allowed > 0 or not self.full:
            self.allowed -= 1
            return os.write(fd, data)
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_refuses_the_append_and_keeps_the_spool(tmp_path: Path) -> None:
    writer = FullDiskWriter(allowed=5)
    spool = Spool(tmp_path, writer=writer)
    fill(spool, 5)
    with pytest.raises(SpoolDiskFullError, match="disk is full"):
        fill(spool, 1, first=6)
    assert spool.counters.disk_full_errors == 1
    assert read_all(spool) == [1, 2, 3, 4, 5]  # the half-written frame was removed
    writer.full = False
    fill(spool, 1, first=6)
    spool.close()
    reopened = Spool(tmp_path)
    assert read_all(reopened) == [1, 2, 3, 4, 5, 6]
    assert reopened.scan_report.cut_bytes == 0
    reopened.close()


def test_group_commit_serves_concurrent_appenders(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync="always")
    threads = [threading.Thread(target=fill, args=(spool, 50), kwargs={"sid": f"s{i}"})
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    frames = spool.read(spool.ack_position, 1 << 30)
    assert len(frames) == 200
    for i in range(4):
        assert [f.first_seq for f in frames if f.stream_id == f"s{i}"] == list(range(1, 51))
    spool.close()


def test_a_ledger_pointing_at_a_missing_segment_resends_from_the_oldest(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 3)
    spool.close()
    (tmp_path / "ledger.json").write_text('{"segment": 1, "offset": 99999}')
    reopened = Spool(tmp_path)
    assert read_all(reopened) == [1, 2, 3]
    reopened.close()


def test_a_second_writer_is_refused_and_the_lock_goes_with_close(tmp_path: Path) -> None:
    import os

    from mltrail.agent.spool import SpoolLockedError

    spool = Spool(tmp_path)
    fill(spool, 2)
    with pytest.raises(SpoolLockedError, match=f"pid {os.getpid()}"):
        Spool(tmp_path)
    spool.close()
    again = Spool(tmp_path)
    assert read_all(again) == [1, 2]
    again.close()
