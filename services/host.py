"""The device host: one process, one engine, one or many devices, served over grpc.aio.

Started by a deployment backend (``python -m services.host --name H``). It prints
``LISTENING host:port`` on stdout once it serves, then waits to be loaded with its share of a
scenario, connected to its peers and driven window by window by the coordinator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from testbed.sync.v1 import sync_pb2, sync_pb2_grpc

from emulators.kernel.vtime import NEVER
from emulators.runtime import HostRuntime, earliest_arrival
from emulators.topology import scenario_from_dict
from services import gnmi
from services.codec import decode_batch, decode_bus, encode_batch, encode_bus
from services.interceptors import LoggingInterceptor
from services.logs import configure_logging

log = structlog.get_logger("host")

TOKEN_ENV = "TESTBED_TOKEN"

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", 1 << 30),
    ("grpc.max_receive_message_length", 1 << 30),
    # the coordinator pings twice a second; a host must accept that instead of answering GOAWAY
    ("grpc.http2.min_ping_interval_without_data_ms", 250),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]

# Keepalive on the coordinator's channels: pings are answered by gRPC's transport even while a
# host's Python code is busy with a long window, so a silent channel means a frozen or lost process.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 500),
    ("grpc.keepalive_timeout_ms", 1500),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", 500),
    ("grpc.http2.ping_timeout_ms", 1500),
]


class PeerStream:
    """This host's end of the frame stream shared with one peer host."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.ready = asyncio.Event()
        self._write: Any = None

    def bind(self, write: Any) -> None:
        self._write = write
        self.ready.set()

    async def send(self, batch: Any) -> None:
        await self.ready.wait()
        await self._write(batch)


