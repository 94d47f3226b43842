"""Closed-form times of collectives and p2p messages, with S the buffer in bits over B the bandwidth and
alpha the per-step latency:

- ring all-reduce 2(g-1)(S/(gB) + alpha); reduce-scatter and all-gather (g-1)(S/(gB) + alpha);
- all-to-all (g-1)S/(gB) + alpha; a p2p message S/B + alpha;

B and alpha are the hops' (orchestrator.workload.network). Over OLink a ring step moves ceil(S/g). When
one switch per plane reaches every member and reduces in the network, all-reduce takes S/B + 2 alpha,
reduce-scatter S/B + alpha and all-gather (g-1)S/(gB) + alpha: each GPU sends its data once and receives
the result once. A ring's step takes as long as its slowest hop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from emulators.model.job import EP, HIERARCHICAL
from orchestrator.workload.hardware import PS_PER_S
from orchestrator.workload.network import RankNetwork


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


# --- a job's collectives over the network between its ranks --------------------------------------


def _ring(group: Sequence[int]) -> list[tuple[int, int]]:
    return [(group[i], group[(i + 1) % len(group)]) for i in range(len(group))]


class CollectiveTimes:
    """Closed-form times of the job's collectives, with the bandwidth each phase leaves them."""

    def __init__(self, network: RankNetwork, algorithm: str) -> None:
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

