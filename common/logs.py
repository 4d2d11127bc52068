"""Logging setup shared by the agent and the collector.

Repeated error lines are rate-limited (OpenTelemetry's DuplicateFilter):
the same message from the same place is logged at most once per interval,
and the next line says how many were suppressed.
"""

from __future__ import annotations

import logging
import sys
import time

from mltrail.common import log_ring


class DuplicateFilter(logging.Filter):
    """Drops a record identical to one logged less than ``interval`` seconds ago."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.pathname, record.lineno, record.getMessage())
        now = time.monotonic()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} (repeated {seen[1]} more times)"
        self._last[key] = (now, 0)
        if len(self._last) > 1000:
            self._last.clear()
        return True


def setup_logging(level: str = "INFO", name: str = "mltrail") -> None:
    """Plain lines on stderr, one per event, with the component's name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    handler.addFilter(DuplicateFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    log_ring.install()  # the last lines, for support bundles
