"""A device host reached over gRPC, wherever it runs: an OS process, a container or a pod.

The coordinator talks to each host through one of these handles; a backend starts the hosts, tells
the handle where each one serves (``attach``), waits until grpc.health.v1 says it serves, and loads
and connects them all (``load_and_connect``). Peers may reach a host at another address than the
coordinator does (a container network's DNS name versus a published port).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testbed.sync.v1 import sync_pb2, sync_pb2_grpc

from emulators.runtime import BusMessage
from emulators.topology import Scenario, scenario_to_dict
from orchestrator.coordinator import HostFailed, Report
from orchestrator.partition import Plan
from services.codec import decode_bus, encode_bus
from services.host import GRPC_OPTIONS, KEEPALIVE_OPTIONS

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

    def attach(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS + KEEPALIVE_OPTIONS)
        self.control = sync_pb2_grpc.HostControlStub(self.channel)

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
        try:
            return await asyncio.wait_for(call, self.window_timeout_s)
        except TimeoutError:
            raise HostFailed(self.name, f"no answer to {what} within {self.window_timeout_s:g} s") from None
        except grpc.aio.AioRpcError as e:
            raise HostFailed(self.name, f"{what}: {e.code().name}: {e.details()}") from None

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
            await self._sync.done_writing()

    async def results(self) -> dict[str, Any]:
        reply = await self._call("Results", self.control.Results(sync_pb2.ResultsRequest()))
        results: dict[str, Any] = json.loads(reply.results_json)
        return results

    async def close_channel(self) -> None:
        if self.channel is not None:
            await self.channel.close()


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
    await asyncio.gather(*(
        h._call("Load", h.control.Load(sync_pb2.LoadRequest(
            run_id=run_id, host=h.name, scenario_json=scenario_json, assignment=plan.assignment)))
        for h in hosts))
    addresses = peer_addresses or {h.name: h.address for h in hosts}
    await asyncio.gather(*(
        h._call("Connect", h.control.Connect(sync_pb2.ConnectRequest(peer_addresses=addresses)))
        for h in hosts))
    log.info("hosts loaded and connected", hosts=len(hosts))
