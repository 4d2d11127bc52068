"""ProcessLauncher with real child processes and an in-memory sink."""

from __future__ import annotations

import signal
import sys
import threading
import time

from mltrail.launcher import COALESCE_SECONDS, ProcessLauncher, coalesce_pause


class ListSink:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes, bool, int]] = []
        self.lock = threading.Lock()

    def __call__(self, stream: str, data: bytes, partial: bool, t: int) -> None:
        with self.lock:
            self.chunks.append((stream, data, partial, t))

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
    threading.Timer(1.0, launcher.stop, args=(signal.SIGTERM,)).start()
    started = time.monotonic()
    result = launcher.run()
    assert result.canceled and result.killed
    assert result.exit_code == 128 + signal.SIGKILL
    assert time.monotonic() - started < 10
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
    started = time.monotonic()
    result = launcher.run()
    assert result.exit_code == 0
    assert time.monotonic() - started < 8, "the pump kept reading a chatty straggler"
    assert b"main done\n" in sink.stream("stdout")
    # The straggler gets EPIPE once the pipe is closed and ends by itself.


def test_coalesce_pause_never_outlasts_half_the_pipe() -> None:
    pipe = 1 << 20
    assert coalesce_pause(0, 0.001, pipe) == 0.0            # end of file
    assert coalesce_pause(pipe, 0.001, pipe) == 0.0         # a full read: no pause
    assert coalesce_pause(8192, 1.0, pipe) == COALESCE_SECONDS  # a trickle
    # 256 KiB in 0.25 ms (1 GB/s): half the pipe fills in 0.5 ms, so pause less.
    pause = coalesce_pause(256 * 1024, 0.00025, pipe)
    assert 0 < pause <= 0.0005
