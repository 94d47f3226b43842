"""Runs a GPU server's ranks of the job, one iteration at a time, on CUDA-like streams: an op starts
when it is at the head of its stream and every op it depends on has finished. Compute takes
flops / (peak x MFU); sends, receives and collectives go to the server's transports
(:mod:`.transports`, :mod:`.collectives`); every communication op is watched by the watchdog."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from emulators.ccl.nccl import p2p_comm
from emulators.gpu_server.clock import Clock, call
from emulators.gpu_server.collectives import CollectiveNet, CollectiveRun
from emulators.gpu_server.gpus import compute_ps
from emulators.gpu_server.rank import Rank, timeline_iteration
from emulators.model.job import COLLECTIVE, COMPUTE, DIMENSIONS, RECV, SEND, JobAttempt, JobPlan, iteration_serial

COMM_KINDS = (SEND, COLLECTIVE)  # what counts as communication time (a recv only waits)


class OpWatch(Protocol):
    """The watchdog over communication ops (:class:`~emulators.gpu_server.watchdog.Watchdog`)."""

    def started(self, rank: int, op: int, label: str) -> None: ...

    def finished(self, rank: int, op: int) -> None: ...


class JobReports(Protocol):
    """What the ranks tell the job's control plane (:class:`~emulators.gpu_server.control.JobControl`)."""

    def rank_finished(self, rank: int) -> None: ...

    def rank_saved(self, rank: int, iteration: int) -> None: ...


