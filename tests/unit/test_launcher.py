"""ProcessLauncher with real child processes and an in-memory sink."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

import pytest

from mltrail.pipeline import launcher
from mltrail.pipeline.launcher import COALESCE_SECONDS, ProcessLauncher, coalesce_pause, flood_pause


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes, bool, int]] = []
        self.line_times: list[Sequence[int] | None] = []  # per chunk
        self.lock = threading.Lock()

    def __call__(self, stream: str, data: bytes, partial: bool, t: int,
                 line_times: Sequence[int] | None = None) -> None:
        with self.lock:
            self.chunks.append((stream, data, partial, t))
            self.line_times.append(line_times)

    def stream(self, name: str) -> bytes:
        return b"".join(d for s, d, _, _ in self.chunks if s == name)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_streams_kept_apart_in_order_with_child_output_and_exit_code() -> None:
    code = (
        "import os, subprocess, sys\n"
        "for i in range(200):\n"
        "    print(f'out {i}', flush=True); print(f'err {i}', file=sys.stderr, flush=True)\n"
        "subprocess.run([sys.executable, '-c', 'print(\"from child\")'])\n"
        "sys.stdout.buffer.write(b'bad \\xff\\xfe bytes\\nno newline'); sys.exit(3)\n"
    )
    sink = ListSink()
    result = ProcessLauncher(py(code), sink, echo=False).run()
    assert result.exit_code == 3 and not result.canceled
    out = sink.stream("stdout").split(b"\n")
    assert out[:200] == [b"out %d" % i for i in range(200)]
    assert out[200:] == [b"from child", b"bad \xff\xfe bytes", b"no newline"]
    assert sink.stream("stderr") == b"".join(b"err %d\n" % i for i in range(200))
    assert result.stderr_tail[-1] == "err 199"
    assert [p for s, _, p, _ in sink.chunks if s == "stdout"][-1] is True


def test_stop_forwards_sigterm_and_kills_after_grace() -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    sink = ListSink()
    launcher = ProcessLauncher(py(code), sink, echo=False, grace=0.5)

    def stop_once_up() -> None:  # the child ignores SIGTERM from then on
        deadline = time.monotonic() + 60
        while b"up" not in sink.stream("stdout") and time.monotonic() < deadline:
            time.sleep(0.02)
        launcher.stop(signal.SIGTERM)

    threading.Thread(target=stop_once_up, daemon=True).start()
    result = launcher.run()  # returns after the grace, not after the child's 60 s
    assert result.canceled and result.killed
    assert result.exit_code == 128 + signal.SIGKILL
    assert sink.stream("stdout") == b"up\n"


def test_a_straggler_that_keeps_writing_cannot_hold_the_run_open() -> None:
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', "
        "'import time\\nwhile True:\\n    print(\"tick\", flush=True); time.sleep(0.3)'])\n"
        "print('main done', flush=True)\n"
    )
    sink = ListSink()
    launcher = ProcessLauncher(py(code), sink, echo=False, after_exit=1.5)
    result = launcher.run()
    assert result.exit_code == 0
    assert launcher.pumps[0].cut_short, "the pump kept reading a chatty straggler"
    assert b"main done\n" in sink.stream("stdout")
    # The straggler gets EPIPE once the pipe is closed and ends by itself.


def test_coalesce_pause_never_outlasts_half_the_pipe() -> None:
    pipe = 1 << 20
    assert coalesce_pause(0, 0, 0.001, pipe) == 0.0             # end of file
    assert coalesce_pause(pipe, 0, 0.001, pipe) == 0.0          # a full read: no pause
    assert coalesce_pause(8192, 8192, 1.0, pipe) == COALESCE_SECONDS  # a trickle
    # 256 KiB in 0.25 ms (1 GB/s): half the pipe fills in 0.5 ms, so pause less.
    pause = coalesce_pause(256 * 1024, 8192, 0.00025, pipe)
    assert 0 < pause <= 0.0005
    # A small read right after a full one: the writer floods and was just woken.
    assert coalesce_pause(100 * 1024, pipe, 0.001, pipe) == 0.0


FLOOD = (
    "import sys\n"
    "w = sys.stdout.buffer.write\n"
    "for i in range(int(sys.argv[1]) * 16384): w(b'%063d\\n' % i)\n"
)


def test_a_flood_is_held_back_up_to_the_limit_and_every_line_follows_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launcher, "BURST_HOLD_BYTES", 4 << 20)
    sink = ListSink()
    runner = ProcessLauncher([*py(FLOOD), "48"], sink, echo=False)
    assert runner.run().exit_code == 0
    assert sink.stream("stdout") == b"".join(b"%063d\n" % i for i in range(48 * 16384))
    # Never held past the limit plus the read that crossed it (and the partial line
    # carried into that read). Whether this run's writer was fast enough to count as a
    # flood depends on the machine's load: that decision is checked with a given clock
    # in test_the_rate_of_reads_decides_whether_lines_are_held.
    assert runner.pumps[0].held_peak <= (4 << 20) + launcher.READ_BYTES + 64
    # Handed on in records of about a read, not one record per flood.
    assert max(len(d) for s, d, _, _ in sink.chunks if s == "stdout") <= 2 * launcher.READ_BYTES


def test_the_rate_of_reads_decides_whether_lines_are_held(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pump's decision with the clock given, not the scheduler's: reads faster than
    BURST_RATE hold lines up to BURST_HOLD_BYTES; a slower writer's lines go on every
    DELIVER_BYTES."""
    monkeypatch.setattr(launcher, "BURST_HOLD_BYTES", 4 << 20)
    line = b"x" * 63 + b"\n"
    read_fd, write_fd = os.pipe()
    try:
        for flood, read, every, held_at_least, held_at_most in (
                (True, launcher.READ_BYTES, 0.001, 4 << 20, 4 << 20),  # 1 GB/s
                (False, 8192, 0.01, launcher.DELIVER_BYTES, launcher.DELIVER_BYTES + 8192)):
            sink = ListSink()
            pump = launcher._Pump("stdout", read_fd, None, sink, 1 << 20, threading.Event(),
                                  False)
            now = pump._window_start
            for i in range(40):
                now += every
                pump._measure_rate(read, now)
                pump._hold(line * (read // 64), i)
            assert pump._bursting is flood
            assert held_at_least <= pump.held_peak <= held_at_most
            pump._deliver_held()
            assert sink.stream("stdout") == line * (40 * read // 64)  # whole, in order
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_flood_pause_lets_a_quarter_of_the_pipe_fill() -> None:
    pipe = 1 << 20
    assert flood_pause(pipe // 2, 800e6, pipe) == 0.0     # a large read: read again at once
    assert flood_pause(16384, 0.0, pipe) == 0.0           # no rate measured yet
    assert flood_pause(16384, 800e6, pipe) == pytest.approx((pipe // 4) / 800e6)
    assert flood_pause(16384, 1e6, pipe) == COALESCE_SECONDS  # a slow flood: the cap


class SlowSink(ListSink):
    """Takes a moment per record, as the SDK's sink does while the sender is behind."""

    def __call__(self, stream: str, data: bytes, partial: bool, t: int,
                 line_times: Sequence[int] | None = None) -> None:
        time.sleep(0.002)
        super().__call__(stream, data, partial, t, line_times)


def test_held_lines_keep_the_time_they_were_read() -> None:
    # stdout floods (held back), stderr writes one line in the middle. The
    # streams are merged by line time for `mltrail logs`: held lines stamped
    # when handed on (a second later) came after that stderr line.
    code = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "block = b''.join(b'%063d\\n' % i for i in range(16384))\n"
        "for _ in range(32): out.write(block)\n"
        "out.write(b'before\\n'); out.flush()\n"
        "sys.stderr.write('middle\\n'); sys.stderr.flush()\n"
        "for _ in range(96): out.write(block)\n"
    )
    sink = SlowSink()
    runner = ProcessLauncher(py(code), sink, echo=False)
    assert runner.run().exit_code == 0
    assert runner.pumps[0].held_peak > 2 * launcher.READ_BYTES  # the flood was held
    middle = next(t for s, d, _, t in sink.chunks if s == "stderr" and b"middle" in d)
    before = next(t for s, d, _, t in sink.chunks if s == "stdout" and b"before" in d)
    # Read within a few ms of each other (two pipes, two threads), not a second apart.
    assert before < middle + launcher.DELIVER_SECONDS * 1e9


def test_lines_of_one_record_keep_the_time_of_the_read_that_brought_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Three writes are read separately and handed on as one record (within
    # DELIVER_SECONDS, long here): each line keeps its own read's time, so a stderr
    # line written between them sorts between them. The child writes the next line
    # only once the pump has read the last one (its pipe is empty) and 0.1 s later,
    # so the order of the reads is the order of the writes however loaded the machine.
    monkeypatch.setattr(launcher, "DELIVER_SECONDS", 2.0)
    code = (
        "import fcntl, struct, sys, termios, time\n"
        "def read_by_the_pump(stream):\n"
        "    while struct.unpack('i', fcntl.ioctl(stream.fileno(), termios.FIONREAD,\n"
        "                                         b'\\0' * 4))[0]:\n"
        "        time.sleep(0.001)\n"
        "    time.sleep(0.1)\n"
        "for i in range(3):\n"
        "    print(f'tick {i}', flush=True); read_by_the_pump(sys.stdout)\n"
        "    print(f'err {i}', file=sys.stderr, flush=True); read_by_the_pump(sys.stderr)\n"
    )
    sink = ListSink()
    assert ProcessLauncher(py(code), sink, echo=False).run().exit_code == 0
    stamped: list[tuple[int, bytes]] = []
    for (_stream, data, _, t), times in zip(sink.chunks, sink.line_times, strict=True):
        lines = data.splitlines()
        per_line = list(times) if times is not None else [t] * len(lines)
        assert len(per_line) == len(lines)
        stamped += zip(per_line, lines, strict=True)
    assert any(times is not None for times in sink.line_times), "never one record of reads"
    order = [line for _, line in sorted(stamped, key=lambda item: item[0])]
    assert order == [b"tick 0", b"err 0", b"tick 1", b"err 1", b"tick 2", b"err 2"]
