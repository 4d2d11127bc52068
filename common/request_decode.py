"""Undecodable requests answered INVALID_ARGUMENT and counted, on every gRPC service.

gRPC decodes a request with the handler's deserializer before our code sees
it; when that fails it answers gRPC's generic "Exception deserializing
request" (UNKNOWN or INTERNAL), which a client cannot act on and nobody
counts. ``DecodeCheck`` is a server interceptor that takes the decoding
over: each handler gets the raw bytes, decodes them itself and, when they
are not the message the method takes, aborts the call with
INVALID_ARGUMENT naming the method, the message type and the decoder's
reason, after telling ``on_bad(method)`` (a Prometheus counter). On a
request stream, the requests before the bad one were handled and answered
as usual; the call ends at the bad one. Handlers that already take raw
bytes (``Ingest.Write``) are passed through as they are.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Deserializer = Callable[[bytes], Any]


def _message_name(deserializer: Deserializer) -> str:
    cls = getattr(deserializer, "__self__", None)  # a message class's FromString
    descriptor = getattr(cls, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "the request message"))


class DecodeCheck(grpc.aio.ServerInterceptor):
    def __init__(self, on_bad: Callable[[str], None]) -> None:
        self._on_bad = on_bad
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def _decode(self, method: str, deserializer: Deserializer, raw: bytes,
                      context: grpc.aio.ServicerContext, number: int | None) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError, or whatever a custom deserializer raises
            self._on_bad(method)
            which = "the request" if number is None else f"request {number} of this stream"
            kept = ("" if number is None else
                    "; the stream is closed (the requests before it were answered)")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{which} to {method} is not a {_message_name(deserializer)} ({len(raw)} "
                f"bytes that do not decode: {exc}); nothing of it was done{kept}; send a "
                "request encoded from mltrail's protos (a client of another version?)")
            raise AssertionError("unreachable: context.abort raises") from None

    def _decoded(self, method: str, deserializer: Deserializer, requests: AsyncIterator[bytes],
                 context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async def decoded() -> AsyncIterator[Any]:
            number = 0
            async for raw in requests:
                number += 1
                yield await self._decode(method, deserializer, raw, context, number)
        return decoded()

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        deserializer: Any = handler.request_deserializer
        serializer = handler.response_serializer
        if handler.unary_unary is not None or handler.unary_stream is not None:
            inner: Any = handler.unary_unary or handler.unary_stream

            async def first(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await self._decode(method, deserializer, raw, context, None)

            if inspect.isasyncgenfunction(inner):
                async def unary_gen(raw: bytes, context: grpc.aio.ServicerContext
                                    ) -> AsyncIterator[Any]:
                    async for response in inner(await first(raw, context), context):
                        yield response
                unary: Any = unary_gen
            else:
                async def unary_call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                    return await inner(await first(raw, context), context)
                unary = unary_call
            make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary is not None
                    else grpc.unary_stream_rpc_method_handler)
            return make(unary, request_deserializer=None, response_serializer=serializer)
        inner = handler.stream_unary or handler.stream_stream
        if inspect.isasyncgenfunction(inner):
            async def stream_gen(requests: AsyncIterator[bytes],
                                 context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async for response in inner(
                        self._decoded(method, deserializer, requests, context), context):
                    yield response
            streaming: Any = stream_gen
        else:
            async def stream_call(requests: AsyncIterator[bytes],
                                  context: grpc.aio.ServicerContext) -> Any:
                return await inner(self._decoded(method, deserializer, requests, context),
                                   context)
            streaming = stream_call
        make = (grpc.stream_unary_rpc_method_handler if handler.stream_unary is not None
                else grpc.stream_stream_rpc_method_handler)
        return make(streaming, request_deserializer=None, response_serializer=serializer)
