"""A closed-form estimate of a scenario's training iteration: FLOPs, bandwidths and latencies, no emulation.

Printed beside every emulated result, it says what the network costs on paper. Compute times are the
device's (:func:`~orchestrator.workload.hardware.compute_ps`). Collectives use the textbook closed forms,
with S the buffer in bits over B the bandwidth and alpha the per-step latency:

- ring all-reduce 2(g-1)(S/(gB) + alpha); reduce-scatter and all-gather (g-1)(S/(gB) + alpha);
- all-to-all (g-1)S/(gB) + alpha; a p2p message S/B + alpha;

inside a server on the scale-up mesh (the GPU's scale-up bandwidth and latency), across servers over the
NICs: goodput = line rate x mtu/(mtu + 82) summed over planes (shared by GPUs that share a NIC), latency =
one-way path delay plus one chunk's serialisation per hop. GPUs that OLink joins (scale-up ports on one
supernode's switches, on one server or several) use B = port rate x 256/272 (payload per packet on the
wire) summed over planes, and alpha = the one-way path delay (propagation, switch latency) plus a chunk
stored and forwarded at each switch; a ring step moves ceil(S/g). When one switch per plane reaches every
member and reduces in the network, all-reduce takes S/B + 2 alpha, reduce-scatter S/B + alpha and
all-gather (g-1)S/(gB) + alpha: each GPU sends its data once and receives the result once.

Between sites, messages that cross at the same time (one phase: PP, DP, ...) share the max-flow capacity
of the links from one site's GPU servers to the other's. A ring's step takes as long as its slowest hop.

The 1F1B pipeline with P stages and M micro-batches takes (M - 1) T + the first micro-batch's trip down
and back, where T is the steady-state period: the slowest stage's F + B with its blocking collectives
(and blocking sends), a stage's send stream, or a round trip's latency spread over the micro-batches in
flight. DP follows each stage's last backward; staggered, the stages' reduce-scatters run one after the
other and the all-gather is paced with the next forwards.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from emulators.context import ScenarioContext
from emulators.model.job import DP, EP, HIERARCHICAL, PP, TP, JobPlan
from emulators.model.scenario import Endpoint, Scenario
from emulators.olink import spec as olink
from emulators.olink.topology import gpu_planes, in_network_switches
from orchestrator.workload.hardware import (
    PS_PER_S,
    GpuHardware,
    compute_ps,
    goodput_fraction,
    gpu_of,
    nic_ports_of,
    nic_settings_of,
)
from orchestrator.workload.job import model_of
from orchestrator.workload.placement import EDP, Layout, scale_up_domains
from orchestrator.workload.schedule import TOKEN_BYTES, StageSizes, sizes_by_stage

ASSUMPTIONS = (
    "compute: each forward/backward op takes round(flops x 1e12 / (peak x MFU)) ps; FLOPs spread evenly over "
    "layers; no optimizer-step FLOPs",
    "TP all-reduces and EP all-to-alls block the compute stream; inside a server they run on a non-blocking "
    "scale-up mesh at the GPU's scale-up bandwidth, without contention between groups",
    "OLink (GPUs of one supernode): per-GPU bandwidth = port rate x 256/272 summed over planes; latency = one-way "
    "path delay + one chunk stored and forwarded per switch; in-network collectives when one switch per plane with "
    "in_network reaches every member; no credit stalls, replays or contention between groups",
    "across servers: NIC goodput = line rate x mtu/(mtu+82) summed over planes (shared by GPUs that share a "
    "NIC); latency = one-way path delay + one chunk's serialisation per hop; no congestion control, queueing, "
    "PFC or loss",
    "between sites: the max-flow capacity between the two sites' GPU servers is shared equally by the "
    "messages crossing it in the same phase (all TP, all EP, all PP, all DP, or one stage's staggered DP)",
    "fabric contention inside a site is not modelled; other flows and faults are ignored",
    "1F1B: (M-1) x T + the first micro-batch's way down and back; T = max(slowest stage's F+B with blocking "
    "communication, a send stream's time per message, the round trip from a stage to the last one over the "
    "P-s micro-batches in flight)",
    "DP starts after each stage's last backward (all stages at once, sharing the WAN); staggered: reduce-"
    "scatters stage after stage (last stage first), then at the next iteration's start all-gathers stage after "
    "stage (first stage first), in pieces paced with the chunks of the first forward",
    "checkpoint saves are reported per iteration but not added to the iteration time",
)


# --- closed forms --------------------------------------------------------------------------------


def transfer_ps(nbytes: float, bps: float) -> float:
    """Time to push ``nbytes`` at ``bps``, in ps."""
    return nbytes * 8 * PS_PER_S / bps


def ring_all_reduce_ps(nbytes: float, members: int, bps: float, latency_ps: float) -> float:
    """2(g-1) steps, each moving S/g: 2(g-1)(S/(gB) + alpha)."""
    if members < 2:
        return 0.0
    return 2 * (members - 1) * (transfer_ps(nbytes / members, bps) + latency_ps)


def ring_reduce_scatter_ps(nbytes: float, members: int, bps: float, latency_ps: float) -> float:
    """(g-1)(S/(gB) + alpha); an all-gather of an S-byte output takes the same."""
    if members < 2:
        return 0.0
    return (members - 1) * (transfer_ps(nbytes / members, bps) + latency_ps)


def all_to_all_ps(nbytes: float, members: int, bps: float, latency_ps: float) -> float:
    """Each rank sends (g-1)/g of S, all at once: (g-1) S/(gB) + alpha."""
    if members < 2:
        return 0.0
    return transfer_ps((members - 1) * nbytes / members, bps) + latency_ps


def p2p_ps(nbytes: float, bps: float, latency_ps: float) -> float:
    return transfer_ps(nbytes, bps) + latency_ps


def scale_up_ring_ps(collective: str, nbytes: float, members: int, bps: float, latency_ps: float) -> float:
    """A ring over OLink: 2(g-1) steps for an all-reduce, g-1 otherwise, each moving ceil(S/g): a step's
    ceil(S/g)/B + alpha."""
    if members < 2:
        return 0.0
    steps = 2 * (members - 1) if collective == "all-reduce" else members - 1
    return steps * (transfer_ps(math.ceil(nbytes / members), bps) + latency_ps)


def in_network_ps(collective: str, nbytes: float, members: int, bps: float, latency_ps: float) -> float:
    """The switch reduces or replicates: each GPU sends S once and receives the reduced S once (all-reduce:
    S/B + 2 alpha, the result following the contributions), sends S and receives its piece (reduce-scatter:
    S/B + alpha), or sends its piece and receives the others' (all-gather: (g-1)S/(gB) + alpha)."""
    if members < 2:
        return 0.0
    if collective == "all-reduce":
        return transfer_ps(nbytes, bps) + 2 * latency_ps
    if collective == "reduce-scatter":
        return transfer_ps(nbytes, bps) + latency_ps
    return transfer_ps(nbytes * (members - 1) / members, bps) + latency_ps


