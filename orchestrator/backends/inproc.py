"""The in-process backend: every host's runtime lives in this process and frames move by reference.

Same protocol as the process backend (reports, cumulative counts, bus messages through the
coordinator), minus the wire.
"""

from __future__ import annotations

from typing import Any

from emulators.model.scenario import Scenario
from emulators.runtime import BusMessage, HostRuntime, earliest_arrival
from orchestrator.coordinator import Report
from orchestrator.partition import Plan


class InprocHost:
    def __init__(self, runtime: HostRuntime, peers: dict[str, InprocHost]) -> None:
        self.name = runtime.host
        self.runtime = runtime
        self._peers = peers

    def _report(self, sent: dict[str, list[Any]]) -> Report:
        return Report(self.runtime.next_time(), earliest_arrival(sent), dict(self.runtime.sent_total),
                      self.runtime.take_bus())

    async def start(self) -> Report:
        self.runtime.start()
        return self._report({})

    async def advance(self, end_ps: int, expect_from: dict[str, int], bus: list[BusMessage],
                      start_ps: int = 0) -> Report:
        # delivery is immediate here, so a host may already hold frames of the window after this one
        assert self.runtime.holds_all(expect_from)
        self.runtime.deliver_bus(bus)
        sent = self.runtime.advance(end_ps)
        for peer, frames in sent.items():
            self._peers[peer].runtime.deliver(self.name, frames)
        return self._report(sent)

    async def results(self) -> dict[str, Any]:
        return self.runtime.results()

    def reached_ps(self) -> int:
        """The virtual time its engine has reached, in the middle of a window too."""
        return self.runtime.engine.now


def start_inproc(scenario: Scenario, plan: Plan) -> list[InprocHost]:
    peers: dict[str, InprocHost] = {}
    for host in plan.hosts:
        peers[host] = InprocHost(HostRuntime(scenario, host, plan.assignment), peers)
    return list(peers.values())
