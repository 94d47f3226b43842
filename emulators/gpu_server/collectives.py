"""The collective library: one rank's part of a collective, decomposed into messages.

- All members on one server: the scale-up mesh in closed form. A ring over g GPUs moves
  ceil(S/g) bytes per step: all-reduce 2(g-1) steps, reduce-scatter and all-gather g-1, each step
  one serialisation at the mesh's per-GPU bandwidth plus its latency; all-to-all sends g-1 pieces
  back to back and pays the latency once. The members' scale-up egress is busy for that long.
- Otherwise a ring in group order: step k sends piece k to the next member and waits for the
  previous member's piece k before step k+1 (reduce-scatter n-1 steps, then all-gather n-1 for an
  all-reduce). Each hop rides the scale-up mesh or the NICs, whichever joins the two GPUs. Every
  step's receive is posted when the ring starts, as NCCL's proxy posts a collective's receives, so
  the NCCL transport grants the previous member slots ahead across steps.
- ``hierarchical`` (every server holding the same number g > 1 of members): reduce-scatter inside
  each server, a ring among the members at the same position on each server over S/g, then
  all-gather inside each server.
- All-to-all: every member sends S/n to every other member at once.
- GPUs with OLink ports carry all of this frame by frame through OLink switches instead of the
  closed-form mesh (to every GPU of their supernode). When one switch per plane reaches every member
  and reduces in the network (``in_network``), all-reduce, reduce-scatter and all-gather go to it:
  each member sends its buffer (all-gather: its piece) once, striped over the planes, and receives
  the result (see :mod:`emulators.olink.switch`).
"""

from __future__ import annotations

from functools import partial
from typing import Protocol

from emulators.ccl.nccl import p2p_comm, ring_comm
from emulators.gpu_server.clock import Done
from emulators.gpu_server.olink_transport import Piece
from emulators.gpu_server.rank import Rank
from emulators.gpu_server.traffic import SCALE_UP
from emulators.kernel.vtime import serialization_ps
from emulators.model.job import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    HIERARCHICAL,
    MAX_STEPS,
    REDUCE_SCATTER,
    JobPlan,
    Op,
)
from emulators.olink import switch as olink_switch
from emulators.olink.spec import COLLECTIVE_VC


class CollectiveNet(Protocol):
    """What a collective asks of its server's transports (:class:`~emulators.gpu_server.transports.Transports`)."""

    name: str  # the server
    plan: JobPlan

    @property
    def scale_up_frames(self) -> bool: ...  # the server's GPUs meet over OLink, not the closed-form mesh

    def in_network_addresses(self, group: int) -> list[int] | None: ...

    def mesh_collective(self, key: tuple[int, int, int], rank: int, members: int, collective: str, nbytes: int,
                        dim: str, done: Done) -> None: ...

    def account(self, rank: Rank, dim: str, link_class: str, nbytes: int) -> None: ...

    def transfer(self, rank: Rank, peer: int, nbytes: int, uid: int, dim: str, done: Done, comm: int) -> None: ...

    def receive(self, rank: Rank, peer: int | None, nbytes: int, uid: int, comm: int, done: Done) -> bool: ...

    def olink_send(self, rank: Rank, pieces: list[Piece], uid: int, vc: int, fields: dict[str, int] | None,
                   done: Done) -> None: ...


def ring_steps(collective: str, members: int) -> int:
    return 2 * (members - 1) if collective == ALL_REDUCE else members - 1


