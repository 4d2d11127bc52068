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

import codecs
import io
import sys
import threading
import time
from collections.abc import Callable, Sequence
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


class _TeeBuffer:
    """The binary layer under a capturing ``sys.stdout``/``sys.stderr``.

    The text stream a script prints to is a C ``io.TextIOWrapper`` over this
    object, so ``print`` costs what it costs on any file: the wrapper gathers
    text and hands it here in pieces of up to ``CHUNK`` bytes (each line on a
    line-buffered terminal). Each piece goes on to the original stream as
    text and is split into lines for the run under one lock, so threads that
    print at once are recorded in the order the terminal shows.
    """

    def __init__(self, original: Any, stream: str, emit: Emit) -> None:
        self.original = original
        self._stream = stream
        self._emit = emit
        self._assembler = LineAssembler()
        self._lock = threading.Lock()
        # A UTF-8 text file takes our bytes as they are (the same bytes it would have
        # encoded); anything else (a notebook's stream) gets text.
        self._raw = None
        if (isinstance(original, io.TextIOWrapper)
                and codecs.lookup(original.encoding).name == "utf-8"):
            self._raw = original.buffer

    def write(self, data: bytes | bytearray | memoryview) -> int:
        piece = bytes(data)
        with self._lock:
            if self._raw is not None:
                self.original.flush()  # what others wrote to it first, in order
                self._raw.write(piece)
            else:
                self.original.write(piece.decode("utf-8", "replace"))
            lines = self._assembler.feed(piece)
            if lines:
                self._emit(self._stream, lines, False, time.time_ns())
        return len(piece)

    def flush(self) -> None:
        self.original.flush()

    def finish(self) -> None:
        with self._lock:
            rest = self._assembler.finish()
            if rest:
                self._emit(self._stream, rest, True, time.time_ns())

    # What io.TextIOWrapper asks of its buffer.
    closed = False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return bool(getattr(self.original, "isatty", lambda: False)())

    def fileno(self) -> int:
        return int(self.original.fileno())

    def close(self) -> None:
        self.flush()


CHUNK = 64 * 1024  # text gathered by the wrapper before it reaches _TeeBuffer


def _tee_stream(original: Any, stream: str, emit: Emit) -> io.TextIOWrapper[Any]:
    """A text stream writing through to ``original`` and recording what passes.

    Buffered as ``original`` is: line by line when it is line-buffered, a
    terminal or not a plain file (a notebook's stream), else in pieces."""
    buffer = _TeeBuffer(original, stream, emit)
    line_buffered = (not isinstance(original, io.TextIOWrapper) or original.line_buffering
                     or buffer.isatty())
    errors = getattr(original, "errors", None) or "strict"
    wrapper = io.TextIOWrapper(buffer, encoding="utf-8",  # type: ignore[type-var]
                               errors=errors, line_buffering=line_buffered,
                               write_through=bool(getattr(original, "write_through", False)))
    wrapper._CHUNK_SIZE = CHUNK  # type: ignore[attr-defined]
    return wrapper


class ConsoleCapture:
    """Records what this process prints while a run is active (``capture_output``).

    ``start()`` replaces ``sys.stdout`` and ``sys.stderr`` with streams that
    write through to them unchanged. ``stop()`` flushes, records a partial last
    line and puts the original streams back (unless someone replaced them since).
    """

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._tees: dict[str, io.TextIOWrapper[Any]] = {}

    def start(self) -> ConsoleCapture:
        if not self._tees:
            self._tees = {name: _tee_stream(getattr(sys, name), name, self._emit)
                          for name in ("stdout", "stderr")}
            sys.stdout = self._tees["stdout"]
            sys.stderr = self._tees["stderr"]
        return self

    def stop(self) -> None:
        for name, tee in self._tees.items():
            buffer: _TeeBuffer = tee.buffer
            tee.flush()
            buffer.finish()
            if getattr(sys, name) is tee:
                setattr(sys, name, buffer.original)
        self._tees = {}