class ProgramRunner:
    def __init__(self, clock: Clock, plan: JobPlan, ranks: Mapping[int, Rank], job: JobAttempt, net: CollectiveNet,
                 watchdog: OpWatch, reports: JobReports, peak_flops_per_s: float, mfu: float,
                 counters: dict[str, int]) -> None:
        self.clock = clock
        self.plan = plan
        self.ranks = ranks
        self.job = job
        self.net = net
        self.watchdog = watchdog
        self.reports = reports
        self.peak_flops_per_s = peak_flops_per_s
        self.mfu = mfu
        self.counters = counters
        self.timeline_iteration = timeline_iteration(plan)

    def start(self) -> None:
        for rank in self.ranks.values():
            self.clock.at(self.plan.start_ps, self.begin_iteration, (rank, rank.epoch))

    # -- iterations -------------------------------------------------------------------------------
    def begin_iteration(self, rank_epoch: tuple[Rank, int]) -> None:
        rank, epoch = rank_epoch
        if epoch != rank.epoch:
            return
        rank.serial = iteration_serial(self.job.number, rank.iteration, self.plan.iterations)
        rank.pending = [len(op.deps) for op in rank.program]
        rank.queues = {stream: deque(ops) for stream, ops in rank.stream_order.items()}
        rank.busy = set()
        rank.finished_ops = 0
        rank.started_ps = self.clock.now
        if rank.iteration == self.timeline_iteration:
            rank.timeline = []  # the latest attempt at it is the one shown
        for stream in rank.queues:
            self._try_start(rank, stream)

    def _end_iteration(self, rank: Rank) -> None:
        plan = self.plan
        now = self.clock.now
        rank.iterations.append([rank.iteration, self.job.number, rank.started_ps, now])
        self.counters["iterations_done"] += 1
        finished = rank.iteration
        rank.iteration += 1
        if rank.iteration == plan.iterations:  # the job is over once every rank is: a failure after that is not its
            self.reports.rank_finished(rank.rank)
        if plan.checkpoint_every and (finished + 1) % plan.checkpoint_every == 0:
            self.clock.at(now + plan.checkpoint_save_ps, self._saved, (rank, rank.epoch, finished))
        elif rank.iteration < plan.iterations:
            self.clock.at(now, self.begin_iteration, (rank, rank.epoch))

    def _saved(self, args: tuple[Rank, int, int]) -> None:
        rank, epoch, iteration = args
        if epoch != rank.epoch:
            return
        self.reports.rank_saved(rank.rank, iteration)
        if rank.iteration < self.plan.iterations:
            self.begin_iteration((rank, rank.epoch))

    # -- ops --------------------------------------------------------------------------------------
    def _try_start(self, rank: Rank, stream: str) -> None:
        if stream in rank.busy:
            return
        queue = rank.queues[stream]
        if not queue or rank.pending[queue[0]]:
            return
        index = queue.popleft()
        rank.busy.add(stream)
        self._start_op(rank, index)

    def _start_op(self, rank: Rank, index: int) -> None:
        op = rank.program[index]
        clock = self.clock
        now = clock.now
        rank.op_start[index] = now
        epoch = rank.epoch

        def done() -> None:
            if rank.epoch == epoch:
                self._finish_op(rank, index)

        kind = op.kind
        if kind == COMPUTE:
            rank.activity(now, compute=1)
            duration = compute_ps(op.flops, self.peak_flops_per_s, self.mfu)
            self.counters["gpu_compute_ps"] += duration
            clock.at(now + duration, call, done)
            return
        self.watchdog.started(rank.rank, index, op.label or op.kind)
        net = self.net
        if kind == SEND:
            rank.activity(now, comm=1)
            net.transfer(rank, op.peer, op.nbytes, rank.message(tag=op.tag), op.dim, done, _p2p(op.dim))
        elif kind == RECV:
            if net.receive(rank, op.peer, op.nbytes, rank.message(src=op.peer, tag=op.tag), _p2p(op.dim), done):
                clock.at(now, call, done)  # an event, not a nested call: chains of ready ops stay flat
        else:
            rank.activity(now, comm=1)
            CollectiveRun(net, rank, op, self.plan.groups[op.group], done).start()

    def _finish_op(self, rank: Rank, index: int) -> None:
        op = rank.program[index]
        now = self.clock.now
        if op.kind == COMPUTE:
            rank.activity(now, compute=-1)
        else:
            self.watchdog.finished(rank.rank, index)
            if op.kind in COMM_KINDS:
                rank.activity(now, comm=-1)
        if rank.iteration == self.timeline_iteration:
            rank.timeline.append([op.label or op.kind, op.kind, op.dim, rank.op_start[index], now])
        rank.busy.discard(op.stream)
        rank.finished_ops += 1
        pending = rank.pending
        program = rank.program
        for dependent in rank.dependents[index]:
            pending[dependent] -= 1
            if not pending[dependent]:
                self._try_start(rank, program[dependent].stream)
        self._try_start(rank, op.stream)
        if rank.finished_ops == len(program):
            self._end_iteration(rank)

    # -- abort and restart ------------------------------------------------------------------------
    def stop(self, restart_iteration: int) -> None:
        """Every rank stops where it is, to go back to ``restart_iteration``; its callbacks under way do nothing."""
        now = self.clock.now
        for rank in self.ranks.values():
            rank.activity(now)
            rank.epoch += 1
            rank.computing = rank.communicating = 0
            rank.iteration = restart_iteration

    def resume(self) -> None:
        now = self.clock.now
        for rank in self.ranks.values():
            rank.since = now
            self.begin_iteration((rank, rank.epoch))

    # -- results ----------------------------------------------------------------------------------
    def gpu_busy_ps(self, gpus: int) -> dict[int, int]:
        """Compute time of each GPU so far, up to now (a compute op under way counts as far as it ran)."""
        now = self.clock.now
        busy = dict.fromkeys(range(gpus), 0)
        for rank in self.ranks.values():
            busy[rank.gpu] += rank.compute_ps + (now - rank.since if rank.computing else 0)
        return busy

    def results(self) -> dict[str, Any]:
        now = self.clock.now
        for rank in self.ranks.values():
            rank.activity(now)
        return {
            str(r.rank): {
                "gpu": r.gpu, "iterations": r.iterations, "compute_ps": r.compute_ps, "comm_ps": r.comm_ps,
                "exposed_ps": r.exposed_ps, "timeline": r.timeline,
            }
            for r in self.ranks.values()
        }


def _p2p(dim: str) -> int:
    """The p2p communicator of a dimension's sends and receives (tp, pp, dp, ep; others share tp's)."""
    return p2p_comm(DIMENSIONS.index(dim) if dim in DIMENSIONS else 0)