class HostState:
    def __init__(self, name: str, token: str | None = None) -> None:
        self.name = name
        self.runtime: HostRuntime | None = None
        self.management = gnmi.ManagementState(token)
        self.peers: dict[str, PeerStream] = {}
        self.arrived = asyncio.Event()
        self.window = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def loaded(self, context: grpc.aio.ServicerContext) -> HostRuntime:
        if self.runtime is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"host {self.name} is not loaded: call Load first")
        assert self.runtime is not None
        return self.runtime

    def peer(self, name: str) -> PeerStream:
        return self.peers.setdefault(name, PeerStream(name))

    def on_batch(self, batch: Any) -> None:
        assert self.runtime is not None
        self.runtime.deliver(batch.from_host, decode_batch(batch))
        self.arrived.set()

    def keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class HostControl(sync_pb2_grpc.HostControlServicer):
    def __init__(self, state: HostState) -> None:
        self.state = state

    async def Load(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = self.state
        if state.runtime is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"host {state.name} is already loaded")
        if request.host != state.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"this is host {state.name!r}, not {request.host!r}")
        try:
            scenario = scenario_from_dict(json.loads(request.scenario_json))
        except (ValueError, KeyError, TypeError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"scenario_json is not a resolved scenario: {e}")
        assignment = dict(request.assignment)
        missing = [d.name for d in scenario.devices if d.name not in assignment]
        if missing:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"assignment has no host for devices: {', '.join(missing)}")
        structlog.contextvars.bind_contextvars(run_id=request.run_id)
        state.runtime = HostRuntime(scenario, state.name, assignment)
        log.info("loaded", devices=sorted(state.runtime.devices), peers=state.runtime.peers)
        return sync_pb2.LoadResponse(devices=sorted(state.runtime.devices), peers=state.runtime.peers)

    async def Connect(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = self.state
        runtime = await state.loaded(context)
        addresses = dict(request.peer_addresses)
        for peer in runtime.peers:
            if peer not in addresses:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no address for peer host {peer!r}")
            if state.name < peer:  # the smaller name dials, so each pair shares exactly one stream
                channel = grpc.aio.insecure_channel(addresses[peer], options=GRPC_OPTIONS)
                call = sync_pb2_grpc.FrameExchangeStub(channel).Exchange()
                await call.write(sync_pb2.FrameBatch(from_host=state.name))
                state.peer(peer).bind(call.write)
                state.keep(asyncio.create_task(self._read_peer(peer, call)))
        return sync_pb2.ConnectResponse()

    async def _read_peer(self, peer: str, call: Any) -> None:
        try:
            async for batch in call:
                self.state.on_batch(batch)
        except grpc.aio.AioRpcError as e:
            log.error("peer stream broke", peer=peer, code=str(e.code()), detail=e.details())

    async def Sync(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        state = self.state
        runtime = await state.loaded(context)
        async for advance in request_iterator:
            if advance.start:
                runtime.start()
                state.management.finished_window(runtime.window_end)
                yield self._report(runtime, NEVER)
                continue
            expect_from = dict(advance.expect_from)
            while not runtime.holds_all(expect_from):
                state.arrived.clear()
                await state.arrived.wait()
            state.window = advance.window
            runtime.deliver_bus(decode_bus(advance.bus))
            # gNMI Sets take effect at this boundary, or where the window starts if it skipped ahead
            state.management.apply_pending(runtime, advance.window, max(runtime.window_end, advance.start_ps),
                                           advance.end_ps)
            try:
                sent = runtime.advance(advance.end_ps)
            except Exception as e:  # a model bug must reach the coordinator with this host's name
                log.exception("window failed", window=advance.window)
                await context.abort(grpc.StatusCode.INTERNAL, f"host {state.name}: window {advance.window}: {e!r}")
            state.management.finished_window(runtime.window_end)
            for peer, frames in sent.items():
                await state.peer(peer).send(encode_batch(state.name, advance.window, frames))
            yield self._report(runtime, earliest_arrival(sent))

    def _report(self, runtime: HostRuntime, first_arrival: int) -> Any:
        return sync_pb2.Report(window=self.state.window, next_ps=runtime.next_time(),
                               min_sent_arrival_ps=first_arrival, sent_total=runtime.sent_total,
                               events=runtime.events, bus=encode_bus(runtime.take_bus()))

    async def Results(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        runtime = await self.state.loaded(context)
        results = runtime.results()
        if self.state.management.inputs:  # only then: a run without external inputs keeps its results as they were
            results["inputs"] = self.state.management.inputs
        return sync_pb2.ResultsResponse(results_json=json.dumps(results))


class FrameExchange(sync_pb2_grpc.FrameExchangeServicer):
    def __init__(self, state: HostState) -> None:
        self.state = state

    async def Exchange(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        hello = await context.read()
        if hello is grpc.aio.EOF or not hello.from_host:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first FrameBatch must name the sending host")
        if self.state.runtime is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"host {self.state.name} is not loaded")
        self.state.peer(hello.from_host).bind(context.write)
        while True:
            batch = await context.read()
            if batch is grpc.aio.EOF:
                return
            self.state.on_batch(batch)


async def serve(name: str, listen: str, exit_with_parent: bool = False, grace_s: float = 1.0,
                token: str | None = None) -> None:
    state = HostState(name, token)
    server = grpc.aio.server(interceptors=[LoggingInterceptor(name)], options=GRPC_OPTIONS)
    sync_pb2_grpc.add_HostControlServicer_to_server(HostControl(state), server)
    sync_pb2_grpc.add_FrameExchangeServicer_to_server(FrameExchange(state), server)
    gnmi.gnmi_pb2_grpc.add_gNMIServicer_to_server(gnmi.Gnmi(state, state.management), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [
        sync_pb2.DESCRIPTOR.services_by_name["HostControl"].full_name,
        sync_pb2.DESCRIPTOR.services_by_name["FrameExchange"].full_name,
        gnmi.SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(services, server)
    port = server.add_insecure_port(listen)
    await server.start()
    for service in ["", *services[:3]]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    bind_host = listen.rsplit(":", 1)[0]
    print(f"LISTENING {bind_host}:{port}", flush=True)
    log.info("serving", address=f"{bind_host}:{port}", pid=os.getpid())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_parent:
        parent = os.getppid()

        async def watch_parent() -> None:
            while os.getppid() == parent:
                await asyncio.sleep(0.5)
            log.warning("parent exited; stopping")
            stop.set()

        state.keep(asyncio.create_task(watch_parent()))
    await stop.wait()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_s)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.host", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="this host's name in the partition plan")
    parser.add_argument("--listen", default="127.0.0.1:0", help="address to serve on (port 0: any free port)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the launching process exits")
    parser.add_argument("--token-file", help=f"require 'authorization: Bearer <token>' on gNMI calls, the token "
                                             f"read from this file (default: the {TOKEN_ENV} environment variable)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    structlog.contextvars.bind_contextvars(host=args.name)
    try:
        token = read_token(args.token_file)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.name, args.listen, args.exit_with_parent, token=token))
    return 0


def read_token(token_file: str | None) -> str | None:
    """The gNMI bearer token: the file's content, else TESTBED_TOKEN, else none (gNMI open)."""
    if token_file is not None:
        with open(token_file) as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


if __name__ == "__main__":
    sys.exit(main())
