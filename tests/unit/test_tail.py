"""File tail against real files and a real spool, in-process.

``collected`` replays the spool as the collector would (skip seq <= the
stream's high-water mark, number lines per (run, stream) in arrival order),
so "exactly once, in order" is checked on what the collector would store.
A crash between the checkpoint's intent and the spool append is a spool
that raises a BaseException (the thread dies there, as a process would).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mltrail.agent.sources.config import SourceConfig
from mltrail.agent.sources.files import FileRouter
from mltrail.agent.sources.tail import TailSource
from mltrail.agent.sources.watch import ChangeWatcher
from mltrail.agent.spool import Position, Spool, SpoolClosedError
from mltrail.common.lines import LINE_SPLIT_MARKER
from mltrail.proto import records_pb2


def collected(spool: Spool, run_id: str | None = None) -> dict[str, list[bytes]]:
    """Lines per stream name as the collector would keep them (dedupe by stream id, seq)."""
    hwm: dict[str, int] = {}
    out: dict[str, list[bytes]] = {}
    pending: dict[str, bytes] = {}
    for frame in spool.read(Position(0, 0), 1 << 40, 1 << 30):
        batch = records_pb2.Batch.FromString(frame.batch)
        for rec in batch.records:
            if rec.seq <= hwm.get(batch.stream_id, 0):
                continue
            assert rec.seq == hwm.get(batch.stream_id, 0) + 1 or hwm.get(batch.stream_id) is None
            hwm[batch.stream_id] = rec.seq
            if not rec.HasField("log") or (run_id and rec.run_id != run_id):
                continue
            data = pending.pop(rec.log.stream, b"") + rec.log.data
            lines = data.split(b"\n")
            out.setdefault(rec.log.stream, []).extend(lines[:-1])
            if lines[-1]:
                out[rec.log.stream].append(lines[-1])  # a partial tail is a line of its own
    return out


def make_source(tmp: Path, spool: Spool, paths: list[str], **extra: object) -> TailSource:
    settings: dict[str, object] = {"poll_interval": 0.02, "rescan_interval": 0.1,
                                   "rotate_wait": 0.1, **extra}
    config = SourceConfig(type="file", name="t", paths=tuple(paths), run_id="run-1",
                          stream="app", **settings)  # type: ignore[arg-type]
    return TailSource(config, FileRouter(config), spool, tmp / "checkpoints", fsync=False)


async def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def lines(start: int, stop: int, width: int = 20) -> bytes:
    return b"".join(f"line {i:0{width}d}\n".encode() for i in range(start, stop))


def expected(start: int, stop: int, width: int = 20) -> list[bytes]:
    return [f"line {i:0{width}d}".encode() for i in range(start, stop)]


@pytest.fixture
def spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Spool(tmp_path / "spool", fsync="never")
    yield s
    s.close()


async def test_reads_existing_and_appended_lines(tmp_path: Path, spool: Spool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 1000))
    source = make_source(tmp_path, spool, [str(tmp_path / "*.log")])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool).get("app", [])) == 1000)
        with open(log, "ab") as fh:
            fh.write(lines(1000, 1500) + b"partial")
        await wait_for(lambda: len(collected(spool).get("app", [])) == 1500)
        await asyncio.sleep(0.2)
        assert collected(spool)["app"] == expected(0, 1500)  # the partial line waits
        with open(log, "ab") as fh:
            fh.write(b" end\n")
        await wait_for(lambda: len(collected(spool)["app"]) == 1501)
        assert collected(spool)["app"][-1] == b"partial end"
        assert source.counters.lines_read == 1501
        assert source.files_watched() == 1
        assert source.lags() == [(str(log), 0)]
    finally:
        await source.shutdown(5)


async def test_rotation_by_rename_reads_the_old_file_to_its_end(tmp_path: Path,
                                                               spool: Spool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 100))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool).get("app", [])) == 100)
        with open(log, "ab") as fh:  # written, then rotated before the tail looks
            fh.write(lines(100, 200) + b"no newline")
            fh.flush()
            os.rename(log, tmp_path / "app.log.1")
            log.write_bytes(lines(200, 300))
        await wait_for(lambda: len(collected(spool)["app"]) == 301)
        got = collected(spool)["app"]
        assert got == [*expected(0, 200), b"no newline", *expected(200, 300)]
        await wait_for(lambda: source.files_watched() == 1)  # the old one was let go
        assert source.counters.rotations.get("rename") == 1
    finally:
        await source.shutdown(5)


async def test_copytruncate_and_truncation_restart_at_zero(tmp_path: Path,
                                                           spool: Spool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 100))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool).get("app", [])) == 100)
        with open(log, "r+b") as fh:
            fh.truncate(0)
        log.write_bytes(lines(100, 150))  # shorter than before
        await wait_for(lambda: len(collected(spool)["app"]) == 150)
        with open(log, "r+b") as fh:  # truncated and regrown past the offset unseen
            fh.truncate(0)
            fh.write(lines(150, 400, width=30))
        await wait_for(lambda: len(collected(spool)["app"]) == 400)
        got = collected(spool)["app"]
        assert got == [*expected(0, 150), *expected(150, 400, width=30)]
        assert source.counters.rotations.get("truncate") == 2
    finally:
        await source.shutdown(5)


async def test_deleted_while_open_is_read_to_the_end(tmp_path: Path, spool: Spool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 10))
    # A writer that holds the file open goes on appending after the name is gone;
    # rotate_wait is what the source gives it, long enough here for a loaded machine.
    source = make_source(tmp_path, spool, [str(log)], rotate_wait=2.0)
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool).get("app", [])) == 10)
        with open(log, "ab") as fh:
            os.unlink(log)
            # the source sees the name gone before the next write
            await wait_for(lambda: all(f.detached_since is not None
                                       for f in source._files.values()))
            fh.write(lines(10, 20) + b"tail")
            fh.flush()
        await wait_for(lambda: len(collected(spool)["app"]) == 21)
        assert collected(spool)["app"] == [*expected(0, 20), b"tail"]
        await wait_for(lambda: source.files_watched() == 0)
        assert source.counters.rotations.get("delete") == 1
    finally:
        await source.shutdown(5)


async def test_long_lines_are_split_with_the_marker(tmp_path: Path, spool: Spool) -> None:
    log = tmp_path / "app.log"
    long_line = b"x" * 5000
    log.write_bytes(b"short\n" + long_line + b"\nafter\n")
    source = make_source(tmp_path, spool, [str(log)], max_line_bytes=1024)
    await source.start()
    try:
        await wait_for(lambda: collected(spool).get("app", [b""])[-1:] == [b"after"])
        got = collected(spool)["app"]
        assert got[0] == b"short" and got[-1] == b"after"
        pieces = got[1:-1]
        assert all(len(p) <= 1024 for p in pieces)
        assert b"".join(p.removesuffix(LINE_SPLIT_MARKER) for p in pieces) == long_line
        assert source.lines_split() == 1  # one line, however many pieces
    finally:
        await source.shutdown(5)


async def test_start_at_end_skips_what_was_there_at_first_start(tmp_path: Path,
                                                                 spool: Spool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 50))
    source = make_source(tmp_path, spool, [str(log)], start_at="end")
    await source.start()
    try:
        await wait_for(lambda: source.files_watched() == 1)
        await asyncio.sleep(0.1)
        with open(log, "ab") as fh:
            fh.write(lines(50, 60))
        await wait_for(lambda: len(collected(spool).get("app", [])) == 10)
        assert collected(spool)["app"] == expected(50, 60)
    finally:
        await source.shutdown(5)


class CrashingSpool:
    """A real spool that dies before (or right after) its n-th append.

    It raises SpoolClosedError, on which the tail thread stops where it is,
    saving nothing more: as SIGKILL would leave it.
    """

    def __init__(self, spool: Spool, clean_appends: int, after: bool) -> None:
        self._spool, self._left, self._after = spool, clean_appends, after

    def append(self, *args: object, **kwargs: object) -> object:
        self._left -= 1
        if self._left < 0 and not self._after:
            raise SpoolClosedError("crash before the append")
        result = self._spool.append(*args, **kwargs)  # type: ignore[arg-type]
        if self._left < 0:
            raise SpoolClosedError("crash after the append")
        return result


@pytest.mark.parametrize("after", [False, True])
async def test_restart_after_a_crash_around_an_append_keeps_every_line_once(
        tmp_path: Path, spool: Spool, after: bool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 300))
    for round_ in (1, 2, 3):
        crashing = CrashingSpool(spool, 0 if after else 1, after)
        source = make_source(tmp_path, crashing, [str(log)])  # type: ignore[arg-type]
        await source.start()
        await asyncio.sleep(0.05)
        with open(log, "ab") as fh:  # more lines while it runs: the cut differs on restart
            fh.write(lines(300 * round_, 300 * (round_ + 1)))
        await asyncio.to_thread(source._thread.join, 1)  # type: ignore[union-attr]
        await source.shutdown(5)
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool).get("app", [])) >= 1200)
        await asyncio.sleep(0.1)
        assert collected(spool)["app"] == expected(0, 1200)
    finally:
        await source.shutdown(5)


async def every_line_once_in_order(spool: Spool, count: int) -> None:
    """Lines 0 to ``count`` - 1 of app.log are in the spool, each once and in order, also
    a moment after the last one came (a copy read late would land after it)."""
    await wait_for(lambda: expected(count - 1, count)[0] in collected(spool).get("app", []))
    await asyncio.sleep(0.3)
    assert collected(spool)["app"] == expected(0, count)


async def read_then_stop(tmp_path: Path, spool: Spool, count: int) -> Path:
    """app.log of ``count`` lines read by a source that then stops (the agent goes down)."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, count))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    await wait_for(lambda: len(collected(spool).get("app", [])) == count)
    await source.shutdown(5)
    return log


