"""The training framework's watchdog over communication (PyTorch's ProcessGroupNCCL): a collective or
p2p op that has not finished ``timeout`` after it started aborts the job.

One timer per server, armed for the oldest op still running: ops start in time order, so the oldest
is the first in insertion order, and the timer costs one event per timeout's worth of virtual time.
"""

from __future__ import annotations

from collections.abc import Callable

from emulators.gpu_server.clock import Clock
from emulators.kernel.vtime import NEVER
from emulators.model.job import JobAttempt
from emulators.rdma.retry import format_ps


class Watchdog:
    def __init__(self, clock: Clock, timeout_ps: int, job: JobAttempt, abort_job: Callable[[str, str], None]) -> None:
        self.clock = clock
        self.timeout_ps = timeout_ps
        self.job = job
        self.abort_job = abort_job  # (kind, cause): tell every server the attempt failed
        self.running: dict[tuple[int, int], tuple[int, str]] = {}  # (rank, op) -> (started, label), oldest first
        self.armed_at = NEVER
        self.fired = 0

    def started(self, rank: int, op: int, label: str) -> None:
        now = self.clock.now
        self.running[(rank, op)] = (now, label)
        if self.armed_at == NEVER:
            self._arm(now + self.timeout_ps)

    def finished(self, rank: int, op: int) -> None:
        self.running.pop((rank, op), None)

    def clear(self) -> None:
        self.running.clear()

    def _arm(self, at_ps: int) -> None:
        self.armed_at = at_ps
        self.clock.at(at_ps, self._check)

    def _check(self, _: object = None) -> None:
        self.armed_at = NEVER
        if not self.running:
            return
        (rank, _op), (started, label) = next(iter(self.running.items()))
        now = self.clock.now
        if now - started < self.timeout_ps:
            self._arm(started + self.timeout_ps)
            return
        self.fired += 1
        self.running.clear()
        if not self.job.aborted:
            waited = format_ps(self.timeout_ps)
            self.abort_job("watchdog", f"watchdog: {label} on rank {rank} not done after {waited} "
                                       "(ProcessGroupNCCL timeout)")