_MESH = {"all-reduce": ring_all_reduce_ps, "reduce-scatter": ring_reduce_scatter_ps,
         "all-gather": ring_reduce_scatter_ps, "all-to-all": all_to_all_ps}  # on a server's scale-up mesh


def one_f_one_b_ps(forward_ps: Sequence[float], backward_ps: Sequence[float], micro_batches: int) -> float:
    """The pipeline without communication: (M - 1) max_s(t_f + t_b) + sum_s(t_f + t_b)."""
    stage = [f + b for f, b in zip(forward_ps, backward_ps, strict=True)]
    return (micro_batches - 1) * max(stage) + sum(stage)


# --- the network between ranks -------------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    """One rank sending to another: its bandwidth alone on the network, its latency, and the sites it
    leaves and enters when it crosses between two."""

    bps: float
    latency_ps: float
    crossing: tuple[str, str] | None = None
    ack_ps: float = 0.0  # an RDMA send completes when the last ACK is back: this much after delivery


class _Network:
    def __init__(self, scenario: Scenario, plan: JobPlan) -> None:
        self.scenario = scenario
        self.plan = plan
        self.context = ScenarioContext(scenario)
        self.server = {place.device: scenario.device(place.device) for place in plan.ranks}
        self.gpu: list[GpuHardware] = [gpu_of(self.server[place.device]) for place in plan.ranks]
        users = Counter((p.device, nic_ports_of(self.server[p.device], p.gpu)) for p in plan.ranks)
        self.nic_users = dict(users)
        self.supernode_of = scale_up_domains(scenario)  # (server, GPU) -> its supernode, for GPUs on OLink
        self.olink_servers = {server for server, _ in self.supernode_of}
        self._hops: dict[tuple[int, int], Hop] = {}
        self.capacities: dict[tuple[str, str], float] = {}  # payload bps between sites, as asked for

    def same_server(self, ranks: Iterable[int]) -> bool:
        return len({self.plan.ranks[r].device for r in ranks}) == 1

    def on_mesh(self, ranks: Sequence[int]) -> bool:
        """All on one server whose GPUs talk over its closed-form mesh (it has no OLink ports)."""
        return self.same_server(ranks) and self.plan.ranks[ranks[0]].device not in self.olink_servers

    def one_supernode(self, ranks: Sequence[int]) -> bool:
        """OLink joins them all: every GPU attached to the same supernode's switches."""
        found = {self.supernode_of.get((self.plan.ranks[r].device, self.plan.ranks[r].gpu)) for r in ranks}
        return len(found) == 1 and None not in found

    def in_network(self, ranks: Sequence[int]) -> bool:
        """One switch per plane reaches every member and reduces in the network."""
        members = [(self.plan.ranks[r].device, self.plan.ranks[r].gpu) for r in ranks]
        return in_network_switches(self.scenario, members) is not None

    def hop(self, src: int, dst: int) -> Hop:
        if (src, dst) not in self._hops:
            self._hops[(src, dst)] = self._hop(src, dst)
        return self._hops[(src, dst)]

    def _hop(self, src: int, dst: int) -> Hop:
        a, z = self.plan.ranks[src], self.plan.ranks[dst]
        if self.one_supernode((src, dst)):
            return self._olink_hop(src, dst)
        if a.device == z.device:
            return Hop(self.gpu[src].scale_up_bps, self.gpu[src].scale_up_latency_ps)
        server = self.server[a.device]
        ports = nic_ports_of(server, a.gpu)
        far = nic_ports_of(self.server[z.device], z.gpu)
        for place, nic, rank in ((a, ports, src), (z, far, dst)):
            if not nic:
                raise ValueError(f"GPU {place.gpu} of {place.device} (rank {rank}) has no NIC, and rank {src} "
                                 f"sends to rank {dst} on another server; give the server one NIC port per GPU")
        settings = nic_settings_of(server)
        chunk_bits = settings.wire_bytes(settings.chunk) * 8
        bps, latency, ack = 0.0, 0.0, 0.0
        for plane, port in enumerate(ports):
            end = Endpoint(z.device, far[min(plane, len(far) - 1)])
            links = self.context.path_links(Endpoint(a.device, port), end)
            if not links:
                raise ValueError(f"no path from {a.device}/{port} (rank {src}) to {end} (rank {dst}); "
                                 "link the GPU servers' NICs through the fabric")
            bps += min(link.rate_bps for link in links)
            one_way = self.context.path_delay(links)[1] / 2
            ack = max(ack, one_way)
            latency = max(latency, one_way + sum(chunk_bits * PS_PER_S / link.rate_bps for link in links))
        bps *= goodput_fraction(server) / self.nic_users[(a.device, ports)]
        here, there = self.server[a.device].site, self.server[z.device].site
        crossing = (here, there) if here is not None and there is not None and here != there else None
        return Hop(bps, latency, crossing, ack)

    def _olink_hop(self, src: int, dst: int) -> Hop:
        """Through the supernode's switches: plane p of the sender to plane p of the receiver, the message
        striped over the planes."""
        a, z = self.plan.ranks[src], self.plan.ranks[dst]
        near = gpu_planes(self.scenario, self.server[a.device], a.gpu)
        far = gpu_planes(self.scenario, self.server[z.device], z.gpu)
        chunk = int(self.server[a.device].options.get("olink", {}).get("chunk", olink.DEFAULT_CHUNK))
        chunk_bits = olink.wire_bytes(chunk) * 8
        bps, latency = 0.0, 0.0
        for (port, _), (peer_port, _) in zip(near, far, strict=False):
            start, end = Endpoint(a.device, port), Endpoint(z.device, peer_port)
            links = self.context.path_links(start, end)
            if not links:
                raise ValueError(f"no OLink path from {start} (rank {src}) to {end} (rank {dst}); join each plane's "
                                 "switches of a supernode")
            bps += min(link.rate_bps for link in links) * olink.PACKET_PAYLOAD / olink.PACKET_BYTES
            one_way = self.context.path_delay(links)[1] / 2
            latency = max(latency, one_way + sum(chunk_bits * PS_PER_S / link.rate_bps for link in links[1:]))
        return Hop(bps, latency)

    def capacity_bps(self, crossing: tuple[str, str]) -> float:
        if crossing not in self.capacities:
            self.capacities[crossing] = self._max_flow(crossing)
        return self.capacities[crossing]

    def _max_flow(self, crossing: tuple[str, str]) -> float:
        """Payload capacity from one site's GPU servers to another's: the max flow over the links (both
        directions of each, servers as sources or sinks only, never in transit)."""
        senders = {name for name, spec in self.server.items() if spec.site == crossing[0]}
        receivers = {name for name, spec in self.server.items() if spec.site == crossing[1]}
        forwarders = self.context.forwarders
        standby = _protecting_ports(self.scenario)
        graph = nx.DiGraph()
        for link in self.scenario.links:
            if link.a in standby or link.z in standby:
                continue  # a 1+1 protection path carries a copy of the working path's traffic, no more
            for u, v in ((link.a.device, link.z.device), (link.z.device, link.a.device)):
                if (u in forwarders or u in senders) and (v in forwarders or v in receivers):
                    capacity = graph.get_edge_data(u, v, {"capacity": 0})["capacity"] + link.rate_bps
                    graph.add_edge(u, v, capacity=capacity)
        for name in senders:
            graph.add_edge(("source",), name)
        for name in receivers:
            graph.add_edge(name, ("sink",))
        flow = float(nx.maximum_flow_value(graph, ("source",), ("sink",)))
        sender = self.server[sorted(senders)[0]]
        return flow * goodput_fraction(sender)

    def shared(self, hops: Iterable[Hop]) -> dict[tuple[str, str], float]:
        """Per crossing, the bandwidth each of the phase's messages crossing it gets."""
        crossing = Counter(h.crossing for h in hops if h.crossing is not None)
        return {pair: self.capacity_bps(pair) / count for pair, count in crossing.items()}

    @staticmethod
    def effective(hop: Hop, share: dict[tuple[str, str], float]) -> Hop:
        if hop.crossing is None or hop.crossing not in share:
            return hop
        return Hop(min(hop.bps, share[hop.crossing]), hop.latency_ps, hop.crossing)


