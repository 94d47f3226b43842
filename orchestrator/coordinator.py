"""The virtual clock: conservative, window-synchronous execution across hosts.

Each window starts at the global minimum of every host's next event and of every frame in flight
between hosts, and ends ``lookahead`` later (or at the run's end). Every host processes its events
before the window end and sends its cross-host frames, which by construction arrive at or after the
window end; a host starts the next window only once it holds every frame each peer sent it so far
(counted per peer: a peer already running the next window may have sent more).
Job control bus messages travel with the clock: a host reports what it posted, and the coordinator
hands each message to every other host with its next window, which by the same lookahead argument
ends at or before the message is due.
Single-host plans run in one window, or, when someone watches the progress, in at most
``PROGRESS_WINDOWS`` slices of equal virtual length (window ends change nothing in what is simulated).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from emulators.kernel.vtime import NEVER
from emulators.runtime import BusMessage
from emulators.topology import Scenario
from orchestrator.partition import Plan

log = structlog.get_logger("coordinator")

PROGRESS_WINDOWS = 200  # most windows of a single-host run with a progress callback


@dataclass
class Report:
    """A host's answer at the end of a window."""

    next_ps: int  # its next local event (or NEVER)
    min_sent_arrival_ps: int  # earliest arrival among frames it sent this window (or NEVER)
    sent_total: dict[str, int] = field(default_factory=dict)  # cumulative frames sent to each peer
    bus: list[BusMessage] = field(default_factory=list)  # bus messages posted there since its last report

    def earliest_ps(self) -> int:
        """The first time this report says something happens: the next window may not start later."""
        return min(self.next_ps, self.min_sent_arrival_ps, min((m[0] for m in self.bus), default=NEVER))


class HostFailed(RuntimeError):
    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"device host {host!r} failed: {reason}")
        self.host = host


class HostHandle(Protocol):
    name: str

    async def start(self) -> Report: ...

    async def advance(self, end_ps: int, expect_from: dict[str, int], bus: list[BusMessage]) -> Report:
        """Schedule ``bus`` (other hosts' messages), then run every event before ``end_ps``."""
        ...

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
    """Drives ``hosts`` through the run; ``progress(end_ps)`` (if given) hears of every window's end."""

    def __init__(self, scenario: Scenario, plan: Plan, hosts: list[HostHandle],
                 progress: Callable[[int], None] | None = None) -> None:
        self.scenario = scenario
        self.plan = plan
        self.hosts = hosts
        self.progress = progress
        self.windows = 0
        self.end_ps = 0

    async def run(self) -> RunOutcome:
        t0 = time.perf_counter()
        duration = self.scenario.duration_ps
        reports = await self._all(h.start() for h in self.hosts)
        while True:
            t = min(r.earliest_ps() for r in reports)
            if t >= duration:
                break
            reports = await self._window(self._window_end(t), reports)
        # a last window to the run's end: samples up to the end, faults before it
        await self._window(duration, reports)
        results = await self._all(h.results() for h in self.hosts)
        return RunOutcome({h.name: r for h, r in zip(self.hosts, results, strict=True)}, self.windows,
                          time.perf_counter() - t0, self.end_ps)

    def _window_end(self, t: int) -> int:
        duration = self.scenario.duration_ps
        lookahead = self.plan.lookahead_ps
        if lookahead is not None:
            return min(t + lookahead, duration)
        if self.progress is None:
            return duration
        # slices on a fixed grid: equal lengths, and idle stretches are skipped like any window
        step = -(-duration // PROGRESS_WINDOWS)
        return min((t // step + 1) * step, duration)

    async def _window(self, end: int, reports: list[Report]) -> list[Report]:
        # per receiving host, per sending peer: what the peer has sent it so far
        expect: dict[str, dict[str, int]] = {h.name: {} for h in self.hosts}
        # per receiving host: every other host's bus messages
        bus: dict[str, list[BusMessage]] = {h.name: [] for h in self.hosts}
        for sender, r in zip(self.hosts, reports, strict=True):
            for peer, n in r.sent_total.items():
                expect[peer][sender.name] = n
            for h in self.hosts:
                if h.name != sender.name:
                    bus[h.name].extend(r.bus)
        self.windows += 1
        self.end_ps = end
        reports = await self._all(h.advance(end, expect[h.name], bus[h.name]) for h in self.hosts)
        if self.progress is not None:
            self.progress(end)
        return reports

    @staticmethod
    async def _all(calls: Any) -> list[Any]:
        return list(await asyncio.gather(*calls))

