"""The training framework's watchdog over communication (PyTorch's ProcessGroupNCCL): a collective or
p2p op that has not finished ``timeout`` after it started aborts the job.

One timer per server, armed for the oldest op still running: ops start in time order, so the oldest
is the first in insertion order, and the timer costs one event per timeout's worth of virtual time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulators.kernel.vtime import NEVER
from emulators.rdma.retry import format_ps

if TYPE_CHECKING:
    from emulators.gpu_server.device import GpuServer


class Watchdog:
    def __init__(self, server: GpuServer, timeout_ps: int) -> None:
        self.server = server
        self.timeout_ps = timeout_ps
        self.running: dict[tuple[int, int], tuple[int, str]] = {}  # (rank, op) -> (started, label), oldest first
        self.armed_at = NEVER
        self.fired = 0

    def started(self, rank: int, op: int, label: str) -> None:
        now = self.server.now
        self.running[(rank, op)] = (now, label)
        if self.armed_at == NEVER:
            self._arm(now + self.timeout_ps)

    def finished(self, rank: int, op: int) -> None:
        self.running.pop((rank, op), None)

    def clear(self) -> None:
        self.running.clear()

    def _arm(self, at_ps: int) -> None:
        self.armed_at = at_ps
        self.server.at(at_ps, self._check)

    def _check(self, _: object = None) -> None:
        self.armed_at = NEVER
        if not self.running:
            return
        (rank, _op), (started, label) = next(iter(self.running.items()))
        now = self.server.now
        if now - started < self.timeout_ps:
            self._arm(started + self.timeout_ps)
            return
        self.fired += 1
        self.running.clear()
        server = self.server
        if not server.job.aborted:
            waited = format_ps(self.timeout_ps)
            server.abort_job("watchdog", f"watchdog: {label} on rank {rank} not done after {waited} "
                                         "(ProcessGroupNCCL timeout)")
