"""Console bytes to log lines: what `mltrail run` and `capture_output` record.

``LineAssembler.feed(data)`` takes raw bytes as a pipe delivers them and
returns the complete lines (each ending in ``\\n``) ready for a LogChunk;
the bytes after the last newline wait for more. Per chunk the work is a few
C-level scans (``rfind``, ``in``); only lines holding a carriage return are
looked at one by one.

- ``\\r\\n`` ends a line like ``\\n``.
- A line rewritten with ``\\r`` (a tqdm progress bar) is recorded as its last
  state, and a pending bar keeps only its latest state, so thousands of
  updates cost neither memory nor records.
- A line longer than ``max_line`` is split with the shared marker
  (``common.lines``), never dropped.
- ``finish()`` returns the partial last line (no newline), kept as it is.
- Bytes are never decoded here; the collector decodes with replacement.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from mltrail.common.lines import LINE_SPLIT_MARKER, MAX_LINE_BYTES, split_long_lines

_CUT = LINE_SPLIT_MARKER + b"\n"

# emit(stream, lines, partial_tail, time_unix_nano)
Emit = Callable[[str, bytes, bool, int], None]


class TimedEmit(Protocol):
    """``Emit`` that may also get one time per line (lines read at different times)."""

    def __call__(self, stream: str, lines: bytes, partial: bool, time_ns: int,
                 line_times: Sequence[int] | None = None, /) -> None: ...


def _last_state(line: bytes) -> bytes:
    """The text a terminal would show last for a line rewritten with ``\\r``."""
    line = line.rstrip(b"\r")
    cut = line.rfind(b"\r")
    return line[cut + 1 :] if cut >= 0 else line


def fold_carriage_returns(lines: bytes) -> bytes:
    """Apply ``_last_state`` to every line of ``lines`` that holds a ``\\r``."""
    if b"\r" not in lines:
        return lines
    return b"\n".join(_last_state(x) if b"\r" in x else x for x in lines.split(b"\n"))


class LineAssembler:
    """Splits a byte stream into lines; one instance per stream (stdout, stderr)."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        if max_line <= 0:
            raise ValueError(f"max_line must be positive, got {max_line}")
        self.max_line = max_line
        self.cuts = 0  # how many times a line was cut at max_line
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """Complete lines from ``data`` plus what was pending (may be empty)."""
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = self._squash(self._pending + data)
            return self._emit_overlong()
        # One copy of the new bytes (a pipe read of up to 1 MiB), not two.
        lines = self._pending + data[: cut + 1] if self._pending else data[: cut + 1]
        self._pending = self._squash(data[cut + 1 :])
        lines = fold_carriage_returns(lines)
        if len(lines) > self.max_line:
            lines, splits = split_long_lines(lines, self.max_line)
            self.cuts += sum(splits.values()) - len(splits)
        return lines + self._emit_overlong()

    def finish(self) -> bytes:
        """The partial last line, without a newline (b"" when there is none)."""
        tail, self._pending = self._pending, b""
        return _last_state(tail) if b"\r" in tail else tail

    @property
    def pending(self) -> int:
        return len(self._pending)

    @staticmethod
    def _squash(pending: bytes) -> bytes:
        # Keep only the latest state of a bar being redrawn: everything before
        # the last "\r" that has text after it is already overwritten.
        if b"\r" not in pending:
            return pending
        cut = pending.rfind(b"\r", 0, len(pending) - 1)
        return pending[cut + 1 :] if cut >= 0 else pending

    def _emit_overlong(self) -> bytes:
        """Pieces of a pending line that already exceeds ``max_line``; the last
        piece stays pending, since the line may go on."""
        if len(self._pending) <= self.max_line:
            return b""
        split, _ = split_long_lines(self._pending, self.max_line)
        head, sep, self._pending = split.rpartition(_CUT)
        self.cuts += head.count(_CUT) + 1
        return head + sep


class _TeeStream:
    """A text stream that writes through to ``original`` and records what passes."""

    def __init__(self, original: Any, stream: str, emit: Emit) -> None:
        self._original = original
        self._stream = stream
        self._emit = emit
        self._assembler = LineAssembler()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        # One lock around writing, splitting and emitting: threads that print at
        # once are recorded in the order the terminal shows (emit only enqueues).
        with self._lock:
            written = self._original.write(text)
            lines = self._assembler.feed(text.encode("utf-8", "replace"))
            if lines:
                self._emit(self._stream, lines, False, time.time_ns())
        return int(written) if written is not None else len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def finish(self) -> None:
        with self._lock:
            rest = self._assembler.finish()
            if rest:
                self._emit(self._stream, rest, True, time.time_ns())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)  # flush, fileno, isatty, encoding, ...


class ConsoleCapture:
    """Records what this process prints while a run is active (``capture_output``).

    ``start()`` wraps ``sys.stdout`` and ``sys.stderr``; the text still reaches
    them unchanged. ``stop()`` records a partial last line and puts the
    original streams back (unless someone replaced them since).
    """

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._tees: dict[str, _TeeStream] = {}

    def start(self) -> ConsoleCapture:
        if not self._tees:
            self._tees = {"stdout": _TeeStream(sys.stdout, "stdout", self._emit),
                          "stderr": _TeeStream(sys.stderr, "stderr", self._emit)}
            sys.stdout = self._tees["stdout"]
            sys.stderr = self._tees["stderr"]
        return self

    def stop(self) -> None:
        for name, tee in self._tees.items():
            tee.finish()
            if getattr(sys, name) is tee:
                setattr(sys, name, tee._original)
        self._tees = {}
