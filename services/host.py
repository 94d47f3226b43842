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
from emulators.model.scenario import scenario_from_dict
from emulators.runtime import HostRuntime, earliest_arrival
from services import gnmi
from services.codec import decode_batch, decode_bus, encode_batch, encode_bus
from services.interceptors import LoggingInterceptor, TokenInterceptor, UndecodableRequests, bearer
from services.logs import configure_logging

log = structlog.get_logger("host")

TOKEN_ENV = "TESTBED_TOKEN"
RUN_TOKEN_ENV = "TESTBED_RUN_TOKEN"  # a run's own secret for HostControl and FrameExchange, set by its backend
HOST_CONTROL = sync_pb2.DESCRIPTOR.services_by_name["HostControl"].full_name
FRAME_EXCHANGE = sync_pb2.DESCRIPTOR.services_by_name["FrameExchange"].full_name

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


class Refused(Exception):
    """A frame stream or batch this host does not take: the status code, and why."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class PeerStream:
    """This host's end of the frame stream shared with one peer host, and what may come over it:
    frames for the ports (by device id) whose cut link's far end that peer runs, one batch per window."""

    def __init__(self, peer: str, inbound: dict[int, set[str]]) -> None:
        self.peer = peer
        self.inbound = inbound
        self.window = 0  # the last window it sent frames of
        self.ready = asyncio.Event()
        self._write: Any = None

    def bind(self, write: Any) -> None:
        self._write = write
        self.ready.set()

    async def send(self, batch: Any) -> None:
        await self.ready.wait()
        await self._write(batch)


