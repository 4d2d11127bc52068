"""Liveness and readiness of one process, as orchestrators ask for them.

- **Liveness**: the event loop still turns. ``run()`` beats once a second;
  a beat older than ``stale_after`` seconds means the process is wedged and
  a restart would help. Nothing else makes a process "not alive": a
  collector whose store is down, or an agent whose collector is down, is
  alive (restarting it would not bring the store back).
- **Readiness**: the process can do its job now. ``run()`` calls the
  component's ``probe()`` every ``interval`` seconds and keeps the answer;
  ``stopping()`` makes it not ready at once (SIGTERM: take no new work).

Both are served as HTTP (``/healthz`` liveness, ``/readyz`` readiness, via
``common.http.HttpEndpoint``) and as the standard ``grpc.health.v1`` service:
service ``""`` and ``"readiness"`` answer readiness, ``"liveness"`` answers
liveness (Kubernetes ``grpc`` probes take the service name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2

log = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS = "readiness"
Probe = Callable[[], Awaitable[tuple[bool, str]]]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """One process's liveness and readiness; ``run()`` keeps them current."""

    def __init__(self, probe: Probe, interval: float = 2.0, stale_after: float = 30.0) -> None:
        self._probe = probe
        self.interval = interval
        self.stale_after = stale_after
        self.servicer = health_aio.HealthServicer()
        self._beat = time.monotonic()
        self._ready: tuple[bool, str] = (False, "starting")
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def live(self) -> tuple[bool, str]:
        """Safe from any thread (the HTTP endpoint asks from its own)."""
        age = time.monotonic() - self._beat
        if age > self.stale_after:
            return False, f"event loop has not run for {age:.0f}s"
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        """Safe from any thread."""
        alive, why = self.live()
        if not alive:
            return False, why
        return self._ready

    async def start(self) -> None:
        """Probe once (so the first answer is real), then keep probing in a task."""
        await self._update()
        self._task = asyncio.create_task(self._run())

    async def stopping(self) -> None:
        """Not ready from now on (shutdown has begun); still alive."""
        self._stopping = True
        self._ready = (False, "shutting down")
        await self._publish()

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        next_probe = time.monotonic() + self.interval
        while True:
            await asyncio.sleep(min(1.0, self.interval))
            self._beat = time.monotonic()
            if self._beat >= next_probe:
                await self._update()
                next_probe = self._beat + self.interval

    async def _update(self) -> None:
        self._beat = time.monotonic()
        try:
            answer = await self._probe()
        except Exception as exc:  # a probe that fails is an answer: not ready
            answer = (False, f"readiness check failed: {exc}")
        if self._stopping:
            answer = (False, "shutting down")
        if answer[0] and not self._ready[0]:
            log.info("ready")
        elif not answer[0] and answer != self._ready:
            log.warning("not ready: %s", answer[1])
        self._ready = answer
        await self._publish()

    async def _publish(self) -> None:
        ready = _SERVING if self._ready[0] else _NOT_SERVING
        await self.servicer.set("", ready)
        await self.servicer.set(READINESS, ready)
        await self.servicer.set(LIVENESS, _SERVING)
