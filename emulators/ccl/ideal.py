"""The idealised job transport (``transport: ideal``): one fresh RC QP per message, its window four
bandwidth-delay products of the path, its UDP source port drawn from the message id (so ECMP redraws
every message's path), a message done once acknowledged and kept at the receiver if it comes before
its receive. What the closed forms of collectives assume; the NCCL transport is what jobs run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulators.ccl.base import Done, NicTransport, RankLike, TransportHost
from emulators.kernel.rng import mix64
from emulators.model.scenario import RDMA, RDMA_PRIORITY, Endpoint, FlowSpec

if TYPE_CHECKING:
    from emulators.rdma.nic import RdmaNic
    from emulators.rdma.qp import QueuePair
    from emulators.rdma.receiver import FlowReceiver


class IdealTransport(NicTransport):
    def __init__(self, server: TransportHost) -> None:
        super().__init__(server)
        self.sending: dict[int, tuple[QueuePair, Done]] = {}  # message id -> its QP and what to do when acked
        self.waiting: dict[int, tuple[int, RdmaNic, Done]] = {}  # message id -> (bytes, NIC, done)

    def send(self, rank: RankLike, peer: int, comm: int, nbytes: int, uid: int, done: Done) -> None:
        server = self.server
        assert server.plan is not None and rank.nic is not None
        nic = rank.nic
        path = self.path(rank.gpu, peer)
        spec = FlowSpec(f"m{uid:x}", Endpoint(server.name, nic.ports[0].name),
                        Endpoint(server.plan.ranks[peer].device, ""), 0, 0, server.now, 0, RDMA_PRIORITY, RDMA,
                        max(1, nbytes))
        qp = nic.open_qp(uid, spec, path.remote, server.seed, path.hops, path.rtt_ps, path.crossed,
                         entropy=mix64(uid ^ server.seed))
        self.sending[uid] = (qp, done)
        nic.send_now(qp)

    def recv(self, rank: RankLike, peer: int, comm: int, nbytes: int, uid: int, done: Done) -> bool:
        nic = rank.nic
        assert nic is not None
        size = max(1, nbytes)
        receiver = nic.receivers.get(uid)
        if receiver is not None and receiver.payload_bytes >= size:
            nic.finish_flow(uid)
            return True
        self.waiting[uid] = (size, nic, done)
        return False

    def on_qp_complete(self, qp: QueuePair) -> None:
        _, done = self.sending.pop(qp.flow)
        qp.nic.retire(qp)
        done()

    def on_qp_error(self, qp: QueuePair) -> None:
        if self.sending.pop(qp.flow, None) is not None:
            qp.nic.retire(qp)

    def on_delivered(self, receiver: FlowReceiver) -> None:
        waiting = self.waiting.get(receiver.flow)
        if waiting is not None and receiver.payload_bytes >= waiting[0]:
            del self.waiting[receiver.flow]
            waiting[1].finish_flow(receiver.flow)
            waiting[2]()

    def abort(self) -> None:
        for qp, _ in self.sending.values():
            qp.nic.retire(qp)
        self.sending.clear()
        self.waiting.clear()
        super().abort()
