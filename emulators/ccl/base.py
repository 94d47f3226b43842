"""What the job transports (how a GPU server's ranks move messages over their NICs) share: the server
they serve, the path toward a peer rank, and letting go of everything when an attempt is aborted."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from emulators.model.scenario import Endpoint
from emulators.rdma.host import nic_ports_of

if TYPE_CHECKING:
    from emulators.context import ScenarioContext
    from emulators.model.job import JobAttempt, JobPlan
    from emulators.rdma.nic import RdmaNic
    from emulators.rdma.qp import QueuePair
    from emulators.rdma.receiver import FlowReceiver

Done = Callable[[], None]


class RankLike(Protocol):
    rank: int
    gpu: int
    nic: RdmaNic | None


class TransportHost(Protocol):
    """The GPU server a transport works for."""

    name: str
    seed: int
    context: ScenarioContext
    plan: JobPlan | None
    nics: list[RdmaNic]
    job: JobAttempt

    @property
    def now(self) -> int: ...

    @property
    def ranks(self) -> Mapping[int, RankLike]: ...  # the job's ranks this server runs


class PathInfo:
    """Toward a peer rank's NIC: its port addresses, the links crossed, the round trip and the devices."""

    __slots__ = ("remote", "hops", "rtt_ps", "crossed")

    def __init__(self, remote: list[int], hops: int, rtt_ps: int, crossed: frozenset[int]) -> None:
        self.remote = remote
        self.hops = hops
        self.rtt_ps = rtt_ps
        self.crossed = crossed


class NicTransport:
    """Messages between ranks on different servers, over the ranks' NICs (see IdealTransport and
    NcclTransport for the two ways)."""

    def __init__(self, server: TransportHost) -> None:
        self.server = server
        self.paths: dict[tuple[int, int], PathInfo] = {}  # (our rank's GPU, peer rank) -> the path

    def path(self, gpu: int, peer: int) -> PathInfo:
        """The path from our GPU ``gpu``'s NIC to rank ``peer``'s (computed once per pair from the topology)."""
        key = (gpu, peer)
        found = self.paths.get(key)
        if found is None:
            server = self.server
            assert server.plan is not None
            place = server.plan.ranks[peer]
            context = server.context
            far = context.scenario.device(place.device)
            far_ports = nic_ports_of(far, place.gpu)
            near = server.nics[gpu].ports[0].name
            links = context.path_links(Endpoint(server.name, near), Endpoint(far.name, far_ports[0]))
            hops, rtt = context.path_delay(links)
            crossed = frozenset(context.ids[d] for link in links for d in (link.a.device, link.z.device))
            found = PathInfo([context.address(far.name, p) for p in far_ports], hops, rtt, crossed)
            self.paths[key] = found
        return found

    # -- what the GPU server asks -----------------------------------------------------------------
    def send(self, rank: RankLike, peer: int, comm: int, nbytes: int, uid: int, done: Done) -> None:
        raise NotImplementedError

    def recv(self, rank: RankLike, peer: int, comm: int, nbytes: int, uid: int, done: Done) -> bool:
        """Receive message ``uid`` from rank ``peer``: True if it is already here (``done`` is not
        called), else ``done`` is called when it is."""
        raise NotImplementedError

    def accepts(self, flow: int) -> bool:
        return True

    def on_qp_complete(self, qp: QueuePair) -> None:
        """A one-message QP has its message acknowledged."""

    def on_qp_error(self, qp: QueuePair) -> None:
        """A QP of ours went to the error state (the server aborts the job)."""

    def on_delivered(self, receiver: FlowReceiver) -> None:
        """New bytes of ``receiver``'s flow arrived in order on one of our NICs."""

    def abort(self) -> None:
        """The attempt is over: forget what arrived on the NICs; data still coming is only acknowledged."""
        for nic in self.server.nics:
            for flow in list(nic.receivers):
                nic.finish_flow(flow)
            nic.finished.clear()  # the server (and this transport) refuse the dead attempt's flows now
