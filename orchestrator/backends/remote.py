"""A device host reached over gRPC, wherever it runs: an OS process, a container or a pod.

The coordinator talks to each host through one of these handles; a backend starts the hosts, tells
the handle where each one serves (``attach``), waits until grpc.health.v1 says it serves, and loads
and connects them all (``load_and_connect``). Peers may reach a host at another address than the
coordinator does (a container network's DNS name versus a published port).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import signal
import time
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testbed.sync.v1 import sync_pb2, sync_pb2_grpc

from emulators.model.scenario import Scenario, scenario_to_dict
from emulators.runtime import BusMessage
from orchestrator.coordinator import HostFailed, Report, gather_all
from orchestrator.partition import Plan
from services.codec import decode_bus, encode_bus
from services.host import GRPC_OPTIONS, KEEPALIVE_OPTIONS, RUN_TOKEN_ENV, TOKEN_ENV
from services.interceptors import bearer

log = structlog.get_logger("remote-host")


class RemoteHost:
    """The coordinator's handle on one host: its control channel and its Sync stream."""

    def __init__(self, name: str, window_timeout_s: float) -> None:
        self.name = name
        self.window_timeout_s = window_timeout_s
        self.address = ""  # where the coordinator reaches it
        self.channel: grpc.aio.Channel | None = None
        self.control: Any = None
        self._sync: Any = None
        self._window = 0

    def attach(self, address: str, token: str | None = None) -> None:
        """Reach the host at ``address``; every HostControl call carries ``token`` (see run_token)."""
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS + KEEPALIVE_OPTIONS)
        self.control = WithMetadata(sync_pb2_grpc.HostControlStub(self.channel), bearer(token))

    async def serving(self) -> bool:
        """Whether grpc.health.v1 answers SERVING for the whole server right now."""
        assert self.channel is not None
        try:
            reply = await health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def _call(self, what: str, call: Any) -> Any:
        """Await ``call``: an RPC, or a read or write on the Sync stream. However it fails, HostFailed."""
        try:
            return await asyncio.wait_for(call, self.window_timeout_s)
        except TimeoutError:
            raise HostFailed(self.name, f"no answer to {what} within {self.window_timeout_s:g} s") from None
        except grpc.aio.AioRpcError as e:
            raise HostFailed(self.name, f"{what}: {e.code().name}: {e.details()}") from None
        except asyncio.InvalidStateError as e:  # a write on a stream the host has ended
            raise HostFailed(self.name, f"{what}: {await self._stream_end(e)}") from None
        except grpc.aio.UsageError as e:
            raise HostFailed(self.name, f"{what}: {e}") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the run is stopping, not the host
                raise
            raise HostFailed(self.name, f"{what}: the call was cancelled") from None

    async def _stream_end(self, error: Exception) -> str:
        """How the Sync stream ended, from its status."""
        if self._sync is None or not self._sync.done():
            return str(error)
        return f"the stream ended ({(await self._sync.code()).name}: {await self._sync.details()})"

    async def _exchange(self, advance: Any) -> Report:
        await self._call("Sync", self._sync.write(advance))
        reply = await self._call("Sync", self._sync.read())
        if reply is grpc.aio.EOF:
            raise HostFailed(self.name, "closed its Sync stream")
        return Report(reply.next_ps, reply.min_sent_arrival_ps, dict(reply.sent_total), decode_bus(reply.bus))

    async def start(self) -> Report:
        self._sync = self.control.Sync()
        return await self._exchange(sync_pb2.Advance(start=True))

    async def advance(self, end_ps: int, expect_from: dict[str, int], bus: list[BusMessage],
                      start_ps: int = 0) -> Report:
        self._window += 1
        return await self._exchange(sync_pb2.Advance(window=self._window, end_ps=end_ps, start_ps=start_ps,
                                                     expect_from=expect_from, bus=encode_bus(bus)))

    async def close(self) -> None:
        """End the Sync stream: the host is done with this run."""
        if self._sync is not None:
            await self._call("Sync", self._sync.done_writing())

    async def results(self) -> dict[str, Any]:
        reply = await self._call("Results", self.control.Results(sync_pb2.ResultsRequest()))
        try:
            results: dict[str, Any] = json.loads(reply.results_json)
        except ValueError as e:
            raise HostFailed(self.name, f"Results: results_json is not JSON: {e}") from None
        return results

    async def close_channel(self) -> None:
        if self.channel is not None:
            await self.channel.close()


