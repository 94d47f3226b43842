"""A server interceptor that binds request context (rpc, peer, host) into structlog contextvars, and
the bearer-token check the management services share."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

log = structlog.get_logger("rpc")


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, host: str) -> None:
        self.host = host

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        rpc = handler_call_details.method
        host = self.host

        def bind(context: Any) -> None:
            structlog.contextvars.bind_contextvars(rpc=rpc, peer=context.peer(), host=host)
            log.debug("rpc started")

        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                bind(context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer)
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
                bind(context)
                result = inner_ss(requests, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:  # handlers that use context.read()/write() return a coroutine
                    await result

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer)
        return handler  # unary-stream and stream-unary are not used by the testbed's services


def bearer_ok(context: Any, token: str | None) -> bool:
    """Whether a call carries ``authorization: Bearer <token>`` (always, when no token is set)."""
    if token is None:
        return True
    given = dict(context.invocation_metadata() or ()).get("authorization", "")
    return isinstance(given, str) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
