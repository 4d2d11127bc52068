"""The two kinds of error, with one meaning in every component.

``RetryableError``: the same request may succeed later (the peer is down,
the store is busy); callers retry with backoff. ``PermanentError``: the
request itself is wrong and will fail again; callers set it aside, count it
and move on. Both map to gRPC status codes only at the boundary.
"""

from __future__ import annotations

import grpc

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class MltrailError(Exception):
    """Base of the project's own errors; ``str()`` is meant for users."""


class PermanentError(MltrailError):
    """Retrying will not help: the input or the credentials are wrong."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class RetryableError(MltrailError):
    """A transient failure; ``retry_after`` (seconds) is the peer's hint."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(
        self, message: str, retry_after: float | None = None, code: grpc.StatusCode | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        if code is not None:
            self.code = code


def code_from_number(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode for a numeric status code (unknown numbers: UNKNOWN)."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def code_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


def is_retryable(code: grpc.StatusCode) -> bool:
    return code in RETRYABLE_CODES


def from_rpc_error(err: grpc.RpcError, retry_after: float | None = None) -> MltrailError:
    """Translate a gRPC error from a peer into one of the two kinds."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    message = f"{code.name}: {details}"
    if code in RETRYABLE_CODES:
        return RetryableError(message, retry_after=retry_after, code=code)
    return PermanentError(message, code=code)
