"""The NCCL-like job transport (``transport: nccl``, the default for jobs).

Between ranks on different servers, messages ride NCCL network connections
(:mod:`emulators.ccl.connection`): per (sending rank, receiving rank, communicator, channel), opened
the first time the attempt needs them and kept until it ends. Each has ``qps_per_connection``
persistent RC QPs, each with one UDP source port for its life (derived from its id), so ECMP puts a
QP on the same links in every iteration, collisions included. QPs time out after NCCL's Local ACK
Timeout (4.096 us x 2^ib_timeout) and error after ib_retry_cnt retries, as NCCL sets them.

A message is cut over channels as NCCL cuts it: a send or an all-to-all piece by NCCL's p2p rule
(p2p steps of NCCL_P2P_NET_CHUNKSIZE), a ring collective's piece over the channels in slices of
NCCL_BUFFSIZE / NCCL_STEPS x slice steps. Communicators: every dimension's sends and receives share
one (``p2p_comm``), every collective group has its ring connections (``ring_comm``) and its p2p ones
(all-to-all).

With the distance co-operation switch on (the sender's NIC option) and a gateway that tells paths on
the way, a connection's buffer is what a user sets for the distance: large enough that the channels
keep the path's bandwidth-delay product in flight. NCCL sizes buffers when it connects, so this is
fixed for the connection's life, from the path the topology gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emulators.ccl.base import Done, NicTransport, RankLike, TransportHost
from emulators.ccl.connection import Part, RecvConnection, SendConnection
from emulators.ccl.settings import (
    NcclSettings,
    channels_per_net_peer,
    fill_buffer,
    p2p_channels,
    p2p_chunk,
    part_bounds,
)
from emulators.gateway.device import tells_paths
from emulators.kernel.rng import mix64
from emulators.model.scenario import RDMA, RDMA_PRIORITY, Endpoint, FlowSpec
from emulators.rdma.host import nic_ports_of
from emulators.rdma.settings import NicSettings

if TYPE_CHECKING:
    from emulators.rdma.qp import QueuePair
    from emulators.rdma.receiver import FlowReceiver

# A connection QP's id (its RDMA flow): flag | attempt | sending rank | receiving rank | communicator |
# channel | QP index. The flag keeps them apart from message ids; the attempt from a dead attempt's.
CONNECTION_FLAG = 1 << 62
QP_BITS, CHANNEL_BITS, COMM_BITS, RANK_BITS, ATTEMPT_BITS = 3, 5, 16, 16, 6
CHANNEL_SHIFT = QP_BITS
COMM_SHIFT = CHANNEL_SHIFT + CHANNEL_BITS
DST_SHIFT = COMM_SHIFT + COMM_BITS
SRC_SHIFT = DST_SHIFT + RANK_BITS
ATTEMPT_SHIFT = SRC_SHIFT + RANK_BITS
P2P = 1 << (COMM_BITS - 1)  # a communicator's p2p connections (sends, receives, all-to-all), not its ring
MAX_GROUPS = P2P - 4  # collective groups a job may have (each a communicator); 4 p2p ones for the dimensions


def p2p_comm(index: int) -> int:
    """The p2p communicator of a dimension (0..3) or of collective group g (4 + g)."""
    return P2P | index


def ring_comm(group: int) -> int:
    return group


def qp_flow(attempt: int, src: int, dst: int, comm: int, channel: int, qp: int) -> int:
    return (CONNECTION_FLAG | (attempt % (1 << ATTEMPT_BITS)) << ATTEMPT_SHIFT | src << SRC_SHIFT | dst << DST_SHIFT
            | comm << COMM_SHIFT | channel << CHANNEL_SHIFT | qp)


def parse_flow(flow: int) -> tuple[int, int, int, int, int, int]:
    """(attempt mod 64, sending rank, receiving rank, communicator, channel, QP index) of a QP id."""
    def field(shift: int, bits: int) -> int:
        return (flow >> shift) & ((1 << bits) - 1)

    return (field(ATTEMPT_SHIFT, ATTEMPT_BITS), field(SRC_SHIFT, RANK_BITS), field(DST_SHIFT, RANK_BITS),
            field(COMM_SHIFT, COMM_BITS), field(CHANNEL_SHIFT, CHANNEL_BITS), field(0, QP_BITS))


def comm_label(comm: int) -> str:
    if comm & P2P:
        index = comm & ~P2P
        return f"p2p-{('tp', 'pp', 'dp', 'ep')[index]}" if index < 4 else f"p2p-g{index - 4}"
    return f"ring-g{comm}"


@dataclass(frozen=True)
class Geometry:
    """How a message between two ranks is cut: over how many channels, in steps of what size, with
    how many in flight per connection."""

    channels: int
    step: int  # bytes a slot holds: a p2p step, or a ring slice
    depth: int  # slots per connection
    p2p: bool

    def parts(self, nbytes: int) -> list[tuple[int, int, int]]:
        """(channel, bytes, step data) of each non-empty part of a message of ``nbytes``."""
        if self.p2p:
            channels = p2p_channels(nbytes, self.channels, self.step)
            chunk = p2p_chunk(nbytes, self.step)
        else:
            channels = max(1, min(self.channels, -(-nbytes // self.step)))
            chunk = self.step
        return [(channel, size, chunk) for channel, size in enumerate(part_bounds(nbytes, channels)) if size]


class NcclTransport(NicTransport):
    def __init__(self, server: TransportHost, settings: NcclSettings) -> None:
        super().__init__(server)
        self.settings = settings
        self.sends: dict[tuple[int, int, int, int], SendConnection] = {}
        self.recvs: dict[tuple[int, int, int, int], RecvConnection] = {}
        self.cts_ends: dict[int, SendConnection] = {}  # QP id -> the connection its CTS writes are for
        self.data_ends: dict[int, tuple[RecvConnection, int]] = {}  # QP id -> (connection, QP index) it feeds
        self.geometries: dict[tuple[int, int, bool], Geometry] = {}

    # -- messages ---------------------------------------------------------------------------------
    def send(self, rank: RankLike, peer: int, comm: int, nbytes: int, uid: int, done: Done) -> None:
        for channel, size, chunk, part_done in self._split(rank.rank, peer, comm, nbytes, done):
            self._send_connection(rank, peer, comm, channel).post(Part(uid, size, chunk, part_done))

    def recv(self, rank: RankLike, peer: int, comm: int, nbytes: int, uid: int, done: Done) -> bool:
        for channel, size, chunk, part_done in self._split(peer, rank.rank, comm, nbytes, done):
            self._recv_connection(rank, peer, comm, channel).post(Part(uid, size, chunk, part_done))
        return False  # nothing moves before its receive is posted

    def _split(self, src: int, dst: int, comm: int, nbytes: int,
               done: Done) -> list[tuple[int, int, int, Done]]:
        parts = self.geometry(src, dst, bool(comm & P2P)).parts(max(1, nbytes))
        if len(parts) == 1:
            return [(*parts[0], done)]
        left = [len(parts)]

        def one_done() -> None:
            left[0] -= 1
            if not left[0]:
                done()

        return [(*part, one_done) for part in parts]

    # -- connections ------------------------------------------------------------------------------
    def _send_connection(self, rank: RankLike, peer: int, comm: int, channel: int) -> SendConnection:
        key = (rank.rank, peer, comm, channel)
        found = self.sends.get(key)
        if found is None:
            geometry = self.geometry(rank.rank, peer, bool(comm & P2P))
            qps = [self._open(rank, peer, rank.rank, peer, comm, channel, q)
                   for q in range(self.settings.qps_per_connection)]
            found = self.sends[key] = SendConnection(key, qps, geometry.depth)
            self.cts_ends[qps[0].flow] = found
        return found

    def _recv_connection(self, rank: RankLike, peer: int, comm: int, channel: int) -> RecvConnection:
        key = (peer, rank.rank, comm, channel)
        found = self.recvs.get(key)
        if found is None:
            geometry = self.geometry(peer, rank.rank, bool(comm & P2P))
            qps = self.settings.qps_per_connection
            cts_qp = self._open(rank, peer, peer, rank.rank, comm, channel, 0)
            found = self.recvs[key] = RecvConnection(key, cts_qp, qps, geometry.depth)
            attempt = self.server.job.number
            for q in range(qps):
                self.data_ends[qp_flow(attempt, peer, rank.rank, comm, channel, q)] = (found, q)
        return found

    def _open(self, rank: RankLike, peer: int, src: int, dst: int, comm: int, channel: int, q: int) -> QueuePair:
        """Our end of QP ``q`` of the connection src -> dst, toward ``peer``'s NIC."""
        server = self.server
        assert server.plan is not None
        nic = rank.nic
        if nic is None:
            raise RuntimeError(f"{server.name}: GPU {rank.gpu} has no NIC, and rank {rank.rank} talks to rank {peer} "
                               f"on {server.plan.ranks[peer].device}")
        flow = qp_flow(server.job.number, src, dst, comm, channel, q)
        name = f"r{src}>r{dst} {comm_label(comm)} ch{channel} qp{q}"
        path = self.path(rank.gpu, peer)
        spec = FlowSpec(name, Endpoint(server.name, nic.ports[0].name), Endpoint(server.plan.ranks[peer].device, ""),
                        0, 0, server.now, 0, RDMA_PRIORITY, RDMA, 0)
        qp = nic.open_qp(flow, spec, path.remote, server.seed, path.hops, path.rtt_ps, path.crossed,
                         entropy=mix64(flow ^ server.seed), timeout_ps=self.settings.timeout_ps,
                         retry_cnt=self.settings.ib_retry_cnt, persistent=True, windowed=False)
        nic.send_now(qp)
        return qp

    def geometry(self, src: int, dst: int, p2p: bool) -> Geometry:
        """The same on both ends: from the scenario (both NICs, the topology's path), never from what
        one end alone has heard."""
        key = (src, dst, p2p)
        found = self.geometries.get(key)
        if found is None:
            found = self.geometries[key] = self._geometry(src, dst, p2p)
        return found

    def _geometry(self, src: int, dst: int, p2p: bool) -> Geometry:
        settings = self.settings
        context = self.server.context
        plan = self.server.plan
        assert plan is not None
        ends = []
        for rank in (src, dst):
            place = plan.ranks[rank]
            device = context.scenario.device(place.device)
            ports = nic_ports_of(device, place.gpu)
            attached = [context.link_at(Endpoint(device.name, port)) for port in ports]
            ends.append((device, ports, sum(link.rate_bps for link in attached if link is not None)))
        (near, near_ports, near_bps), (far, far_ports, far_bps) = ends
        channels = settings.nchannels or min(channels_per_net_peer(near_bps), channels_per_net_peer(far_bps))
        buffsize = settings.buffsize
        if NicSettings.from_options(near.options.get("rdma", {})).cooperation.distance:
            links = context.path_links(Endpoint(near.name, near_ports[0]), Endpoint(far.name, far_ports[0]))
            crossed = {d for link in links for d in (link.a.device, link.z.device)}
            if any(tells_paths(context.scenario.device(name)) for name in crossed):
                _, rtt_ps = context.path_delay(links)
                bdp = min(near_bps, far_bps) * rtt_ps // (8 * 10**12)
                buffsize = fill_buffer(buffsize, bdp, channels)
        if p2p:
            step = min(settings.p2p_chunksize, buffsize // settings.steps)  # src/init.cc: at most a buffer slot
            if buffsize > settings.buffsize:  # sized for the distance: the user raises the p2p chunk alike
                step = buffsize // settings.steps
            return Geometry(channels, max(1, step), settings.steps, True)
        slice_steps = settings.ring_slice_steps
        return Geometry(channels, max(1, buffsize // settings.steps * slice_steps), settings.steps // slice_steps,
                        False)

    # -- the NICs ---------------------------------------------------------------------------------
    def accepts(self, flow: int) -> bool:
        """A QP of the attempt under way that one of our ranks sends or receives on."""
        job = self.server.job
        if not flow & CONNECTION_FLAG or job.aborted:
            return False
        return parse_flow(flow)[0] == job.number % (1 << ATTEMPT_BITS)

    def on_delivered(self, receiver: FlowReceiver) -> None:
        flow = receiver.flow
        prefix = receiver.delivered.prefix()
        data = self.data_ends.get(flow)
        if data is not None:
            data[0].delivered(data[1], prefix)
            return
        sending = self.cts_ends.get(flow)
        if sending is None:  # the receiver posted before our rank first sent: open our end now
            _, src, dst, comm, channel, _ = parse_flow(flow)
            rank = self.server.ranks.get(src)
            if rank is None:
                return
            sending = self._send_connection(rank, dst, comm, channel)
        sending.credit(prefix)

    def abort(self) -> None:
        for connection in self.sends.values():
            for qp in connection.qps:
                qp.nic.retire(qp)
        for receiving in self.recvs.values():
            receiving.cts_qp.nic.retire(receiving.cts_qp)
        self.sends.clear()
        self.recvs.clear()
        self.cts_ends.clear()
        self.data_ends.clear()
        super().abort()
