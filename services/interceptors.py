"""Server interceptors: one binds request context (rpc, peer, host) into structlog contextvars, one
refuses calls without the bearer token, one answers bytes that are not a request's message with
INVALID_ARGUMENT; and the bearer metadata every caller sends."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

log = structlog.get_logger("rpc")

HANDLERS = {  # (request streaming, response streaming) -> how to make a handler of that shape
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


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


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls to the services of ``tokens`` (full service name -> its token; None: open) that
    lack ``authorization: Bearer <token>``: UNAUTHENTICATED, logged with the peer and the rpc, and
    the servicer never runs. Services left out (health, reflection) stay open for probes."""

    def __init__(self, who: str, tokens: dict[str, str | None]) -> None:
        self.who = who  # what the refusal says asks for the token: "host NAME", "the control service"
        self.tokens = {f"/{service}/": (service.rsplit(".", 1)[-1], token)
                       for service, token in tokens.items() if token}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        rpc = handler_call_details.method
        required = self.tokens.get(rpc[:rpc.rfind("/") + 1])
        if required is None or bearer_in(handler_call_details.invocation_metadata, required[1]):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        message = f"{self.who} requires metadata 'authorization: Bearer <token>' for {required[0]}"

        async def refuse(request: Any, context: Any) -> None:
            log.warning("call without the token refused", rpc=rpc, peer=context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        make = HANDLERS[handler.request_streaming, handler.response_streaming]
        return make(refuse, handler.request_deserializer, handler.response_serializer)


class UndecodableRequests(grpc.aio.ServerInterceptor):
    """A request that is not protobuf of its type answers INVALID_ARGUMENT (gRPC would say UNKNOWN):
    the handler of a unary call, or of a stream it reads by iterating, gets the bytes and parses them
    here. ``services`` (full names) limits it to those; a handler that reads with ``context.read()``
    (FrameExchange) must be left out, since it would get bytes."""

    def __init__(self, services: tuple[str, ...] | None = None) -> None:
        self.prefixes = None if services is None else tuple(f"/{service}/" for service in services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        rpc = handler_call_details.method
        if handler is None or handler.request_deserializer is None or (
                self.prefixes is not None and not rpc.startswith(self.prefixes)):
            return handler
        parse = handler.request_deserializer

        async def parsed(data: bytes, context: Any) -> Any:
            try:
                return parse(data)
            except DecodeError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request to {rpc} is not its message: {e}")

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(data: bytes, context: Any) -> Any:
                return await inner_uu(await parsed(data, context), context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, None, handler.response_serializer)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[Any]:
                async def each() -> AsyncIterator[Any]:
                    async for data in requests:
                        yield await parsed(data, context)

                async for item in inner_ss(each(), context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(stream_stream, None, handler.response_serializer)
        return handler


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token`` (none for no token)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def bearer_in(metadata: Any, token: str | None) -> bool:
    """Whether call ``metadata`` holds ``authorization: Bearer <token>`` (always, when no token is set)."""
    if token is None:
        return True
    given = dict(metadata or ()).get("authorization", "")
    return isinstance(given, str) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
