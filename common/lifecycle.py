"""The lifecycle every long-lived part (agent stage, collector server) follows.

Contract:
- ``start()`` returns quickly; work happens in tasks or threads it starts.
- ``shutdown(timeout)`` is idempotent, safe before ``start()``, flushes what
  the part holds within ``timeout`` seconds, and never raises for a part
  that was never started.
"""

from __future__ import annotations

import abc


class Component(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def shutdown(self, timeout: float) -> None: ...