async def test_restart_finds_a_file_renamed_while_down(tmp_path: Path, spool: Spool) -> None:
    log = await read_then_stop(tmp_path, spool, 100)
    with open(log, "ab") as fh:
        fh.write(lines(100, 150))
    os.rename(log, tmp_path / "app.log.1")  # the glob no longer matches it
    log.write_bytes(lines(150, 200))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool)["app"]) == 200)
        assert collected(spool)["app"] == expected(0, 200)
    finally:
        await source.shutdown(5)


async def test_two_rotations_while_down_lose_nothing(tmp_path: Path, spool: Spool) -> None:
    log = await read_then_stop(tmp_path, spool, 100)
    with open(log, "ab") as fh:  # logrotate twice while the agent is stopped
        fh.write(lines(100, 150))
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(lines(150, 200))  # a file the agent never saw
    os.rename(tmp_path / "app.log.1", tmp_path / "app.log.2")
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(lines(200, 250))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool)["app"]) >= 250)
        assert collected(spool)["app"] == expected(0, 250)
        assert source.counters.files_lost == 0
    finally:
        await source.shutdown(5)


async def test_a_file_gone_while_down_is_counted_as_lost(tmp_path: Path, spool: Spool,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    log = await read_then_stop(tmp_path, spool, 10)
    with open(log, "ab") as fh:
        fh.write(lines(10, 20))
    os.rename(log, tmp_path / "old.txt")
    os.remove(tmp_path / "old.txt")  # rotated out and deleted before the agent is back
    log.write_bytes(lines(20, 30))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool)["app"]) >= 20)
        assert collected(spool)["app"] == expected(0, 10) + expected(20, 30)
        assert source.counters.files_lost == 1
        assert f"{log} (read up to byte" in caplog.text
    finally:
        await source.shutdown(5)