class WithMetadata:
    """A stub whose every call carries ``metadata`` (a plain channel: call credentials need TLS)."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, rpc: str) -> Any:
        return functools.partial(getattr(self._stub, rpc), metadata=self._metadata)


def run_token() -> str:
    """What a run's hosts ask of HostControl and FrameExchange calls: TESTBED_TOKEN when set, else a
    fresh secret of this run's alone, so their internal services are never open on a shared machine."""
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)


def token_environment(token: str | None) -> dict[str, str]:
    """The environment that hands ``token`` to a host: TESTBED_TOKEN if it is that one (gNMI asks for
    it too), else TESTBED_RUN_TOKEN (gNMI stays open); nothing for no token."""
    if not token:
        return {}
    return {TOKEN_ENV if token == os.environ.get(TOKEN_ENV) else RUN_TOKEN_ENV: token}


async def wait_until_serving(host: RemoteHost, timeout_s: float, gone: Any = None) -> None:
    """Poll grpc.health.v1 until ``host`` serves. ``gone()`` (if given, awaitable) returns a reason
    when the host can no longer come up (its container exited, say): that fails at once."""
    deadline = time.monotonic() + timeout_s
    while not await host.serving():
        if gone is not None and (reason := await gone()):
            raise HostFailed(host.name, reason)
        if time.monotonic() > deadline:
            raise HostFailed(host.name, f"grpc.health.v1 did not report SERVING within {timeout_s:g} s")
        await asyncio.sleep(0.2)


async def load_and_connect(hosts: list[RemoteHost], scenario: Scenario, plan: Plan, run_id: str,
                           peer_addresses: dict[str, str] | None = None) -> None:
    """Load every host with its share of ``scenario``, then connect each to its peers, which it
    reaches at ``peer_addresses`` (by default where the coordinator reaches them)."""
    scenario_json = json.dumps(scenario_to_dict(scenario))
    await gather_all(
        h._call("Load", h.control.Load(sync_pb2.LoadRequest(
            run_id=run_id, host=h.name, scenario_json=scenario_json, assignment=plan.assignment)))
        for h in hosts)
    addresses = peer_addresses or {h.name: h.address for h in hosts}
    await gather_all(
        h._call("Connect", h.control.Connect(sync_pb2.ConnectRequest(peer_addresses=addresses)))
        for h in hosts)
    log.info("hosts loaded and connected", hosts=len(hosts))


# how long a failure waits to learn whether a host's process, container or pod ended: longer than the
# grace a host gives its calls when it stops on SIGTERM (services.host.serve)
EXIT_GRACE_S = 1.5


async def explain(cluster: Any, failure: HostFailed) -> HostFailed:
    """The failure to report for ``failure``. A host that broke its stream is often ending, and so is
    the peer whose loss broke another host's: a host whose process, container or pod ends within
    EXIT_GRACE_S is the one that failed, and its exit says why."""
    try:
        ended = await asyncio.wait_for(cluster.first_exit(), EXIT_GRACE_S)
        return await cluster.failure(ended)
    except TimeoutError:
        return failure
    except Exception as e:  # the engine or API server cannot tell: the stream's error stands
        log.warning("cannot tell whether a host ended", host=failure.host, error=str(e))
        return failure


def stopped_on(log_lines: list[str]) -> str | None:
    """The signal a host's log says it stopped on (services.host logs "stopping" with its name)."""
    for line in reversed(log_lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "stopping" and entry.get("signal"):
            return str(entry["signal"])
    return None


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
