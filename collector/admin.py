"""The mltrail.v1.Admin service: create, list and revoke tokens (admin tokens only).

Token writes run on the store writer thread (SQLite has one writer
connection); lists on a reader thread. A new token's secret is in the
response once and nowhere else: not in the log, not in the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from mltrail.collector.auth import ADMIN, Authenticator, authorize
from mltrail.collector.store import TokenRecord
from mltrail.common.errors import MltrailError, PermanentError
from mltrail.proto import collector_pb2, collector_pb2_grpc

T = TypeVar("T")


def token_info(record: TokenRecord) -> collector_pb2.TokenInfo:
    return collector_pb2.TokenInfo(
        name=record.name, workspace=record.workspace, role=record.role,
        token_id=record.token_id, created_unix_nano=record.created,
        expires_unix_nano=record.expires, revoked_unix_nano=record.revoked)


class AdminService(collector_pb2_grpc.AdminServicer):
    def __init__(self, auth: Authenticator, writer: Executor, readers: Executor) -> None:
        self._auth = auth
        self._writer = writer
        self._readers = readers

    async def _run(self, context: grpc.aio.ServicerContext, pool: Executor,
                   fn: Callable[..., T], *args: Any) -> T:
        await authorize(self._auth, context, ADMIN, self._readers)
        if not self._auth.enabled:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "this collector runs with auth = \"none\": it has no tokens; "
                                "start it with --auth token")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except PermanentError as exc:
            await context.abort(exc.code, str(exc))
        except MltrailError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        raise AssertionError("unreachable: context.abort raises")

    async def CreateToken(self, request: collector_pb2.CreateTokenRequest,
                          context: grpc.aio.ServicerContext
                          ) -> collector_pb2.CreateTokenResponse:
        token, record = await self._run(
            context, self._writer, self._auth.issue, request.workspace, request.role,
            request.name, float(request.expires_in_seconds))
        return collector_pb2.CreateTokenResponse(info=token_info(record), token=token)

    async def ListTokens(self, request: collector_pb2.ListTokensRequest,
                         context: grpc.aio.ServicerContext) -> collector_pb2.ListTokensResponse:
        records = await self._run(context, self._readers,
                                  lambda: self._auth.store.list_tokens(request.workspace))
        return collector_pb2.ListTokensResponse(tokens=[token_info(r) for r in records])

    async def RevokeToken(self, request: collector_pb2.RevokeTokenRequest,
                          context: grpc.aio.ServicerContext) -> collector_pb2.TokenInfo:
        record = await self._run(context, self._writer, self._auth.revoke, request.name)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no token is named {request.name!r}; see `mltrail token list`")
        return token_info(record)