def _protecting_ports(scenario: Scenario) -> set[Endpoint]:
    """The OTN nodes' protection-path line ports: no capacity of their own while the working path is up."""
    return {Endpoint(d.name, port) for d in scenario.devices for group in d.options.get("protection", [])
            for port in group["protecting"]}


def _ring(group: Sequence[int]) -> list[tuple[int, int]]:
    return [(group[i], group[(i + 1) % len(group)]) for i in range(len(group))]


class _Collectives:
    """Closed-form times of the job's collectives, with the bandwidth each phase leaves them."""

    def __init__(self, network: _Network, algorithm: str) -> None:
        self.network = network
        self.algorithm = algorithm

    def _by_server(self, group: Sequence[int]) -> list[list[int]]:
        servers: dict[str, list[int]] = {}
        for rank in group:
            servers.setdefault(self.network.plan.ranks[rank].device, []).append(rank)
        return list(servers.values())

    def _hierarchical(self, group: Sequence[int]) -> list[list[int]] | None:
        """Per server, its members, when the hierarchical algorithm applies (several servers, alike)."""
        servers = self._by_server(group)
        sizes = {len(members) for members in servers}
        if self.algorithm != HIERARCHICAL or len(servers) < 2 or sizes == {1} or len(sizes) > 1:
            return None
        if any(self.network.plan.ranks[members[0]].device in self.network.olink_servers for members in servers):
            return None  # GPUs on OLink ring over it, as the GPU server does
        return servers

    def pairs(self, kind: str, group: Sequence[int]) -> list[tuple[int, int]]:
        """The messages one step of the collective sends at once (what a phase shares the WAN among)."""
        if len(group) < 2 or self.network.same_server(group):
            return []
        if kind == EP:
            return [(a, b) for a in group for b in group if a != b]
        servers = self._hierarchical(group)
        if servers is not None:  # the cross-server rings: one per local index
            return [pair for ring in zip(*servers, strict=True) for pair in _ring(ring)]
        return _ring(group)

    def phase(self, kind: str, groups: Iterable[Sequence[int]]) -> dict[tuple[str, str], float]:
        hops = [self.network.hop(a, b) for group in groups for a, b in self.pairs(kind, group)]
        return self.network.shared(hops)

    def _ring_step(self, nbytes: float, members: int, pairs: Iterable[tuple[int, int]],
                   share: dict[tuple[str, str], float]) -> float:
        step = 0.0
        for a, b in pairs:
            hop = self.network.effective(self.network.hop(a, b), share)
            step = max(step, transfer_ps(nbytes / members, hop.bps) + hop.latency_ps)
        return step

    def time(self, collective: str, nbytes: float, group: Sequence[int], share: dict[tuple[str, str], float]) -> float:
        """``collective``: "all-reduce", "reduce-scatter", "all-gather" or "all-to-all"."""
        g = len(group)
        if g < 2 or nbytes == 0:
            return 0.0
        net = self.network
        if net.on_mesh(group):
            bps = min(net.gpu[r].scale_up_bps for r in group)
            latency = max(net.gpu[r].scale_up_latency_ps for r in group)
            return _MESH[collective](nbytes, g, bps, latency)
        if net.one_supernode(group):
            return self._over_olink(collective, nbytes, group)
        if collective == "all-to-all":
            hops = [net.effective(net.hop(a, b), share) for a, b in self.pairs(EP, group)]
            return all_to_all_ps(nbytes, g, min(h.bps for h in hops), max(h.latency_ps for h in hops))
        rounds = 2 if collective == "all-reduce" else 1
        servers = self._hierarchical(group)
        if servers is None:
            return rounds * (g - 1) * self._ring_step(nbytes, g, _ring(group), share)
        # inside each server (reduce-scatter, and all-gather for an all-reduce), then across them on 1/n;
        # reduce-scatter and all-gather take as long as each other on a mesh and on a ring
        n, k = len(servers[0]), len(servers)
        local = max(self.time("reduce-scatter", nbytes, members, share) for members in servers)
        inter_pairs = [pair for ring in zip(*servers, strict=True) for pair in _ring(ring)]
        across = rounds * (k - 1) * self._ring_step(nbytes / n, k, inter_pairs, share)
        return rounds * local + across if collective == "all-reduce" else local + across

    def _over_olink(self, collective: str, nbytes: float, group: Sequence[int]) -> float:
        """Every member on one supernode's switches: in the network when they can reduce, else a ring (or an
        all-to-all) at the slowest member's bandwidth and the longest way between neighbours."""
        net = self.network
        pairs = [(a, b) for a in group for b in group if a != b] if collective == "all-to-all" else _ring(group)
        hops = [net.hop(a, b) for a, b in pairs]
        bps, latency = min(h.bps for h in hops), max(h.latency_ps for h in hops)
        if collective == "all-to-all":
            return all_to_all_ps(nbytes, len(group), bps, latency)
        if net.in_network(group):
            return in_network_ps(collective, nbytes, len(group), bps, latency)
        return scale_up_ring_ps(collective, nbytes, len(group), bps, latency)

    def p2p(self, nbytes: float, src: int, dst: int, share: dict[tuple[str, str], float]) -> float:
        hop = self.network.effective(self.network.hop(src, dst), share)
        return p2p_ps(nbytes, hop.bps, hop.latency_ps)

    def p2p_held(self, nbytes: float, src: int, dst: int, share: dict[tuple[str, str], float]) -> float:
        """How long a send holds its stream: until the data is there, and over a NIC until it is acked."""
        return self.p2p(nbytes, src, dst, share) + self.network.hop(src, dst).ack_ps


