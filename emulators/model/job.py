"""Per-rank programs: what a training job asks of each GPU, one iteration at a time.

The orchestrator's workload generator (orchestrator.workload) writes a :class:`JobPlan`; GPU servers
run it. A program is a list of :class:`Op`; an op's id is its index. Ops on one stream run in program
order, one at a time (a CUDA stream); an op starts when it is at the head of its stream and every op
in ``deps`` has finished. So communication on its own stream overlaps computation wherever the
dependencies allow, and nowhere else.

Sizes: ``nbytes`` of a send/recv is the message; of a collective it is the whole buffer S (the input
of an all-reduce or reduce-scatter, the output of an all-gather, everything one rank sends in an
all-to-all, its own share included).

Messages that cross a NIC carry an id (the RDMA flow) that both ends compute alike
(:func:`message_id`): the run-wide iteration serial, the sending rank, then the p2p tag or the
collective's id and step.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import msgspec

COMPUTE, SEND, RECV, COLLECTIVE = "compute", "send", "recv", "collective"
ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, ALL_TO_ALL = "all-reduce", "reduce-scatter", "all-gather", "all-to-all"
COLLECTIVES = (ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, ALL_TO_ALL)
TP, PP, DP, EP = "tp", "pp", "dp", "ep"
DIMENSIONS = (TP, PP, DP, EP)
RING, HIERARCHICAL = "ring", "hierarchical"
NCCL, IDEAL = "nccl", "ideal"  # job transports between servers: NCCL over RC QPs, or one idealised QP per message
TRANSPORTS = (NCCL, IDEAL)
# PyTorch's ProcessGroupNCCL watchdog (torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp,
# kProcessGroupNCCLDefaultTimeout): a collective or p2p op not done after 10 minutes aborts the job
DEFAULT_WATCHDOG_PS = 10 * 60 * 10**12

# message ids: serial (16 bits) | sending rank (16) | kind (1) | p2p tag (30) or collective id (18) + step (12)
SERIAL_BITS, RANK_BITS, CID_BITS, STEP_BITS, TAG_BITS = 16, 16, 18, 12, 30
MAX_RANKS = 1 << RANK_BITS
MAX_COLLECTIVES = 1 << CID_BITS  # per iteration, job-wide
MAX_STEPS = 1 << STEP_BITS
MAX_TAGS = 1 << TAG_BITS  # p2p sends per sending rank per iteration
MAX_SERIALS = 1 << SERIAL_BITS


@dataclass(frozen=True)
class Op:
    kind: str  # compute | send | recv | collective
    stream: str  # ops on one stream run in order, one at a time
    deps: tuple[int, ...] = ()  # ids (indices) of earlier ops of this program
    flops: int = 0  # compute: floating-point operations
    nbytes: int = 0  # send/recv: the message; collective: the buffer S
    peer: int = -1  # send/recv: the other rank
    tag: int = 0  # send/recv: equal on both ends, unique per sending rank in an iteration
    collective: str = ""  # all-reduce | reduce-scatter | all-gather | all-to-all
    group: int = -1  # collective: index into JobPlan.groups
    cid: int = -1  # collective: the instance's id, equal on every member, unique in the iteration
    dim: str = ""  # tp | pp | dp | ep: what the traffic is accounted to
    label: str = ""  # shown on timelines, e.g. "F3" (forward of micro-batch 3), "B3", "dp-ar"


@dataclass(frozen=True)
class RankPlace:
    device: str  # the GPU server
    gpu: int  # GPU index on it (its NIC is the server's NIC of that index)


@dataclass(frozen=True)
class JobPlan:
    """Everything a GPU server needs to run its ranks, identical on every host."""

    model: str
    parallel: dict[str, int]  # tp, pp, dp, ep
    ranks: tuple[RankPlace, ...]  # rank -> where it runs
    groups: tuple[tuple[int, ...], ...]  # collective groups: member ranks in ring order
    programs: tuple[tuple[Op, ...], ...]  # per rank: one iteration
    iterations: int
    tokens_per_iteration: int
    flops_per_iteration: int  # the whole job's, forward and backward
    start_ps: int = 0
    algorithm: str = RING  # inter-server collectives: ring, or hierarchical (intra-server, then across)
    checkpoint_every: int = 0  # iterations between checkpoints; 0: none
    checkpoint_save_ps: int = 0  # each rank's save blocks its streams this long
    restart: bool = True  # after an interruption, restart from the last checkpoint (else stop)
    restart_ps: int = 0  # from the abort to the first iteration of the restarted job
    detect_ps: int = 0  # from a failure to every rank aborting (the job's control plane)
    transport: str = NCCL  # how ranks on different servers talk: nccl or ideal
    nccl: dict[str, int] = field(default_factory=dict)  # the job's NCCL settings (emulators.ccl.settings)
    watchdog_ps: int = DEFAULT_WATCHDOG_PS  # a communication op stalled this long aborts the job
    info: dict[str, Any] = field(default_factory=dict)  # what the generator derived (for results)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready builtins; each op keeps only its kind, stream and non-default fields."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["programs"] = [[_compact(row) for row in program] for program in out["programs"]]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobPlan:
        plan: JobPlan = msgspec.convert(d, cls)
        return plan

    def ranks_on(self, device: str) -> list[int]:
        return [r for r, place in enumerate(self.ranks) if place.device == device]


# an op field's default as a row holds it, for the fields that have one (kind and stream always travel)
_OP_DEFAULTS = msgspec.to_builtins({f.name: f.default for f in fields(Op) if f.default is not MISSING})
_NO_DEFAULT = object()


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """An op's row without its default fields (programs are long: keep them compact)."""
    return {name: value for name, value in row.items() if _OP_DEFAULTS.get(name, _NO_DEFAULT) != value}


