"""The retry policy: what it retries, how long it waits, that it never gives up."""

from __future__ import annotations

import pytest

from mltrail.agent.retry import RetryPolicy
from mltrail.common.errors import PermanentError, RetryableError


class Flaky:
    """Fails ``failures`` times with ``error``, then returns "ok"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_retries_transient_errors_without_giving_up() -> None:
    sleep = RecordedSleep()
    hooks: list[float] = []
    policy = RetryPolicy(initial=0.1, maximum=5.0, sleep=sleep,
                         on_retry=lambda exc, delay: hooks.append(delay))
    flaky = Flaky(60, RetryableError("UNAVAILABLE: down"))
    assert await policy.call(flaky) == "ok"
    assert flaky.calls == 61
    assert len(sleep.delays) == 60 == len(hooks)
    assert all(0 <= d <= 5.0 for d in sleep.delays)  # full jitter, capped
    assert max(sleep.delays) > 0.5  # and it does grow


async def test_waits_at_least_the_servers_retry_after() -> None:
    sleep = RecordedSleep()
    policy = RetryPolicy(initial=0.001, maximum=0.01, sleep=sleep)
    flaky = Flaky(3, RetryableError("busy", retry_after=2.5))
    assert await policy.call(flaky) == "ok"
    assert sleep.delays == [2.5, 2.5, 2.5]


async def test_permanent_errors_are_not_retried() -> None:
    sleep = RecordedSleep()
    policy = RetryPolicy(sleep=sleep)
    flaky = Flaky(1, PermanentError("INVALID_ARGUMENT: gap"))
    with pytest.raises(PermanentError, match="gap"):
        await policy.call(flaky)
    assert flaky.calls == 1 and sleep.delays == []


async def test_max_attempts_stops_and_reraises_the_last_error() -> None:
    policy = RetryPolicy(max_attempts=3, sleep=RecordedSleep())
    flaky = Flaky(10, RetryableError("still down"))
    with pytest.raises(RetryableError, match="still down"):
        await policy.call(flaky)
    assert flaky.calls == 3