# --- the iteration -------------------------------------------------------------------------------


@dataclass
class StageTimes:
    """One stage of one replica, per micro-batch (the slowest of its TP ranks)."""

    forward_ps: float = 0.0
    backward_ps: float = 0.0
    tp_ps: float = 0.0  # one TP all-reduce (after F, and again after B)
    ep_ps: float = 0.0  # one EP all-to-all (after F, and again after B)
    send_forward_ps: float = 0.0  # to the next stage: until the data is there
    send_backward_ps: float = 0.0  # to the previous stage
    hold_forward_ps: float = 0.0  # the same sends, until they complete (acked) and free their stream
    hold_backward_ps: float = 0.0


def estimate(scenario: Scenario) -> dict[str, Any]:
    """The closed-form iteration time of the scenario's job, and what it is made of (times in ps).
    ValueError when there is no job, the plan was not generated from a job block, or ranks on different
    servers have no path between their NICs."""
    plan = scenario.job
    if plan is None:
        raise ValueError(f"{scenario.source}: the scenario has no job: block; add one to estimate it")
    if "layers_per_stage" not in plan.info:
        raise ValueError(f"{scenario.source}: the job plan was not made by orchestrator.workload (its info has no "
                         "layers per stage), so there is nothing to estimate it from")
    model, info = model_of(plan), plan.info
    tp, pp, dp, ep = (plan.parallel[k] for k in (TP, PP, DP, EP))
    layout = Layout(tp, pp, dp, ep, tuple(info["rank_order"]), moe=model.experts > 1)
    sizes = sizes_by_stage(model, info["layers_per_stage"], micro_batch=info["micro_batch"],
                           sequence=info["sequence"], dtype_bytes=info["dtype_bytes"], tp=tp, ep=ep)
    micro = info["micro_batches_per_replica"]
    network = _Network(scenario, plan)
    coll = _Collectives(network, plan.algorithm)
    overlap, stagger = info["overlap_pp"], info["stagger_dp"] and dp > 1

    stages = _stage_times(layout, sizes, network, coll)
    pipelines = [pipeline(stages[d], micro[d], overlap) for d in range(dp)]
    pipeline_ps = max(p["pipeline_ps"] for p in pipelines)
    finish = [max(p["finish_ps"][s] for p in pipelines) for s in range(pp)]

    # DP: each stage's gradient sync, after its last backward; experts' over the expert-DP groups
    by_stage = {(dim, s): [g for g in layout.groups[dim] if layout.coordinates(g[0])[2] == s]
                for dim in (DP, EDP) for s in range(pp)}
    buffers = {DP: [s.dp_bytes for s in sizes], EDP: [s.expert_dp_bytes for s in sizes]}
    everyone = [g for groups in by_stage.values() for g in groups]

    def dp_time(collective: str, stage: int, share: dict[tuple[str, str], float], scale: float = 1.0) -> float:
        """The stage's DP collectives, one after the other on its dp stream (the slowest group of each)."""
        return sum(max((coll.time(collective, buffers[dim][stage] * scale, g, share) for g in by_stage[(dim, stage)]),
                       default=0.0) for dim in (DP, EDP))

    exposed_gather = 0.0
    if not stagger:
        share = coll.phase(DP, everyone)
        dp_stage = [dp_time("all-reduce", s, share) for s in range(pp)]
        dp_end = max(finish[s] + dp_stage[s] for s in range(pp))
    else:
        def token(a: int, b: int) -> float:  # from stage a to stage b: "the network is yours"
            return max(coll.p2p(TOKEN_BYTES, layout.rank(t, d, a), layout.rank(t, d, b), {})
                       for t in range(tp) for d in range(dp))

        dp_stage, done = [0.0] * pp, 0.0
        for s in reversed(range(pp)):  # reduce-scatters: the last stage first, one stage at a time
            share = coll.phase(DP, by_stage[(DP, s)] + by_stage[(EDP, s)])
            rs = dp_time("reduce-scatter", s, share)
            done = max(finish[s], done + (token(s + 1, s) if s < pp - 1 else 0.0)) + rs
            dp_stage[s] = rs
        gathered = 0.0  # all-gathers at the next iteration's start: the first stage first, one at a time
        for s in range(pp):
            share = coll.phase(DP, by_stage[(DP, s)] + by_stage[(EDP, s)])
            pieces = max(1, min(pp - s, min(micro)))
            piece = dp_time("all-gather", s, share, 1 / pieces)
            dp_stage[s] += pieces * piece
            start = gathered + (token(s - 1, s) if s > 0 else 0.0)
            forward = max(st[s].forward_ps for st in stages)
            fill = max(sum(st[k].forward_ps + st[k].tp_ps + st[k].ep_ps + st[k].send_forward_ps for k in range(s))
                       for st in stages)  # when F(0) would start anyway
            chunk_end = fill
            for j in range(pieces):  # chunk j of F0 after piece j and chunk j - 1
                chunk_end = max(chunk_end, start + (j + 1) * piece) + forward / pieces
            exposed_gather = max(exposed_gather, chunk_end - (fill + forward))
            gathered = start + pieces * piece
        dp_end = done
    iteration = exposed_gather + max(pipeline_ps, dp_end)

    seconds = iteration / PS_PER_S
    gpus = len(plan.ranks)
    compute = max(micro[d] * (stages[d][s].forward_ps + stages[d][s].backward_ps) for d in range(dp) for s in range(pp))
    comm = {
        TP: max(micro[d] * 2 * stages[d][s].tp_ps for d in range(dp) for s in range(pp)),
        PP: max(micro[d] * (stages[d][s].send_forward_ps + stages[d][s].send_backward_ps)
                for d in range(dp) for s in range(pp)),
        DP: max(dp_stage),
        EP: max(micro[d] * 2 * stages[d][s].ep_ps for d in range(dp) for s in range(pp)),
    }
    save = plan.checkpoint_save_ps / plan.checkpoint_every if plan.checkpoint_every else 0
    return {
        "iteration_time_ps": round(iteration),
        "compute_ps": round(compute),
        "bubble_ps": round(max(p["bubble_ps"] for p in pipelines)),
        "pipeline_ps": round(pipeline_ps),
        "dp_tail_ps": round(max(0.0, dp_end - pipeline_ps)),
        "exposed_all_gather_ps": round(exposed_gather),
        "comm_ps": {dim: round(value) for dim, value in comm.items()},
        "tokens_per_gpu_per_s": plan.tokens_per_iteration / seconds / gpus,
        "mfu_effective": plan.flops_per_iteration / seconds / sum(g.peak_flops_per_s for g in network.gpu),
        "gpus": gpus,
        "stages": [
            {
                "layers": sizes[s].layers,
                "forward_ps": round(max(st[s].forward_ps for st in stages)),
                "backward_ps": round(max(st[s].backward_ps for st in stages)),
                "tp_ps": round(max(st[s].tp_ps for st in stages)),
                "ep_ps": round(max(st[s].ep_ps for st in stages)),
                "send_forward_ps": round(max(st[s].send_forward_ps for st in stages)),
                "send_backward_ps": round(max(st[s].send_backward_ps for st in stages)),
                "dp_ps": round(dp_stage[s]),
            }
            for s in range(pp)
        ],
        "replicas": [{"micro_batches": micro[d], "pipeline_ps": round(pipelines[d]["pipeline_ps"]),
                      "period_ps": round(pipelines[d]["period_ps"])} for d in range(dp)],
        "site_capacity_bps": {f"{a}->{b}": round(bps) for (a, b), bps in sorted(network.capacities.items())},
        "checkpoint_ps_per_iteration": round(save),
        "assumptions": list(ASSUMPTIONS),
    }