def test_inotify_wait_wakes_on_a_write_and_on_wake(tmp_path: Path) -> None:
    watcher = ChangeWatcher()
    try:
        assert watcher.notifies
        watcher.watch([str(tmp_path)])
        (tmp_path / "new.log").write_bytes(b"x\n")
        changes = watcher.wait(5.0)
        assert changes.any and changes.names
        started = time.monotonic()
        assert not watcher.wait(0.05).any  # nothing happened: a timeout
        assert time.monotonic() - started >= 0.04
        watcher.wake()
        assert watcher.wait(5.0).any
    finally:
        watcher.close()


async def test_many_files_at_once_each_whole_and_in_order(tmp_path: Path, spool: Spool) -> None:
    files = [tmp_path / f"job-{i:03d}.log" for i in range(150)]
    config = SourceConfig(type="file", name="many", paths=(str(tmp_path / "job-*.log"),),
                          run_id_from=r"path:job-(?P<run_id>\d+)\.log", stream="app",
                          poll_interval=0.02, rescan_interval=0.1)
    source = TailSource(config, FileRouter(config), spool, tmp_path / "cp", fsync=False)
    await source.start()
    try:
        for part in range(3):
            for path in files:
                with open(path, "ab") as fh:
                    fh.write(lines(part * 50, part * 50 + 50))
            await asyncio.sleep(0.05)
        await wait_for(lambda: source.counters.lines_read == 150 * 150, 20)
        assert source.files_watched() == 150
        for i in (0, 77, 149):
            assert collected(spool, f"{i:03d}")["app"] == expected(0, 150)
    finally:
        await source.shutdown(5)


