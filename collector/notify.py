"""In-process wake-ups from ingest to TailLogs followers (event loop only).

Each run has a version that ingest bumps after a commit that added lines to
it or ended it. A follower notes the version before it reads, and ``wait``
returns at once if the version moved since, so a commit between the read and
the wait is never missed; otherwise it sleeps until a bump or the timeout
(the fallback for lines written by another collector replica).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable


class LogNotifier:
    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._changed = threading.Condition()  # for followers on other threads (the web UI)

    def version(self, run_id: str) -> int:
        return self._versions.get(run_id, 0)

    def notify(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            self._versions[run_id] = self._versions.get(run_id, 0) + 1
            for event in self._waiters.get(run_id, ()):
                event.set()
        with self._changed:
            self._changed.notify_all()

    def wake_all(self) -> None:
        """At shutdown: every follower rechecks now."""
        self.notify(list(self._waiters))

    async def wait(self, run_id: str, seen_version: int, timeout: float) -> None:
        if self.version(run_id) != seen_version:
            return
        event = asyncio.Event()
        waiters = self._waiters.setdefault(run_id, set())
        waiters.add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(run_id, None)

    def wait_blocking(self, run_id: str, seen_version: int, timeout: float) -> None:
        """``wait`` for a thread that is not the event loop's (an HTTP follower)."""
        with self._changed:
            self._changed.wait_for(lambda: self.version(run_id) != seen_version, timeout)
