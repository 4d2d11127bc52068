"""The forwarder's retry policy: one object wrapped around ``send``.

Only ``RetryableError`` is retried (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
RESOURCE_EXHAUSTED, a dropped connection); a ``PermanentError`` goes straight
back to the caller, which sets the batch aside. The wait is exponential
backoff with full jitter (tenacity's ``wait_random_exponential``), never
shorter than the collector's ``retry_after`` hint. By default the policy never
gives up: a retry limit that throws spooled data away is the complaint log
shipper users have most; ``max_attempts`` exists for tools (``mltrail sync``)
that prefer to stop and keep the spool on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from mltrail.common.errors import RetryableError

log = logging.getLogger("mltrail.agent.retry")

T = TypeVar("T")

# Called before each sleep with the error and the chosen delay (seconds).
RetryHook = Callable[[BaseException, float], None]


class RetryPolicy:
    """Retries a coroutine function on ``RetryableError`` with jittered backoff."""

    def __init__(
        self,
        *,
        initial: float = 0.1,
        maximum: float = 5.0,
        max_attempts: int | None = None,
        on_retry: RetryHook | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.max_attempts = max_attempts
        self._jitter = wait_random_exponential(multiplier=initial, max=maximum)
        self._on_retry = on_retry
        self._sleep = sleep

    def delay(self, state: RetryCallState) -> float:
        """Full-jitter backoff, at least the peer's ``retry_after`` hint."""
        backoff = float(self._jitter(state))
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        hint = getattr(error, "retry_after", None)
        return max(backoff, float(hint)) if hint else backoff

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.upcoming_sleep
        if error is not None:
            # the delay stays out of the message so DuplicateFilter can rate-limit it
            log.warning("forwarding failed (%s); retrying with backoff", error)
            log.debug("next forwarding attempt in %.2fs", delay)
            if self._on_retry is not None:
                self._on_retry(error, delay)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` until it returns or raises something not retryable."""
        stop = stop_never if self.max_attempts is None else stop_after_attempt(self.max_attempts)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableError),
            wait=self.delay,
            stop=stop,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return await retrying(fn)
