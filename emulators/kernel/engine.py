"""The event engine: one heap, one clock, nothing else.

Events are tuples ``(time_ps, origin_device_id, origin_seq, handler, arg)``. The first three are
unique, so ordering never falls through to the handler and never depends on insertion order or on
which devices share this engine: that is what makes every partition of a scenario behave alike.
Only the engine pushes onto its heap (``schedule``, ``schedule_planned``).

Besides events the engine keeps a *timeline* of scenario changes (faults) and of sample times, at
which it calls back whoever asked for samples (``sample_every``). Both are taken before any event at
or after their time: a sample at T sees the state after all events < T; a change at T is in force
for the events at T.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

from emulators.kernel.vtime import NEVER

Event = tuple[int, int, int, Callable[[Any], None], Any]

PLANNED_KEYS = 1 << 62  # planned events take sequence numbers below 0, ahead of every origin's own


class Engine:
    def __init__(self) -> None:
        self.now = 0
        self.heap: list[Event] = []
        self.events = 0
        self._changes: list[tuple[int, int, Callable[[], None]]] = []  # (time, index, apply), sorted
        self._change_keys: set[tuple[int, int]] = set()
        self._next_change = 0  # index into _changes
        self._sample: Callable[[int], None] | None = None
        self._sample_interval_ps = 0
        self._next_sample = NEVER

    # -- set-up -----------------------------------------------------------------------------------
    def add_change(self, at_ps: int, index: int, apply: Callable[[], None]) -> None:
        """A scenario change (fault) applied at ``at_ps``; ``index`` orders changes at equal times and
        is unique among them (so every host orders them alike)."""
        if (at_ps, index) in self._change_keys:
            raise ValueError(f"a change at {at_ps} ps with index {index} is already on the timeline")
        self._change_keys.add((at_ps, index))
        insort(self._changes, (at_ps, index, apply), key=lambda c: (c[0], c[1]))

    def sample_every(self, interval_ps: int, sample: Callable[[int], None]) -> None:
        """Call ``sample(t)`` at t = 0, ``interval_ps``, 2·``interval_ps``…: after every event before t,
        before any change or event at t, and at the end of a run that stops at t."""
        if interval_ps <= 0:
            raise ValueError(f"a sample interval must be above 0 ps, not {interval_ps}")
        self._sample = sample
        self._sample_interval_ps = interval_ps
        self._next_sample = 0

    def schedule(self, time_ps: int, origin: int, seq: int, handler: Callable[[Any], None], arg: Any) -> None:
        """``handler(arg)`` at ``time_ps``, ordered among events at that time by (``origin``, ``seq``):
        each origin numbers its events itself, so the pair is unique."""
        heappush(self.heap, (time_ps, origin, seq, handler, arg))

    def schedule_planned(self, time_ps: int, origin: int, key: int, handler: Callable[[Any], None],
                         arg: Any) -> None:
        """``handler(arg)`` at ``time_ps`` ahead of ``origin``'s ``schedule``d events at that time,
        ordered by ``key`` (>= 0, unique per origin and time among these): its place does not depend
        on when it was scheduled."""
        heappush(self.heap, (time_ps, origin, key - PLANNED_KEYS, handler, arg))

    # -- running ----------------------------------------------------------------------------------
    def next_time(self) -> int:
        """Earliest time at which something happens here: an event or a scenario change."""
        t = self.heap[0][0] if self.heap else NEVER
        if self._next_change < len(self._changes):
            t = min(t, self._changes[self._next_change][0])
        return t

    def _next_timeline(self) -> int:
        change = self._changes[self._next_change][0] if self._next_change < len(self._changes) else NEVER
        return min(change, self._next_sample)

    def run_until(self, end_ps: int) -> int:
        """Process every event with time < ``end_ps``. Returns the number of events processed."""
        heap = self.heap
        pop = heappop
        timeline = self._next_timeline()
        n = 0
        while True:
            limit = min(timeline, end_ps)
            while heap and heap[0][0] < limit:  # the hot loop: events only, one comparison each
                t, _, _, handler, arg = pop(heap)
                self.now = t
                handler(arg)
                n += 1
            # ties go to the timeline: changes at T are in force for events at T
            if timeline >= end_ps:
                break
            self._timeline_at(timeline)
            timeline = self._next_timeline()
        self._samples_through(end_ps)  # a sample at T == end sees all events < end
        self.events += n
        return n

    def _timeline_at(self, t: int) -> None:
        self._samples_through(t)  # samples first: a sample at T shows the state before T
        changes = self._changes
        while self._next_change < len(changes) and changes[self._next_change][0] <= t:
            _, _, apply = changes[self._next_change]
            self._next_change += 1
            self.now = t
            apply()

    def _samples_through(self, t: int) -> None:
        while self._next_sample <= t:
            at = self._next_sample
            assert self._sample is not None  # _next_sample is NEVER until sample_every
            self._sample(at)
            self._next_sample = at + self._sample_interval_ps

    def pending(self) -> list[Event]:
        return self.heap
