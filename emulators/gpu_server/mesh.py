"""A server's own scale-up mesh (NVLink-like), in closed form: each GPU's egress serialises what it
sends at the mesh's per-GPU bandwidth, plus the mesh's latency; a collective among GPUs of the server
takes :func:`~emulators.gpu_server.collectives.mesh_time_ps` once every member has joined, and keeps
their egress busy that long."""

from __future__ import annotations

from collections.abc import Mapping

from emulators.gpu_server.clock import Clock, Done, call
from emulators.gpu_server.collectives import bytes_sent, mesh_time_ps
from emulators.gpu_server.inbox import Inbox
from emulators.gpu_server.rank import Rank
from emulators.gpu_server.traffic import SCALE_UP, Traffic
from emulators.kernel.vtime import serialization_ps


class ScaleUpMesh:
    def __init__(self, clock: Clock, gpus: int, bandwidth_bps: int, latency_ps: int, ranks: Mapping[int, Rank],
                 inbox: Inbox, traffic: Traffic) -> None:
        self.clock = clock
        self.bandwidth_bps = bandwidth_bps
        self.latency_ps = latency_ps
        self.ranks = ranks
        self.inbox = inbox
        self.traffic = traffic
        self.egress_free: list[int] = [0] * gpus  # each GPU's scale-up egress is busy until
        self.joins: dict[tuple[int, int, int], list[tuple[int, Done]]] = {}  # local parts of collectives

    def send(self, rank: Rank, peer: int, nbytes: int, uid: int, done: Done) -> None:
        """Message ``uid`` from ``rank`` to rank ``peer`` on this server; ``done`` once it is there."""
        clock = self.clock
        start = max(clock.now, self.egress_free[rank.gpu])
        end = start + serialization_ps(nbytes, self.bandwidth_bps)
        self.egress_free[rank.gpu] = end
        clock.at(end + self.latency_ps, self._arrive, (uid, rank.epoch, peer, done))

    def _arrive(self, args: tuple[int, int, int, Done]) -> None:
        uid, epoch, peer, done = args
        if self.ranks[peer].epoch != epoch:
            return
        done()
        self.inbox.delivered(uid)

    def collective(self, key: tuple[int, int, int], rank: int, members: int, collective: str, nbytes: int,
                   dim: str, done: Done) -> None:
        """Rank ``rank`` joins phase ``key`` (iteration serial, collective id, phase) of a collective among
        ``members`` GPUs of this server; once all have joined, each one's ``done`` comes at its end."""
        joined = self.joins.setdefault(key, [])
        joined.append((rank, done))
        if len(joined) < members:
            return
        del self.joins[key]
        clock = self.clock
        gpus = [self.ranks[r].gpu for r, _ in joined]
        start = max(clock.now, *(self.egress_free[g] for g in gpus))
        end = start + mesh_time_ps(collective, nbytes, members, self.bandwidth_bps, self.latency_ps)
        sent = bytes_sent(collective, nbytes, members)
        for gpu in gpus:
            self.egress_free[gpu] = end
        for r, _ in joined:
            self.traffic.account(self.ranks[r], dim, SCALE_UP, sent)
        for _, finish in joined:
            clock.at(end, call, finish)

    def abort(self) -> None:
        self.joins.clear()

    def resume(self) -> None:
        """The job restarts now: nothing of the new attempt leaves a GPU before now."""
        now = self.clock.now
        self.egress_free = [max(t, now) for t in self.egress_free]