def _stage_times(layout: Layout, sizes: Sequence[StageSizes], network: _Network,
                 coll: _Collectives) -> list[list[StageTimes]]:
    """Per replica, per stage: compute and the per-micro-batch communication, each phase sharing the WAN."""
    tp, pp, dp = layout.tp, layout.pp, layout.dp
    tp_share = coll.phase(TP, layout.groups[TP])
    ep_share = coll.phase(EP, layout.groups[EP])
    pairs = [(layout.rank(t, d, s), layout.rank(t, d, s + 1)) for t in range(tp) for d in range(dp)
             for s in range(pp - 1)]
    pp_share = network.shared(network.hop(a, b) for pair in pairs for a, b in (pair, pair[::-1]))
    stages = [[StageTimes() for _ in range(pp)] for _ in range(dp)]
    for d in range(dp):
        for s in range(pp):
            stage, size = stages[d][s], sizes[s]
            for t in range(tp):
                rank = layout.rank(t, d, s)
                gpu = network.gpu[rank]
                stage.forward_ps = max(stage.forward_ps, compute_ps(size.forward_flops, gpu.peak_flops_per_s, gpu.mfu))
                stage.backward_ps = max(stage.backward_ps,
                                        compute_ps(size.backward_flops, gpu.peak_flops_per_s, gpu.mfu))
                if layout.group_of(TP, rank) >= 0:
                    group = layout.group_list[layout.group_of(TP, rank)]
                    stage.tp_ps = max(stage.tp_ps, coll.time("all-reduce", size.tp_bytes, group, tp_share))
                if layout.group_of(EP, rank) >= 0:
                    group = layout.group_list[layout.group_of(EP, rank)]
                    stage.ep_ps = max(stage.ep_ps, coll.time("all-to-all", size.ep_bytes, group, ep_share))
                if s < pp - 1:
                    nxt = layout.rank(t, d, s + 1)
                    stage.send_forward_ps = max(stage.send_forward_ps, coll.p2p(size.pp_bytes, rank, nxt, pp_share))
                    stage.hold_forward_ps = max(stage.hold_forward_ps,
                                                coll.p2p_held(size.pp_bytes, rank, nxt, pp_share))
                if s > 0:
                    prev = layout.rank(t, d, s - 1)
                    stage.send_backward_ps = max(stage.send_backward_ps,
                                                 coll.p2p(size.pp_bytes, rank, prev, pp_share))
                    stage.hold_backward_ps = max(stage.hold_backward_ps,
                                                 coll.p2p_held(size.pp_bytes, rank, prev, pp_share))
    return stages


