"""The last log lines of this process, kept in memory for support bundles.

``install()`` adds one handler to the root logger (idempotent); ``recent()``
returns the formatted lines, oldest first. Bundles redact them.
"""

from __future__ import annotations

import collections
import logging
import threading

MAX_LINES = 1000


class RecentLines(logging.Handler):
    def __init__(self, capacity: int = MAX_LINES) -> None:
        super().__init__()
        self._lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s",
                                            "%Y-%m-%dT%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a bad format argument must not break logging
            line = str(record.msg)
        with self._guard:
            self._lines.append(line)

    def lines(self) -> list[str]:
        with self._guard:
            return list(self._lines)


RECENT = RecentLines()


def install() -> None:
    root = logging.getLogger()
    if RECENT not in root.handlers:
        root.addHandler(RECENT)


def recent() -> list[str]:
    return RECENT.lines()
