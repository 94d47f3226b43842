"""The network between a job's ranks, as the closed-form estimate sees it: per pair of ranks, a hop's
bandwidth alone on the network, its latency, and the sites it crosses between.

Inside a server on the scale-up mesh: the GPU's scale-up bandwidth and latency. Across servers over the
NICs: goodput = line rate x mtu/(mtu + 82) summed over planes (shared by GPUs that share a NIC), latency =
one-way path delay plus one chunk's serialisation per hop. GPUs that OLink joins (scale-up ports on one
supernode's switches, on one server or several) use B = port rate x 256/272 (payload per packet on the
wire) summed over planes, and alpha = the one-way path delay (propagation, switch latency) plus a chunk
stored and forwarded at each switch.

Between sites, messages that cross at the same time (one phase: PP, DP, ...) share the max-flow capacity
of the links from one site's GPU servers to the other's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import networkx as nx

from emulators.context import ScenarioContext
from emulators.model.job import JobPlan
from emulators.model.scenario import Endpoint, Scenario
from emulators.olink import spec as olink
from emulators.olink.topology import gpu_planes, in_network_switches
from emulators.registry import DEVICE_KINDS
from orchestrator.workload.hardware import (
    PS_PER_S,
    GpuHardware,
    goodput_fraction,
    gpu_of,
    nic_ports_of,
    nic_settings_of,
)
from orchestrator.workload.placement import scale_up_domains


@dataclass(frozen=True)
class Hop:
    """One rank sending to another: its bandwidth alone on the network, its latency, and the sites it
    leaves and enters when it crosses between two."""

    bps: float
    latency_ps: float
    crossing: tuple[str, str] | None = None
    ack_ps: float = 0.0  # an RDMA send completes when the last ACK is back: this much after delivery


class RankNetwork:
    """Hops between the plan's ranks over the scenario's links, and the capacity between its sites."""

    def __init__(self, scenario: Scenario, plan: JobPlan) -> None:
        self.scenario = scenario
        self.plan = plan
        self.context = ScenarioContext(scenario, DEVICE_KINDS)
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

