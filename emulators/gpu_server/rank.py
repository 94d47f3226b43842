"""One GPU's share of the job: its program, where it is in it, and what it measured."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from emulators.model.job import Op, message_id

if TYPE_CHECKING:
    from emulators.model.job import JobPlan
    from emulators.rdma.nic import RdmaNic


class Rank:
    def __init__(self, rank: int, gpu: int, program: tuple[Op, ...], nic: RdmaNic | None) -> None:
        self.rank = rank
        self.gpu = gpu
        self.program = program
        self.nic = nic
        self.dependents: list[list[int]] = [[] for _ in program]
        for index, op in enumerate(program):
            for dep in op.deps:
                self.dependents[dep].append(index)
        self.stream_order: dict[str, list[int]] = {}
        for index, op in enumerate(program):
            self.stream_order.setdefault(op.stream, []).append(index)
        # where the rank is
        self.epoch = 0  # bumped on abort: callbacks of an older epoch do nothing
        self.iteration = 0
        self.serial = 0
        self.pending: list[int] = []
        self.queues: dict[str, deque[int]] = {}
        self.busy: set[str] = set()
        self.finished_ops = 0
        self.started_ps = 0
        self.op_start: list[int] = [0] * len(program)
        # activity: compute and communication in progress, and the time each was busy
        self.computing = 0
        self.communicating = 0
        self.since = 0
        self.compute_ps = 0
        self.comm_ps = 0
        self.exposed_ps = 0  # communicating while not computing
        self.iterations: list[list[int]] = []  # [iteration, attempt, start_ps, end_ps]
        self.timeline: list[list[Any]] = []  # [label, kind, dim, start_ps, end_ps] of one iteration

    def activity(self, now: int, compute: int = 0, comm: int = 0) -> None:
        """Account the time since the last change to what was going on, then apply the change."""
        elapsed = now - self.since
        if elapsed:
            if self.computing:
                self.compute_ps += elapsed
            if self.communicating:
                self.comm_ps += elapsed
                if not self.computing:
                    self.exposed_ps += elapsed
        self.since = now
        self.computing += compute
        self.communicating += comm

    def message(self, *, src: int = -1, tag: int = -1, cid: int = -1, step: int = 0) -> int:
        """The id of a message of this rank's current iteration sent by ``src`` (default: this rank)."""
        return message_id(self.serial, self.rank if src < 0 else src, tag=tag, cid=cid, step=step)


def timeline_iteration(plan: JobPlan) -> int:
    """The iteration whose timeline and bytes the results show."""
    return min(1, plan.iterations - 1)