def _thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_an_idle_source_sleeps(tmp_path: Path, spool: Spool) -> None:
    """No polling loop: an idle tail thread uses (next to) no CPU, yet wakes on a write."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 10))
    config = SourceConfig(type="file", name="idle", paths=(str(log),), run_id="r")
    source = TailSource(config, FileRouter(config), spool, tmp_path / "cp", fsync=False)
    await source.start()
    try:
        await wait_for(lambda: source.counters.lines_read == 10)
        assert source._thread is not None and source._thread.native_id is not None
        before = _thread_cpu_seconds(source._thread.native_id)
        await asyncio.sleep(1.5)
        assert _thread_cpu_seconds(source._thread.native_id) - before <= 0.02
        with open(log, "ab") as fh:
            fh.write(lines(10, 11))
        await wait_for(lambda: source.counters.lines_read == 11)  # woken on the write
        # the line is counted as read before its offset is committed
        await wait_for(lambda: source.lags() == [(str(log), 0)])
        await wait_for(lambda: source.counters.checkpoint_writes >= 2)
    finally:
        await source.shutdown(5)


class DyingSpool:
    """A real spool whose process dies right after the append of a batch holding ``line``
    (SpoolClosedError stops the tail thread there, saving nothing more: as SIGKILL)."""

    def __init__(self, spool: Spool, line: bytes) -> None:
        self._spool, self._line = spool, line

    def append(self, stream_id: str, first: int, last: int, data: bytes) -> object:
        result = self._spool.append(stream_id, first, last, data)
        if self._line in data:
            raise SpoolClosedError("killed after the append")
        return result


def write_when_first_found_empty(monkeypatch: pytest.MonkeyPatch, log: Path, data: bytes
                                 ) -> list[bool]:
    """The writer's first write after a truncation lands right after the tail's first
    read of the truncated file found it empty (a read at 0 that returned nothing), before
    its next read: the interleaving a loaded machine produces now and then, made certain.
    Returns a list that holds True once it happened."""
    real_pread, ino, done = os.pread, log.stat().st_ino, []

    def pread(fd: int, length: int, offset: int) -> bytes:
        got = real_pread(fd, length, offset)
        if not done and offset == 0 and got == b"" and os.fstat(fd).st_ino == ino:
            done.append(True)
            with open(log, "ab") as fh:
                fh.write(data)
        return got

    monkeypatch.setattr(os, "pread", pread)
    return done


async def test_kill_after_a_truncation_then_rewritten_past_the_offset_keeps_lines_once(
        tmp_path: Path, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """copytruncate, the agent killed while it reads the new period, then (while it is
    down) the period ends, is copied, and the file is truncated and rewritten past the
    offset. The checkpoint's fingerprint must vouch for the bytes its cuts hold: if it
    was taken when the file was still empty, the restart takes the next period for this
    one (resumes at the offset in the middle of it) and does not recognise the copy of
    this one (reads it again in full: its lines twice). Recognised, the copy holds the
    rest of the period."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 1000))  # period A
    dying = DyingSpool(spool, expected(1000, 1001)[0])
    source = make_source(tmp_path, dying, [str(log)])  # type: ignore[arg-type]
    await source.start()
    await wait_for(lambda: len(collected(spool).get("app", [])) == 1000)
    written = write_when_first_found_empty(monkeypatch, log, lines(1000, 1500))  # B begins
    shutil.copyfile(log, tmp_path / "old-A")  # a copy elsewhere: the tail reads app.log on
    os.truncate(log, 0)
    await asyncio.to_thread(source._thread.join, 30)  # type: ignore[union-attr]
    assert written and not source._thread.is_alive()  # type: ignore[union-attr]
    await source.shutdown(5)
    monkeypatch.undo()
    with open(log, "ab") as fh:  # while the agent is down: B ends, copytruncate, C
        fh.write(lines(1500, 2000))
    shutil.copyfile(log, tmp_path / "app.log.2")
    os.truncate(log, 0)
    with open(log, "ab") as fh:
        fh.write(lines(2000, 3000))  # past the offset the checkpoint holds
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        # B's end, not read when the file was truncated (the agent was down), is read
        # from B's copy, in B's stream; every line once, in order
        await every_line_once_in_order(spool, 3000)
    finally:
        await source.shutdown(5)