def pipeline(stages: Sequence[StageTimes], micro_batches: int, overlap: bool) -> dict[str, Any]:
    """1F1B for one replica: its duration, steady-state period, fill/drain, and when each stage's last
    backward ends."""
    pp = len(stages)
    # per micro-batch, what holds each stage's compute stream, forward and backward
    fwd = [s.forward_ps + s.tp_ps + s.ep_ps + (0.0 if overlap else s.hold_forward_ps) for s in stages]
    bwd = [s.backward_ps + s.tp_ps + s.ep_ps + (0.0 if overlap else s.hold_backward_ps) for s in stages]
    # what a micro-batch waits for between stages on top of that (overlapped sends)
    down = [stages[s].send_forward_ps if overlap else 0.0 for s in range(pp - 1)]
    up = [stages[s + 1].send_backward_ps if overlap else 0.0 for s in range(pp - 1)]
    busy = [f + b for f, b in zip(fwd, bwd, strict=True)]
    period = max(busy)
    for s in range(pp):
        if overlap:  # a send stream passes one message at a time
            period = max(period, stages[s].hold_forward_ps if s < pp - 1 else 0.0,
                         stages[s].hold_backward_ps if s > 0 else 0.0)
        loop = sum(busy[s:]) + sum(down[s:]) + sum(up[s:])  # stage s -> last stage -> stage s
        period = max(period, loop / (pp - s))
    fill = sum(busy) + sum(down) + sum(up)
    pipeline = (micro_batches - 1) * period + fill
    finish = [pipeline - sum(bwd[k] + up[k] for k in range(s)) for s in range(pp)]
    return {"pipeline_ps": pipeline, "period_ps": period, "bubble_ps": pipeline - micro_batches * period,
            "finish_ps": finish}
