"""Progress of long work on a terminal: done so far, rate and time left.

Shown on stderr, redrawn in place at most ten times a second, only when
stderr is a terminal (``MLTRAIL_PROGRESS=1`` forces it, ``0`` hides it);
piped or redirected, nothing is written, so scripts and logs stay clean.
``done()`` leaves one final line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from mltrail.cli import table

REDRAW_SECONDS = 0.1


def wanted(stream: TextIO) -> bool:
    forced = os.environ.get("MLTRAIL_PROGRESS")
    if forced in ("0", "1"):
        return forced == "1"
    return stream.isatty()


class Progress:
    """``Progress("downloading model.pkl", total=size, unit="bytes")``; ``advance(n)``."""

    def __init__(self, what: str, total: int | None = None, unit: str = "bytes",
                 stream: TextIO | None = None) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.shown = wanted(self.stream)
        self.count = 0
        self._start = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self.count += n
        if not self.shown:
            return
        now = time.monotonic()
        if now - self._drawn >= REDRAW_SECONDS:
            self._drawn = now
            self._draw(now, end="")

    def done(self) -> None:
        if self.shown:
            self._draw(time.monotonic(), end="\n")

    def _draw(self, now: float, end: str) -> None:
        elapsed = max(now - self._start, 1e-6)
        rate = self.count / elapsed
        text = f"{self.what}: {self._amount(self.count)}"
        if self.total:
            text += f" of {self._amount(self.total)} ({100 * self.count / self.total:.0f} %)"
        text += f", {self._amount(int(rate))}/s"
        if self.total and rate > 0 and self.count < self.total and not end:
            text += f", {table.human_duration((self.total - self.count) / rate)} left"
        elif end:
            text += f", {table.human_duration(elapsed)}"
        self.stream.write(f"\r\x1b[K{text}{end}")
        self.stream.flush()

    def _amount(self, n: int) -> str:
        if self.unit == "bytes":
            return table.human_size(n)
        return f"{n:,} {self.unit}"
