"""The virtual clock: conservative, window-synchronous execution across hosts.

Each window starts at the global minimum of every host's next event and of every frame in flight
between hosts, and ends ``lookahead`` later (or at the run's end). Every host processes its events
before the window end and sends its cross-host frames, which by construction arrive at or after the
window end; a host starts the next window only once it holds every frame each peer sent it so far
(counted per peer: a peer already running the next window may have sent more).
Single-host plans run in one window.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from emulators.topology import Scenario
from orchestrator.partition import Plan

log = structlog.get_logger("coordinator")


@dataclass
class Report:
    """A host's answer at the end of a window."""

    next_ps: int  # its next local event (or NEVER)
    min_sent_arrival_ps: int  # earliest arrival among frames it sent this window (or NEVER)
    sent_total: dict[str, int] = field(default_factory=dict)  # cumulative frames sent to each peer


class HostFailed(RuntimeError):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"device host {host!r} failed: {reason}")
        self.host = host


class HostHandle(Protocol):
    name: str

    async def start(self) -> Report: ...

    async def advance(self, end_ps: int, expect_from: dict[str, int]) -> Report: ...

    async def results(self) -> dict[str, Any]: ...


@dataclass
class RunOutcome:
    host_results: dict[str, dict[str, Any]]
    windows: int
    wall_seconds: float
    end_ps: int
    error: str | None = None
    failed_host: str | None = None


class Coordinator:
    def __init__(self, scenario: Scenario, plan: Plan, hosts: list[HostHandle]) -> None:
        self.scenario = scenario
        self.plan = plan
        self.hosts = hosts
        self.windows = 0
        self.end_ps = 0

    async def run(self) -> RunOutcome:
        t0 = time.perf_counter()
        duration = self.scenario.duration_ps
        lookahead = self.plan.lookahead_ps
        reports = await self._all(h.start() for h in self.hosts)
        while True:
            t = min(min(r.next_ps, r.min_sent_arrival_ps) for r in reports)
            if t >= duration:
                break
            end = duration if lookahead is None else min(t + lookahead, duration)
            reports = await self._window(end, reports)
        # a last window to the run's end: samples up to the end, faults before it
        await self._window(duration, reports)
        results = await self._all(h.results() for h in self.hosts)
        return RunOutcome({h.name: r for h, r in zip(self.hosts, results, strict=True)}, self.windows,
                          time.perf_counter() - t0, self.end_ps)

    async def _window(self, end: int, reports: list[Report]) -> list[Report]:
        # per receiving host, per sending peer: what the peer has sent it so far
        expect: dict[str, dict[str, int]] = {h.name: {} for h in self.hosts}
        for sender, r in zip(self.hosts, reports, strict=True):
            for peer, n in r.sent_total.items():
                expect[peer][sender.name] = n
        self.windows += 1
        self.end_ps = end
        return await self._all(h.advance(end, expect[h.name]) for h in self.hosts)

    @staticmethod
    async def _all(calls: Any) -> list[Any]:
        return list(await asyncio.gather(*calls))