class HostState:
    def __init__(self, name: str, token: str | None = None, run_token: str | None = None) -> None:
        self.name = name
        self.runtime: HostRuntime | None = None
        self.management = gnmi.ManagementState()
        self.internal_token = token or run_token  # what HostControl and FrameExchange ask for, peers included
        self.peers: dict[str, PeerStream] = {}  # every peer host, from Load on
        self.arrived = asyncio.Event()
        self.window = 0
        self.connected = False
        self.started = False
        self.syncing = False
        self.failure: str | None = None  # a peer's frames were refused: the run cannot go on
        self._tasks: set[asyncio.Task[None]] = set()

    async def loaded(self, context: grpc.aio.ServicerContext) -> HostRuntime:
        if self.runtime is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"host {self.name} is not loaded: call Load first")
        assert self.runtime is not None
        return self.runtime

    def take_stream(self, hello: Any) -> PeerStream:
        """The peer stream that ``hello`` (the first batch of an incoming Exchange) opens: only a peer
        with a smaller name dials here (this host dials the larger ones), and only once."""
        if hello is grpc.aio.EOF or not hello.from_host or hello.window or hello.frames:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the first FrameBatch must name the sending host, "
                                                            "and only that")
        if self.runtime is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"host {self.name} is not loaded")
        name = hello.from_host
        stream = self.peers.get(name)
        if stream is None or name > self.name:
            dialers = [p for p in self.peers if p < self.name]
            raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"host {self.name} takes frame streams only from {', '.join(dialers) or 'no host'}, "
                          f"not {name!r}")
        if stream.ready.is_set():
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"peer host {name} is already connected")
        return stream

    def on_batch(self, stream: PeerStream, batch: Any) -> None:
        """Hand a batch from ``stream``'s peer to the runtime, or raise Refused when it is not that
        peer's next window or holds a frame that could not have come from it over a cut link in time."""
        runtime = self.runtime
        assert runtime is not None
        peer = stream.peer
        if batch.from_host != peer:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"a batch on peer host {peer}'s stream says it is "
                                                             f"from {batch.from_host!r}")
        # Sync sends a peer one batch per window it has frames for; the peer is at most a window ahead
        if not stream.window < batch.window <= self.window + 1:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"peer host {peer} sent window {batch.window} after window {stream.window}, "
                          f"with host {self.name} at window {self.window}")
        try:
            frames = decode_batch(batch)
        except (ArithmeticError, ValueError, TypeError) as e:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"peer host {peer}: undecodable frame: {e}") from None
        inbound = stream.inbound
        end = runtime.window_end  # it stays until the next merge of the inbox: no frame there may be earlier
        for arrival, _, _, device, port, _ in frames:
            ports = inbound.get(device)
            if ports is None or port not in ports:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"peer host {peer} sent a frame for device {device} port {port!r}, which is not "
                              f"the end of a cut link from it")
            if arrival < end:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"peer host {peer} sent a frame arriving at {arrival} ps, before host {self.name}'s "
                              f"window end {end} ps")
        stream.window = batch.window
        runtime.deliver(peer, frames)
        self.arrived.set()

    def fail(self, reason: str) -> None:
        """A peer's frames were refused: the next window fails with ``reason``."""
        self.failure = self.failure or reason
        self.arrived.set()

    def keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop_tasks(self) -> None:
        """Cancel what this host runs beside its calls (the peer streams it dialed, the parent watch)."""
        for task in list(self._tasks):
            task.cancel()


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
        inbound = inbound_ports(state.runtime, assignment)
        state.peers = {peer: PeerStream(peer, inbound[peer]) for peer in state.runtime.peers}
        log.info("loaded", devices=sorted(state.runtime.devices), peers=state.runtime.peers)
        return sync_pb2.LoadResponse(devices=sorted(state.runtime.devices), peers=state.runtime.peers)

    async def Connect(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = self.state
        runtime = await state.loaded(context)
        if state.connected:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"host {state.name} is already connected")
        addresses = dict(request.peer_addresses)
        missing = [peer for peer in runtime.peers if peer not in addresses]
        if missing:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"no address for peer host {', '.join(repr(p) for p in missing)}")
        state.connected = True
        try:  # the smaller name dials, so each pair shares exactly one stream
            await asyncio.gather(*(self._dial(state.peers[p], addresses[p]) for p in runtime.peers if state.name < p))
        except Refused as e:
            await context.abort(e.code, str(e))
        return sync_pb2.ConnectResponse()

    async def _dial(self, stream: PeerStream, address: str) -> None:
        """Open the frame stream to a peer and wait until the peer has taken it (its initial metadata)."""
        channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS)
        call = sync_pb2_grpc.FrameExchangeStub(channel).Exchange(metadata=bearer(self.state.internal_token))
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):  # the status says it below
            await call.write(sync_pb2.FrameBatch(from_host=self.state.name))
            await call.initial_metadata()
        if call.done():
            await channel.close()
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"peer host {stream.peer} at {address} did not take the frame stream: "
                          f"{(await call.code()).name}: {await call.details()}")
        stream.bind(call.write)
        self.state.keep(asyncio.create_task(self._read_peer(stream, call)))

    async def _read_peer(self, stream: PeerStream, call: Any) -> None:
        try:
            async for batch in call:
                self.state.on_batch(stream, batch)
        except grpc.aio.AioRpcError as e:
            log.error("peer stream broke", peer=stream.peer, code=str(e.code()), detail=e.details())
        except Refused as e:  # the peer is broken: stop reading it, and fail the run rather than merge
            log.error("frames refused; no longer reading the peer", peer=stream.peer, reason=str(e))
            self.state.fail(str(e))
            call.cancel()

    async def Sync(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        state = self.state
        runtime = await state.loaded(context)
        if state.syncing:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"host {state.name} is already driven by another Sync stream")
        state.syncing = True
        try:
            async for advance in request_iterator:
                report = await self._window(runtime, advance, context)
                yield report
        finally:
            state.syncing = False

    async def _window(self, runtime: HostRuntime, advance: Any, context: grpc.aio.ServicerContext) -> Any:
        """Run one Advance of the Sync stream: the start, or a window."""
        state = self.state
        if advance.start:
            if state.started:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"host {state.name} has already started")
            state.started = True
            runtime.start()
            state.management.finished_window(runtime.window_end)
            return self._report(runtime, NEVER)
        expect_from = dict(advance.expect_from)
        while state.failure is None and not runtime.holds_all(expect_from):
            state.arrived.clear()
            await state.arrived.wait()
        if state.failure is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"host {state.name}: {state.failure}")
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
            try:
                await state.peers[peer].send(encode_batch(state.name, advance.window, frames))
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"host {state.name}: the frame stream to peer "
                                                                 f"host {peer} has ended")
        return self._report(runtime, earliest_arrival(sent))

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
        state = self.state
        hello = await context.read()
        try:
            stream = state.take_stream(hello)
        except Refused as e:  # someone else's stream: the peers' own go on
            log.warning("frame stream refused", from_host=getattr(hello, "from_host", None), reason=str(e))
            await context.abort(e.code, str(e))
        stream.bind(context.write)
        await context.send_initial_metadata(())  # tells the dialing peer its stream is taken
        while True:
            batch = await context.read()
            if batch is grpc.aio.EOF:
                return
            try:
                state.on_batch(stream, batch)
            except Refused as e:  # the peer's own stream: it is broken, and the run with it
                log.error("frames refused", from_host=stream.peer, reason=str(e))
                state.fail(str(e))
                await context.abort(e.code, str(e))