async def test_a_truncation_and_rewrite_just_before_a_read_is_not_read_as_old_content(
        tmp_path: Path, spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file checked (same head, not shorter), then truncated and rewritten past the
    offset before the read: the bytes read are the middle of the new content. They are
    dropped (the head changed) and the new content is read from its start, once."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 100))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await wait_for(lambda: len(collected(spool).get("app", [])) == 100)
        offset, real_pread, done = log.stat().st_size, os.pread, []

        def pread(fd: int, length: int, at: int) -> bytes:
            if not done and at == offset and os.fstat(fd).st_ino == log.stat().st_ino:
                done.append(True)  # the writer: copytruncate, then the next period
                os.truncate(log, 0)
                with open(log, "ab") as fh:
                    fh.write(lines(200, 400))
            return real_pread(fd, length, at)

        monkeypatch.setattr(os, "pread", pread)
        with open(log, "ab") as fh:
            fh.write(lines(100, 110))  # the tail wakes, checks the head, then reads
        await wait_for(lambda: expected(399, 400)[0] in collected(spool).get("app", []))
        assert done
        await asyncio.sleep(0.2)
        assert collected(spool)["app"] == expected(0, 100) + expected(200, 400)
    finally:
        await source.shutdown(5)


class ParkedWatcher(ChangeWatcher):
    """A real watcher the test can hold: while parked, the tail thread waits between two
    rounds (an agent busy elsewhere, or starved of CPU), whatever happens to the files."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.parked = threading.Event(), threading.Event()
        self.gate.set()

    def wait(self, timeout: float):  # type: ignore[no-untyped-def]
        if not self.gate.is_set():
            self.parked.set()
            self.gate.wait()
        return super().wait(timeout)

    async def park(self) -> None:
        self.parked.clear()
        self.gate.clear()
        self.wake()
        await asyncio.to_thread(self.parked.wait, 30)
        assert self.parked.is_set()


async def parked_source(tmp_path: Path, spool: Spool
                        ) -> tuple[Path, ParkedWatcher, TailSource]:
    """A source on app.log (100 lines, read) with a watcher the test can park."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 100))
    watcher = ParkedWatcher()
    config = SourceConfig(type="file", name="t", paths=(str(log),), run_id="run-1",
                          stream="app", poll_interval=0.02, rescan_interval=0.1,
                          rotate_wait=0.1)
    source = TailSource(config, FileRouter(config), spool, tmp_path / "checkpoints",
                        fsync=False, watcher=watcher)
    await source.start()
    await wait_for(lambda: len(collected(spool).get("app", [])) == 100)
    return log, watcher, source


async def test_copytruncate_twice_between_two_reads_loses_nothing(
        tmp_path: Path, spool: Spool) -> None:
    """The agent up but not reading while the file is copied and truncated twice: the end
    of the period it was reading, and the whole period after it, are in the copies; it
    reads them (that one's in its stream, from its offset), oldest first, then the file."""
    log, watcher, source = await parked_source(tmp_path, spool)
    try:
        await watcher.park()
        read_at = log.stat().st_mtime_ns
        with open(log, "ab") as fh:
            fh.write(lines(100, 150))  # the end of period A, never read here
        for n, (period, tick) in enumerate([(lines(150, 250), 1), (lines(250, 300), 2)]):
            copy = tmp_path / f"app.log.{n + 1}"
            shutil.copyfile(log, copy)
            os.utime(copy, ns=(read_at + tick * 10**9,) * 2)  # one coarse tick apart, made
            os.truncate(log, 0)                              # certain
            with open(log, "ab") as fh:
                fh.write(period)
        os.utime(log, ns=(read_at + 3 * 10**9,) * 2)
        watcher.gate.set()
        await every_line_once_in_order(spool, 300)
        assert source.counters.rotations.get("truncate") == 1
    finally:
        await source.shutdown(5)


async def test_a_truncation_unseen_before_anything_was_read_again_loses_nothing(
        tmp_path: Path, spool: Spool) -> None:
    """Truncated (its copy to read first), then, before the tail read anything of the file
    again, written, copied and truncated once more: with nothing read, the content cannot
    tell, so the copies newer than the last look are read (the second one from its start,
    in the stream that had read nothing), then the file."""
    log, watcher, source = await parked_source(tmp_path, spool)
    try:
        await watcher.park()
        with open(log, "ab") as fh:
            fh.write(lines(100, 150))  # the end of period A, unread
        shutil.copyfile(log, tmp_path / "app.log.1")
        os.truncate(log, 0)
        watcher.gate.set()
        await wait_for(lambda: source.counters.rotations.get("truncate") == 1)
        await watcher.park()  # the truncation seen, nothing of the file read since
        looked_at = log.stat().st_mtime_ns
        with open(log, "ab") as fh:
            fh.write(lines(150, 250))  # period B, never read here
        copy = tmp_path / "app.log.2"
        shutil.copyfile(log, copy)
        os.truncate(log, 0)
        with open(log, "ab") as fh:
            fh.write(lines(250, 300))  # period C
        os.utime(copy, ns=(looked_at + 10**9,) * 2)  # one coarse tick apart, made certain
        os.utime(log, ns=(looked_at + 2 * 10**9,) * 2)
        watcher.gate.set()
        await every_line_once_in_order(spool, 300)
    finally:
        await source.shutdown(5)


async def test_a_copy_of_what_was_read_is_not_read_again_whatever_its_time(
        tmp_path: Path, spool: Spool) -> None:
    """File times are coarse and a copy's can be finer, so a copy made before a truncation
    can look newer than the file after it. A copy that starts as content read before (here
    the checkpointed file, copied and truncated while the agent was down) is not taken for
    a period never read, however new its time looks."""
    log = await read_then_stop(tmp_path, spool, 100)
    copy = tmp_path / "app.log.1"
    shutil.copyfile(log, copy)
    os.truncate(log, 0)
    log.write_bytes(lines(100, 150))
    later = log.stat().st_mtime_ns + 10**9
    os.utime(copy, ns=(later, later))  # the copy looks a second newer than the file
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await every_line_once_in_order(spool, 150)
    finally:
        await source.shutdown(5)


async def test_copytruncate_while_down_reads_the_rest_from_the_copy(
        tmp_path: Path, spool: Spool) -> None:
    """The checkpointed file grew, was copied and truncated, and got new lines, all while
    the agent was down: the lines after the checkpoint are read from the copy (in the old
    stream, from its offset), then the file's new ones."""
    log = await read_then_stop(tmp_path, spool, 100)
    with open(log, "ab") as fh:
        fh.write(lines(100, 150))
    shutil.copyfile(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    with open(log, "ab") as fh:
        fh.write(lines(150, 200))
    source = make_source(tmp_path, spool, [str(log)])
    await source.start()
    try:
        await every_line_once_in_order(spool, 200)
        assert source.counters.files_lost == 0
    finally:
        await source.shutdown(5)