SERIAL_SHIFT = RANK_BITS + 1 + TAG_BITS  # a message id's serial is its bits from here up


class JobAttempt:
    """A device's replica of where the job stands, kept from the job's bus: the attempt under way,
    whether it has been aborted (until it restarts, or for good), and which ranks have finished it.
    Every device hears the same messages at the same virtual times, so every replica agrees."""

    def __init__(self, ranks: int) -> None:
        self.ranks = ranks
        self.number = 0
        self.aborted = False
        self.finished: set[int] = set()

    def current(self, payload: dict[str, Any]) -> bool:
        """Whether a bus message is news of the attempt under way."""
        return payload["attempt"] == self.number and not self.aborted

    @property
    def over(self) -> bool:
        """Every rank has finished its last iteration: a failure now is not the job's."""
        return len(self.finished) == self.ranks

    def hear(self, payload: dict[str, Any]) -> bool:
        """Take a bus message: True for an abort of the attempt under way, which is then aborted."""
        if not self.current(payload):
            return False
        if payload["type"] == "finished":
            self.finished.add(payload["rank"])
        elif payload["type"] == "abort" and not self.over:
            self.aborted = True
            self.finished.clear()
            return True
        return False

    def restart(self) -> None:
        self.number += 1
        self.aborted = False


def iteration_serial(attempt: int, iteration: int, iterations: int) -> int:
    """The run-wide number of an iteration of an attempt, from 1 (so a job's message ids never collide
    with a scenario's flow indices), wrapping after MAX_SERIALS - 1."""
    return 1 + (attempt * iterations + iteration) % (MAX_SERIALS - 1)


def with_sender(uid: int, rank: int) -> int:
    """Message id ``uid`` as if sent by ``rank`` (an in-network collective's result for that rank)."""
    shift = 1 + TAG_BITS
    return (uid & ~((MAX_RANKS - 1) << shift)) | (rank << shift)


def message_id(serial: int, src_rank: int, *, tag: int = -1, cid: int = -1, step: int = 0) -> int:
    """The RDMA flow id of one message: a p2p send (``tag``) or one step of a collective (``cid``)."""
    head = (serial << SERIAL_SHIFT) | (src_rank << (1 + TAG_BITS))
    if cid >= 0:
        return head | (1 << TAG_BITS) | (cid << STEP_BITS) | step
    return head | tag