def mesh_time_ps(collective: str, nbytes: int, members: int, bandwidth_bps: int, latency_ps: int) -> int:
    """A collective of buffer ``nbytes`` among ``members`` GPUs of one server's scale-up mesh."""
    step = serialization_ps(-(-nbytes // members), bandwidth_bps)
    if collective == ALL_TO_ALL:
        return (members - 1) * step + latency_ps
    return ring_steps(collective, members) * (step + latency_ps)


def bytes_sent(collective: str, nbytes: int, members: int) -> int:
    """What one member sends in a collective of buffer ``nbytes`` (ring pieces of ceil(S/n))."""
    piece = -(-nbytes // members)
    return (members - 1) * piece if collective == ALL_TO_ALL else ring_steps(collective, members) * piece


class CollectiveRun:
    """One rank's part of one collective op."""

    def __init__(self, net: CollectiveNet, rank: Rank, op: Op, members: tuple[int, ...], done: Done) -> None:
        self.net = net
        self.rank = rank
        self.op = op
        self.members = members
        self.done = done
        self.epoch = rank.epoch
        self.outstanding = 0  # messages sent and not yet delivered/acknowledged
        self.phases_left = 0
        self.finished = False

    def start(self) -> None:
        net, op, members = self.net, self.op, self.members
        plan = net.plan
        me = self.rank.rank
        if len(members) == 1:
            self.done()
            return
        local = [m for m in members if plan.ranks[m].device == net.name]
        if len(local) == len(members) and not net.scale_up_frames:
            self.phases_left = 1
            self.mesh(op.collective, op.nbytes, local, 0)
            return
        switches = net.in_network_addresses(op.group) if op.collective != ALL_TO_ALL else None
        if switches is not None:
            self.phases_left = 1
            self.in_network(switches)
            return
        if op.collective == ALL_TO_ALL:
            self.all_to_all()
            return
        servers: dict[str, list[int]] = {}
        for m in members:
            servers.setdefault(plan.ranks[m].device, []).append(m)
        sizes = {len(v) for v in servers.values()}
        g = len(local)
        if plan.algorithm == HIERARCHICAL and sizes == {g} and g > 1 and not net.scale_up_frames:
            position = local.index(me)
            across = [on_server[position] for on_server in servers.values()]
            piece = -(-op.nbytes // g)
            if op.collective == ALL_REDUCE:
                self.phases_left = 3
                self.mesh(REDUCE_SCATTER, op.nbytes, local, 0,
                          then=lambda: self.ring(ALL_REDUCE, piece, across,
                                                 then=lambda: self.mesh(ALL_GATHER, op.nbytes, local, 2)))
            elif op.collective == REDUCE_SCATTER:
                self.phases_left = 2
                self.mesh(REDUCE_SCATTER, op.nbytes, local, 0, then=lambda: self.ring(REDUCE_SCATTER, piece, across))
            else:
                self.phases_left = 2
                self.ring(ALL_GATHER, piece, across, then=lambda: self.mesh(ALL_GATHER, op.nbytes, local, 2))
            return
        self.phases_left = 1
        self.ring(op.collective, op.nbytes, list(members))

    # -- phases -----------------------------------------------------------------------------------
    def mesh(self, collective: str, nbytes: int, local: list[int], phase: int, then: Done | None = None) -> None:
        """A collective among ``local`` GPUs of this server in closed form, once all of them joined."""
        rank, op = self.rank, self.op
        self.net.mesh_collective((rank.serial, op.cid, phase), rank.rank, len(local), collective, nbytes, op.dim,
                                 self.phase_done(then))

    def in_network(self, at: list[int]) -> None:
        """The whole collective reduced or replicated by the switches at ``at`` (one per plane)."""
        net, rank, op = self.net, self.rank, self.op
        members = self.members
        n, me, size = len(members), members.index(rank.rank), op.nbytes
        piece = -(-size // n)

        def span(j: int) -> tuple[int, int]:
            return min(size, j * piece), min(size, (j + 1) * piece)

        mine = span(me)
        if op.collective == ALL_REDUCE:
            code, pieces, expect = olink_switch.ALL_REDUCE, [(0, size, at)], size
        elif op.collective == REDUCE_SCATTER:
            code, pieces, expect = olink_switch.REDUCE_SCATTER, [(*span(j), at) for j in range(n)], mine[1] - mine[0]
        else:
            code, pieces, expect = olink_switch.ALL_GATHER, [(*mine, at)], size - (mine[1] - mine[0])
        # contributions share one id (the switch matches them by it); each result comes as our own
        shared = rank.message(src=members[0], cid=op.cid, step=MAX_STEPS - 1)
        fields = {"innet": code, "group": op.group, "size": size}
        pieces = [p for p in pieces if p[0] < p[1]]
        net.account(rank, op.dim, SCALE_UP, sum(end - start for start, end, _ in pieces))
        self.outstanding += 1
        net.olink_send(rank, pieces, shared, COLLECTIVE_VC, fields, self.sent)
        arrived = self.phase_done(None)
        result = rank.message(cid=op.cid, step=MAX_STEPS - 1)
        if expect <= 0 or net.receive(rank, None, expect, result, 0, arrived):
            arrived()

    def ring(self, collective: str, nbytes: int, ring: list[int], then: Done | None = None) -> None:
        n = len(ring)
        position = ring.index(self.rank.rank)
        after, before = ring[(position + 1) % n], ring[position - 1]
        piece = -(-nbytes // n)
        steps = ring_steps(collective, n)
        finish = self.phase_done(then)
        net, rank, cid = self.net, self.rank, self.op.cid
        comm = ring_comm(self.op.group)
        arrived = [False] * steps  # piece k from the previous member
        sent = 0  # pieces sent
        finished = False

        def advance() -> None:
            nonlocal sent, finished
            # a loop, not recursion: a late rank may find many of its pieces already there
            while sent < steps and (sent == 0 or arrived[sent - 1]):
                self.send(after, piece, rank.message(cid=cid, step=sent), comm)
                sent += 1
            if sent == steps and arrived[-1] and not finished:
                finished = True
                finish()

        def arrival(k: int) -> None:
            arrived[k] = True
            advance()

        for k in range(steps):
            if net.receive(rank, before, piece, rank.message(src=before, cid=cid, step=k), comm, partial(arrival, k)):
                arrived[k] = True
        advance()

    def all_to_all(self) -> None:
        members = self.members
        net, rank, cid = self.net, self.rank, self.op.cid
        piece = -(-self.op.nbytes // len(members))
        me = members.index(rank.rank)
        self.phases_left = len(members) - 1  # one per incoming piece
        arrived = self.phase_done(None)
        comm = p2p_comm(4 + self.op.group)
        for index, member in enumerate(members):
            if member != rank.rank:
                self.send(member, piece, rank.message(cid=cid, step=index), comm)
                if net.receive(rank, member, piece, rank.message(src=member, cid=cid, step=me), comm, arrived):
                    arrived()

    # -- completion -------------------------------------------------------------------------------
    def send(self, peer: int, nbytes: int, uid: int, comm: int) -> None:
        self.outstanding += 1
        self.net.transfer(self.rank, peer, nbytes, uid, self.op.dim, self.sent, comm)

    def sent(self) -> None:
        self.outstanding -= 1
        self.check()

    def phase_done(self, then: Done | None) -> Done:
        epoch = self.epoch

        def finish() -> None:
            if self.rank.epoch != epoch:
                return
            self.phases_left -= 1
            if then is not None:
                then()
            self.check()

        return finish

    def check(self) -> None:
        if not self.finished and self.phases_left == 0 and self.outstanding == 0:
            self.finished = True
            self.done()

