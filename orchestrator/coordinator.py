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

Paced runs (``pace``: virtual seconds per wall second) hold virtual time at wall time x pace: windows
are cut at most ``PACE_TICK_S`` of wall time long, and a window starts only once the wall clock has
reached its end divided by the pace. A run that cannot keep up runs as fast as it can and reports by
how much it fell behind. The wall clock only decides when a window starts, never what happens in it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from emulators.kernel.vtime import NEVER
from emulators.model.faults import LinkChange
from emulators.model.scenario import Scenario
from emulators.runtime import BusMessage, fault_input
from orchestrator.partition import Plan

log = structlog.get_logger("coordinator")

PROGRESS_WINDOWS = 200  # most windows of a single-host run with a progress callback
PACE_TICK_S = 0.05  # the longest window of a paced run, in wall seconds: how often counters move

T = TypeVar("T")


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


async def gather_all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await ``calls`` together. The first to fail cancels the others, which have ended when its
    exception is raised: nothing goes on using a host's streams after the run has stopped."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        raise


class HostHandle(Protocol):
    name: str

    async def start(self) -> Report: ...

    async def advance(self, end_ps: int, expect_from: dict[str, int], bus: list[BusMessage],
                      start_ps: int = 0) -> Report:
        """Schedule ``bus`` (other hosts' messages), then run every event before ``end_ps``; the window
        starts at ``start_ps`` (nothing anywhere happens earlier)."""
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
    behind_s: float = 0.0  # paced runs: the most the run fell behind wall time x pace
    injected: list[LinkChange] = field(default_factory=list)  # faults injected while it ran
    interrupted_by: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run


class Coordinator:
    """Drives ``hosts`` through the run; ``progress(end_ps)`` (if given) hears of every window's end."""

    def __init__(self, scenario: Scenario, plan: Plan, hosts: Sequence[HostHandle],
                 progress: Callable[[int], None] | None = None, pace: float | None = None) -> None:
        self.scenario = scenario
        self.plan = plan
        self.hosts = list(hosts)
        self.progress = progress
        self.pace = pace
        self.windows = 0
        self.end_ps = 0
        self.reached_ps = 0  # every host has run every event before it (end_ps: the window going on)
        self.behind_s = 0.0
        self._started = 0.0
        self.running = False
        self.injected: list[LinkChange] = []  # faults injected while the run goes, in order
        self._pending: list[BusMessage] = []  # injected faults not yet handed to the hosts

    async def run(self) -> RunOutcome:
        t0 = self._started = time.perf_counter()
        duration = self.scenario.duration_ps
        reports = await gather_all(h.start() for h in self.hosts)
        self.running = True
        while True:
            t = self._next_start(reports)
            if t >= duration:
                break
            end = self._window_end(t)
            if self.pace is not None:
                await self._hold(end)
                # a fault injected while we waited may be due before t: start there (a window may
                # always start early, never late)
                t = self._next_start(reports)
                end = min(end, self._window_end(t))
            reports = await self._window(t, end, reports)
        # a last window to the run's end: samples up to the end, faults before it
        await self._window(min(t, duration), duration, reports)
        self.running = False
        results = await gather_all(h.results() for h in self.hosts)
        return RunOutcome({h.name: r for h, r in zip(self.hosts, results, strict=True)}, self.windows,
                          time.perf_counter() - t0, self.end_ps, behind_s=self.behind_s,
                          injected=list(self.injected))

    def _next_start(self, reports: list[Report]) -> int:
        t = min(r.earliest_ps() for r in reports)
        t = min(t, min((m[0] for m in self._pending), default=NEVER))
        if self.pace is not None:  # paced: time flows evenly, idle stretches too
            t = min(t, self.end_ps)
        return t

    def inject(self, faults: list[LinkChange]) -> None:
        """Faults to apply at their virtual times (at or after ``end_ps``, the virtual time reached):
        every host gets them with the next window."""
        for fault in faults:
            if fault.at_ps < self.end_ps:
                raise ValueError(f"fault {fault.index} is due at {fault.at_ps} ps, before the virtual time "
                                 f"reached ({self.end_ps} ps)")
        self.injected.extend(faults)
        self._pending.extend(fault_input(f) for f in faults)

    def _window_end(self, t: int) -> int:
        duration = self.scenario.duration_ps
        end = self._unpaced_end(t)
        if self.pace is not None:  # on a grid of ticks, like progress slices
            tick = max(1, int(PACE_TICK_S * self.pace * 1e12))
            end = min(end, (t // tick + 1) * tick, duration)
        return end

    def _unpaced_end(self, t: int) -> int:
        duration = self.scenario.duration_ps
        lookahead = self.plan.lookahead_ps
        if lookahead is not None:
            return min(t + lookahead, duration)
        if self.progress is None:
            return duration
        # slices on a fixed grid: equal lengths, and idle stretches are skipped like any window
        step = -(-duration // PROGRESS_WINDOWS)
        return min((t // step + 1) * step, duration)

    async def _window(self, start: int, end: int, reports: list[Report]) -> list[Report]:
        """Run every host from ``start`` (nothing happens anywhere before it) to ``end``."""
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
        for h in self.hosts:  # what was injected until now; nothing is awaited from here to the advance
            bus[h.name].extend(self._pending)
        self._pending = []
        self.windows += 1
        self.end_ps = end
        reports = await gather_all(h.advance(end, expect[h.name], bus[h.name], start) for h in self.hosts)
        self.reached_ps = end
        if self.progress is not None:
            self.progress(end)
        return reports

    async def _hold(self, end_ps: int) -> None:
        """Wait until wall time x pace reaches ``end_ps``: virtual time never runs ahead of it."""
        assert self.pace is not None
        due_s = end_ps / 1e12 / self.pace
        now_s = time.perf_counter() - self._started
        if now_s < due_s:
            await asyncio.sleep(due_s - now_s)
        else:
            self.behind_s = max(self.behind_s, now_s - due_s)