def inbound_ports(runtime: HostRuntime, assignment: dict[str, str]) -> dict[str, dict[int, set[str]]]:
    """Where each peer host's frames may land here: by device id, the ports whose link's far end it runs."""
    inbound: dict[str, dict[int, set[str]]] = {peer: {} for peer in runtime.peers}
    for link in runtime.scenario.links:
        for near, far in ((link.a, link.z), (link.z, link.a)):
            peer = assignment[far.device]
            if near.device in runtime.devices and peer != runtime.host:
                inbound[peer].setdefault(runtime.ids[near.device], set()).add(near.port)
    return inbound


async def serve(name: str, listen: str, exit_with_parent: bool = False, grace_s: float = 1.0,
                token: str | None = None, run_token: str | None = None) -> None:
    """Serve host ``name``. With ``token`` (TESTBED_TOKEN) every service but health and reflection asks
    for it; else with ``run_token`` HostControl and FrameExchange ask for that, and gNMI is open."""
    state = HostState(name, token, run_token)
    tokens = {HOST_CONTROL: state.internal_token, FRAME_EXCHANGE: state.internal_token, gnmi.SERVICE_NAME: token}
    # the token first, then the request's bytes (FrameExchange parses its own)
    server = grpc.aio.server(interceptors=[LoggingInterceptor(name), TokenInterceptor(f"host {name}", tokens),
                                           UndecodableRequests((HOST_CONTROL, gnmi.SERVICE_NAME))],
                             options=GRPC_OPTIONS)
    sync_pb2_grpc.add_HostControlServicer_to_server(HostControl(state), server)
    sync_pb2_grpc.add_FrameExchangeServicer_to_server(FrameExchange(state), server)
    gnmi.gnmi_pb2_grpc.add_gNMIServicer_to_server(gnmi.Gnmi(state, state.management), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [
        HOST_CONTROL,
        FRAME_EXCHANGE,
        gnmi.SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(services, server)
    port = server.add_insecure_port(listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.warning("stopping", signal=sig.name)  # a coordinator quotes it: why this host left the run
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):  # before it serves: from then on, a signal stops it gracefully
        loop.add_signal_handler(sig, on_signal, sig)
    await server.start()
    for service in ["", *services[:3]]:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    bind_host = listen.rsplit(":", 1)[0]
    print(f"LISTENING {bind_host}:{port}", flush=True)
    log.info("serving", address=f"{bind_host}:{port}", pid=os.getpid(),
             token_required=[service for service, t in tokens.items() if t])

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
    # the streams this host dialed go first: its peers, stopping too, need not wait out their grace for them
    state.stop_tasks()
    await server.stop(grace_s)
    # the calls still open were cancelled: let their tasks end, or asyncio.run cancels them and grpc
    # prints a traceback for each
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=grace_s)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.host", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="this host's name in the partition plan")
    parser.add_argument("--listen", default="127.0.0.1:0", help="address to serve on (port 0: any free port)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the launching process exits")
    parser.add_argument("--token-file", help=f"require 'authorization: Bearer <token>' on every call but health "
                                             f"and reflection, the token read from this file (default: the "
                                             f"{TOKEN_ENV} environment variable; without either, HostControl and "
                                             f"FrameExchange ask for {RUN_TOKEN_ENV} if set)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    structlog.contextvars.bind_contextvars(host=args.name)
    try:
        token = read_token(args.token_file)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.name, args.listen, args.exit_with_parent, token=token,
                          run_token=os.environ.get(RUN_TOKEN_ENV) or None))
    return 0


def read_token(token_file: str | None) -> str | None:
    """The management bearer token: the file's content, else TESTBED_TOKEN, else none (gNMI open)."""
    if token_file is not None:
        with open(token_file) as f:
            token = f.read().strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


if __name__ == "__main__":
    sys.exit(main())
