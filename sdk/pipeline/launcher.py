"""Run a command and record its console: the process side of `mltrail run`.

``ProcessLauncher`` starts the command in its own process group with stdout
and stderr on pipes, and one pump thread per pipe:

    child --pipe--> pump: os.read(up to 1 MiB) --> echo to our own fd, unchanged
                                               --> LineAssembler --> sink(stream, lines, ...)

The sink gets whole lines (many per call) as raw bytes; it must not block
for long (the SDK sink only enqueues). While the command floods its output
(over BURST_RATE), lines are held here and handed on when it slows down, so
that recording does not slow it. Children of the command inherit the pipes,
so their output lands in the same streams. SIGINT and SIGTERM are passed on
to the whole process group; a group still alive after ``grace`` seconds is
killed. The launch counts as canceled once a stop signal came.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import FrameType

from mltrail.common.lines import MAX_LINE_BYTES
from mltrail.pipeline.console import LineAssembler
from mltrail.pipeline.console import TimedEmit as Sink

READ_BYTES = 1024 * 1024
# After a read that found the pipe far from full, wait before the next so that
# more arrives at once: a script printing 8 KiB at a time would otherwise cost
# one read, echo and split per write (~100 us of Python each). See
# coalesce_pause: a fast writer is never held up by the wait. The terminal
# sees output at most this much later.
COALESCE_SECONDS = 0.005
# Lines go to the sink in batches: one record per 8 KiB write would cost the
# pipeline more CPU than the script spends printing. The terminal echo is not
# delayed; the record is, by at most DELIVER_SECONDS.
DELIVER_BYTES = 256 * 1024
DELIVER_SECONDS = 0.05
# A command printing faster than BURST_RATE (a flood, not a training log) is
# not made to wait for the recording: its lines are held here, up to
# BURST_HOLD_BYTES per stream, and handed on once it slows down (measured
# over BURST_WINDOW) or the limit is reached. Encoding and sending them during
# the flood would take the CPU and Python's interpreter lock the pump and the
# command need, and the command would wait on a full pipe. The terminal echo
# is never held.
BURST_RATE = 32 * 1024 * 1024  # bytes per second
# Short, so a flood is seen within its first few MiB (a 10 ms window let 8 MiB
# through to the sender while the command wrote, a third of the slowdown
# left); a flood over is one silent this long.
BURST_WINDOW = 0.002
BURST_HOLD_BYTES = 128 * 1024 * 1024
PIPE_BYTES = 1024 * 1024  # room for bursts, so a busy moment here does not stall the command
STDERR_TAIL_LINES = 20
# After the command exits, a pipe still held open by a straggler (a daemon it
# started) is read until it stays silent this long, and never for longer than
# AFTER_EXIT_SECONDS, so a chatty leftover process cannot keep the run open.
LINGER_SECONDS = 2.0
AFTER_EXIT_SECONDS = 10.0
# A command still running this long after a stop signal is told about (it may ignore it).
STILL_RUNNING_SECONDS = 1.0


@dataclass
class LaunchResult:
    returncode: int              # as subprocess reports: negative for a signal
    canceled: bool               # a stop signal was passed on
    killed: bool                 # the group outlived the grace period
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """What a shell reports: 128 + N for death by signal N."""
        return 128 - self.returncode if self.returncode < 0 else self.returncode


def coalesce_pause(read: int, previous: int, elapsed: float, pipe_bytes: int) -> float:
    """How long to let a pipe fill after a read of ``read`` bytes that came
    ``elapsed`` seconds after a read of ``previous`` bytes: at most
    ``COALESCE_SECONDS``, and never longer than the pipe takes to fill half way
    at the rate just seen, so a writer at full speed does not wait for us.
    None while the writer floods: after a read that found the pipe half full,
    a small read only means the writer had just been woken. (A fixed pause
    after every small read held a block-buffered script writing 800 MB/s up
    for two thirds of its time.)"""
    half = pipe_bytes // 2
    if not 0 < read < half or previous >= half:
        return 0.0
    rate = read / max(elapsed, 1e-6)  # bytes per second
    return min(COALESCE_SECONDS, half / rate)


def flood_pause(read: int, rate: float, pipe_bytes: int) -> float:
    """The pause after a small read while the writer floods at ``rate`` bytes
    per second (measured over BURST_WINDOW, steadier than one read): long
    enough for a quarter of the pipe to fill, so the pump does not spin on
    tiny reads, short enough that the pipe never fills."""
    quarter = pipe_bytes // 4
    if not 0 < read < quarter or rate <= 0:
        return 0.0
    return min(COALESCE_SECONDS, quarter / rate)


def pipe_size(fd: int) -> int:
    try:
        return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
    except OSError:  # not a pipe, or not Linux
        return 64 * 1024


class _Pump(threading.Thread):
    """Copies one pipe to our own fd and hands whole lines to the sink."""

    def __init__(self, stream: str, fd: int, echo_fd: int | None, sink: Sink,
                 max_line: int, exited: threading.Event, keep_tail: bool,
                 hold_bytes: int | None = None,
                 on_held: Callable[[int], None] | None = None) -> None:
        super().__init__(name=f"mltrail-pump-{stream}", daemon=True)
        self.hold_bytes = BURST_HOLD_BYTES if hold_bytes is None else hold_bytes
        self.on_held = on_held  # told each change of the bytes held here (the memory bound)
        self.stream, self.fd, self.echo_fd, self.sink = stream, fd, echo_fd, sink
        self.assembler = LineAssembler(max_line)
        self.exited = exited
        self.read_until = float("inf")  # set when the command exits
        self.tail: deque[bytes] | None = deque(maxlen=STDERR_TAIL_LINES) if keep_tail else None
        self.bytes_read = 0
        self.held_peak = 0  # the most bytes of lines held back at once (a flood's size, capped)
        self.cut_short = False  # stopped reading after exit while a straggler still wrote
        # Complete lines not yet given to the sink, with the time they were read:
        # `mltrail logs` merges stdout and stderr by it, and a flood is held for seconds.
        self._held: list[tuple[int, bytes]] = []
        self._held_bytes = 0
        self._held_since = 0.0
        self._pipe_bytes = pipe_size(fd)
        # Reads land in this buffer first: its pages are already mapped, so the
        # kernel copies out of the pipe quickly. Linux holds the pipe's lock
        # during the copy, and the command cannot write meanwhile; a fresh
        # buffer per read (page faults while copying) held a flooding command
        # up by a third. Copying on into a new bytes object is cheaper.
        self._buffer = memoryview(bytearray(READ_BYTES))
        self._last_read = time.monotonic()
        self._last_size = 0
        self._bursting = False
        self._rate = 0.0  # bytes per second over the last complete window
        self._window_start = self._last_read
        self._window_bytes = 0

    def run(self) -> None:
        try:
            while (data := self._read()) is not None:
                if not data:
                    self._deliver_held()  # the delivery deadline passed
                    continue
                self.bytes_read += len(data)
                self._echo(data)
                lines = self.assembler.feed(data)
                if lines:
                    self._hold(lines, time.time_ns())
            self._deliver_held()
            rest = self.assembler.finish()
            if rest:
                self._deliver(rest, partial=True, time_ns=time.time_ns())
        finally:
            os.close(self.fd)

    def _read(self) -> bytes | None:
        """The next bytes; b"" when held lines are due; None at end of file (or a
        silent straggler)."""
        quiet_since: float | None = None
        while True:
            wait = 0.25
            if self._held:
                wait = self._held_since + DELIVER_SECONDS - time.monotonic()
                if wait <= 0:
                    if not self._bursting:
                        return b""
                    wait = BURST_WINDOW  # a flood that stops this long is over
            if self.exited.is_set() and time.monotonic() > self.read_until:
                self.cut_short = True
                return None
            ready, _, _ = select.select([self.fd], [], [], wait)
            if ready:
                return self._take() or None
            self._bursting = False  # silent for a while: no flood
            if not self.exited.is_set() or self._held:
                continue
            now = time.monotonic()
            quiet_since = quiet_since or now
            if now - quiet_since > LINGER_SECONDS:
                return None
            if now > self.read_until:
                self.cut_short = True
                return None

    def _take(self) -> bytes:
        """Read what the pipe holds, then let it fill (a pause sized to the writer)."""
        data = bytes(self._buffer[: os.readv(self.fd, [self._buffer])])
        now = time.monotonic()
        self._measure_rate(len(data), now)
        if self._bursting:
            pause = flood_pause(len(data), self._rate, self._pipe_bytes)
        else:
            pause = coalesce_pause(len(data), self._last_size, now - self._last_read,
                                   self._pipe_bytes)
        self._last_read, self._last_size = now, len(data)
        if pause:
            time.sleep(pause)
        return data

    def _measure_rate(self, read: int, now: float) -> None:
        """Whether the command floods the pipe (over BURST_RATE in the last window)."""
        self._window_bytes += read
        elapsed = now - self._window_start
        if elapsed >= BURST_WINDOW:
            self._rate = self._window_bytes / elapsed
            self._bursting = self._rate > BURST_RATE
            self._window_start, self._window_bytes = now, 0

    def _hold(self, lines: bytes, time_ns: int) -> None:
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append((time_ns, lines))
        self._held_bytes += len(lines)
        if self.on_held is not None:
            self.on_held(len(lines))
        self.held_peak = max(self.held_peak, self._held_bytes)
        if self._held_bytes >= (self.hold_bytes if self._bursting else DELIVER_BYTES):
            self._deliver_held()

    def _deliver_held(self) -> None:
        """Held lines to the sink in records of about DELIVER_BYTES or one read's
        lines (up to 1 MiB), however much a flood left here; each record has the
        time its first lines were read."""
        group: list[tuple[int, bytes]] = []
        size = 0
        for time_ns, lines in self._held:
            group.append((time_ns, lines))
            size += len(lines)
            if size >= DELIVER_BYTES:
                self._deliver_group(group)
                self._delivered(size)
                group, size = [], 0
        if group:
            self._deliver_group(group)
            self._delivered(size)
        self._held, self._held_bytes = [], 0

    def _delivered(self, size: int) -> None:
        if self.on_held is not None:
            self.on_held(-size)

    def _deliver_group(self, group: list[tuple[int, bytes]]) -> None:
        """One record of several reads: each line keeps the time of the read that
        brought it (stdout and stderr are merged by it), as one time per read."""
        first_ns = group[0][0]
        data = b"".join(lines for _, lines in group)
        if all(t == first_ns for t, _ in group):
            self._deliver(data, partial=False, time_ns=first_ns)
            return
        times = array("q")
        for time_ns, lines in group:
            times.extend(array("q", (time_ns,)) * lines.count(b"\n"))
        self._deliver(data, partial=False, time_ns=first_ns, line_times=times)

    def _echo(self, data: bytes) -> None:
        if self.echo_fd is None:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.echo_fd, view):]
        except OSError:
            self.echo_fd = None  # our terminal went away; keep recording

    def _deliver(self, lines: bytes, partial: bool, time_ns: int,
                 line_times: array[int] | None = None) -> None:
        if self.tail is not None:
            self.tail.extend(lines.splitlines()[-STDERR_TAIL_LINES:])
        if line_times is None:
            self.sink(self.stream, lines, partial, time_ns)
        else:
            self.sink(self.stream, lines, partial, time_ns, line_times)


class ProcessLauncher:
    """Starts ``argv`` with its console captured; ``run()`` waits for it."""

    def __init__(self, argv: Sequence[str], sink: Sink, *, cwd: str | None = None,
                 env: dict[str, str] | None = None, echo: bool = True,
                 grace: float = 10.0, max_line: int = MAX_LINE_BYTES,
                 after_exit: float = AFTER_EXIT_SECONDS, notices: bool = True,
                 hold_bytes: int | None = None,
                 on_held: Callable[[int], None] | None = None) -> None:
        if not argv:
            raise ValueError("no command given: use `mltrail run -- COMMAND [ARGS...]`")
        self.argv, self.sink, self.cwd, self.env = list(argv), sink, cwd, env
        self.echo, self.grace, self.max_line = echo, grace, max_line
        self.after_exit = after_exit
        self.notices = notices  # say on stderr that a stopped command is about to be killed
        # a flood's lines held per stream (default BURST_HOLD_BYTES), and who counts them
        self.hold_bytes, self.on_held = hold_bytes, on_held
        self.canceled = False
        self.killed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self.pumps: list[_Pump] = []  # stdout's and stderr's, once run() started them

    def run(self) -> LaunchResult:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=None, stdout=out_w,
                stderr=err_w, start_new_session=True,
            )
        except OSError:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        os.close(out_w)
        os.close(err_w)
        for fd in (out_r, err_r):
            with contextlib.suppress(OSError):  # Linux only; a smaller pipe still works
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        exited = threading.Event()
        self.pumps = pumps = [
            _Pump("stdout", out_r, 1 if self.echo else None, self.sink, self.max_line, exited,
                  keep_tail=False, hold_bytes=self.hold_bytes, on_held=self.on_held),
            _Pump("stderr", err_r, 2 if self.echo else None, self.sink, self.max_line, exited,
                  keep_tail=True, hold_bytes=self.hold_bytes, on_held=self.on_held),
        ]
        for pump in pumps:
            pump.start()
        with self._forward_stop_signals():
            returncode = self._proc.wait()
        for pump in pumps:
            pump.read_until = time.monotonic() + self.after_exit
        exited.set()
        for pump in pumps:
            pump.join()
            if pump.cut_short:
                print(f"mltrail: stopped recording {pump.stream} {self.after_exit:g} s after "
                      "the command exited: a process it started still writes to it",
                      file=sys.stderr)
        tail = [line.decode("utf-8", "replace") for line in pumps[1].tail or ()]
        return LaunchResult(returncode, self.canceled, self.killed, tail)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Pass a stop signal to the command's group; kill it after the grace period."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        first = not self.canceled
        self.canceled = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        if not first:
            return  # a second Ctrl-C: the kill is already scheduled
        for delay, action in ((min(STILL_RUNNING_SECONDS, self.grace / 2),
                               partial(self._tell_waiting, signum)), (self.grace, self._kill)):
            timer = threading.Timer(delay, action)
            timer.daemon = True
            timer.start()

    def _tell_waiting(self, signum: int) -> None:
        """The command did not exit on the signal (it may ignore it): say what happens next."""
        proc = self._proc
        if proc is not None and proc.poll() is None and self.notices:
            left = self.grace - min(STILL_RUNNING_SECONDS, self.grace / 2)
            print(f"mltrail: the command is still running after {signal.Signals(signum).name}; "
                  f"it is killed in {left:.0f} s (--grace {self.grace:g})",
                  file=sys.stderr, flush=True)

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    @contextlib.contextmanager
    def _forward_stop_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread
            return

        def forward(signum: int, _frame: FrameType | None) -> None:
            self.stop(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
