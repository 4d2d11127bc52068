"""common.health: liveness follows the event loop, readiness follows the probe."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from grpc_health.v1 import health_pb2

from mltrail.common.health import LIVENESS, Health


async def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_wedged_loop_is_not_alive_and_a_failing_probe_is_not_ready() -> None:
    answers = [(True, "ready")]
    calls = [0]

    async def probe() -> tuple[bool, str]:
        calls[0] += 1
        if isinstance(answers[-1], Exception):
            raise answers[-1]
        return answers[-1]

    health = Health(probe, interval=0.05, stale_after=0.3)
    await health.start()
    assert health.live() == (True, "alive") and health.ready() == (True, "ready")

    seen: list[tuple[bool, str]] = []
    watcher = threading.Thread(target=lambda: (time.sleep(0.6), seen.append(health.live())))
    watcher.start()
    time.sleep(1.0)  # the loop is blocked: what a wedged process looks like from outside
    watcher.join()
    assert seen and seen[0][0] is False and "has not run" in seen[0][1]
    assert health.ready()[0] is False

    answers.append(RuntimeError("disk on fire"))  # type: ignore[arg-type]
    await until(lambda: "disk on fire" in health.ready()[1])
    assert health.live()[0] is True
    assert health.ready() == (False, "readiness check failed: disk on fire")
    reply = await health.servicer.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    reply = await health.servicer.Check(health_pb2.HealthCheckRequest(service=LIVENESS), None)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    answers.append((True, "ready"))
    await until(lambda: health.ready()[0])
    assert health.ready() == (True, "ready")
    await health.stopping()
    assert health.ready() == (False, "shutting down")
    probed = calls[0]
    answers.append((True, "ready"))
    await until(lambda: calls[0] > probed + 2)  # later probes do not make it ready again
    assert health.ready() == (False, "shutting down")
    await health.shutdown()
