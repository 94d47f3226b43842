"""Where ranks run and which ranks talk: the Megatron rank layout, rank -> GPU, and the groups.

A rank's coordinates are (t, d, p): its TP index, DP replica and PP stage. The layout numbers ranks
with t fastest; ``pp-across-sites`` then d, then p (each stage fills consecutive GPUs, so with servers
in site order the stages fall in different sites); ``dp-across-sites`` then p, then d (each replica
fills consecutive GPUs). Rank r runs on the r-th GPU, GPUs counted server by server, unless a
rank_map says where each rank runs (it keeps the Megatron order t, d, p).

A TP group stays inside one scale-up domain: a server, or a supernode (GPUs that OLink switches join).
Servers sort by name with numbers by value, so a supernode's servers (``sn-s0``, ``sn-s1``, ... or a
fabric's in order) are consecutive and TP and EP groups fall inside supernodes; a group that would
straddle two supernodes (or a supernode and another server) while one could hold it is refused.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from emulators.model.job import DP, EP, PP, TP, RankPlace
from emulators.model.scenario import DeviceSpec, Scenario
from emulators.olink.spec import scale_up_ports
from emulators.olink.topology import gpu_domain
from orchestrator.errors import listing
from orchestrator.workload.hardware import GPU_SERVER_KIND, gpus_of

PP_ACROSS_SITES, DP_ACROSS_SITES, RANK_MAP = "pp-across-sites", "dp-across-sites", "rank_map"
PLACEMENTS = (PP_ACROSS_SITES, DP_ACROSS_SITES)
# the order of the coordinates in a rank number, fastest first
RANK_ORDERS: dict[str, tuple[str, str, str]] = {
    PP_ACROSS_SITES: (TP, DP, PP),
    DP_ACROSS_SITES: (TP, PP, DP),
    RANK_MAP: (TP, DP, PP),
}
EDP = "edp"  # expert-data-parallel groups: the DP replicas holding the same experts


@dataclass(frozen=True)
class Layout:
    """Rank numbers <-> (t, d, p) coordinates, and the collective groups that follow from them."""

    tp: int
    pp: int
    dp: int
    ep: int
    order: tuple[str, str, str]  # fastest first
    moe: bool = False  # the model has experts: their gradients sync over the expert-DP groups

    @property
    def size(self) -> int:
        return self.tp * self.pp * self.dp

    def _extent(self, dim: str) -> int:
        return {TP: self.tp, PP: self.pp, DP: self.dp}[dim]

    def rank(self, t: int, d: int, p: int) -> int:
        at = {TP: t, DP: d, PP: p}
        rank, stride = 0, 1
        for dim in self.order:
            rank += at[dim] * stride
            stride *= self._extent(dim)
        return rank

    def coordinates(self, rank: int) -> tuple[int, int, int]:
        """(t, d, p) of a rank."""
        at = {}
        for dim in self.order:
            rank, at[dim] = divmod(rank, self._extent(dim))
        return at[TP], at[DP], at[PP]

    @cached_property
    def groups(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Each dimension's groups, members in ring order (increasing rank). Only groups that carry
        traffic: TP if tp > 1, DP if dp > 1, EP if ep > 1, expert-DP if the model has experts, ep > 1
        and dp / ep > 1 (with ep = 1 the experts' gradients ride in the DP group's all-reduce)."""
        tp, pp, dp, ep = self.tp, self.pp, self.dp, self.ep
        found: dict[str, list[tuple[int, ...]]] = {TP: [], DP: [], EP: [], EDP: []}
        for p in range(pp):
            for d in range(dp):
                if tp > 1:
                    found[TP].append(tuple(sorted(self.rank(t, d, p) for t in range(tp))))
            for t in range(tp):
                if dp > 1:
                    found[DP].append(tuple(sorted(self.rank(t, d, p) for d in range(dp))))
                for block in range(dp // ep):
                    if ep > 1:
                        found[EP].append(tuple(sorted(self.rank(t, block * ep + e, p) for e in range(ep))))
                for e in range(ep):
                    if self.moe and ep > 1 and dp // ep > 1:
                        found[EDP].append(tuple(sorted(self.rank(t, k * ep + e, p) for k in range(dp // ep))))
        return {dim: tuple(sorted(members)) for dim, members in found.items()}

    @cached_property
    def group_list(self) -> tuple[tuple[int, ...], ...]:
        """Every group, as JobPlan.groups lists them: TP groups, then DP, EP and expert-DP."""
        return tuple(g for dim in (TP, DP, EP, EDP) for g in self.groups[dim])

    @cached_property
    def group_ranges(self) -> dict[str, tuple[int, int]]:
        """Dimension -> (index of its first group in group_list, how many)."""
        ranges, start = {}, 0
        for dim in (TP, DP, EP, EDP):
            ranges[dim] = (start, len(self.groups[dim]))
            start += len(self.groups[dim])
        return ranges

    @cached_property
    def _group_of(self) -> dict[tuple[str, int], int]:
        index: dict[tuple[str, int], int] = {}
        for dim, (start, count) in self.group_ranges.items():
            for g in range(start, start + count):
                for rank in self.group_list[g]:
                    index[(dim, rank)] = g
        return index

    def group_of(self, dim: str, rank: int) -> int:
        """The index (in group_list) of the rank's group of a dimension; -1 if that dimension has none."""
        return self._group_of.get((dim, rank), -1)


def natural(name: str) -> tuple[tuple[int, str], ...]:
    """A sort key that orders numbers by value: dc1-s2 before dc1-s10 (as a fabric numbers servers)."""
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", name) if part)


def ordered_servers(devices: Sequence[DeviceSpec], sites: Sequence[str]) -> list[DeviceSpec]:
    """Every GPU server, ordered by site (as the scenario lists sites, then the others by name, servers
    without one last), then by name, numbers by value."""
    position = {site: i for i, site in enumerate(sites)}

    def key(device: DeviceSpec) -> tuple[int, tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]:
        site = device.site
        rank = position.get(site, len(position)) if site is not None else len(position) + 1
        return rank, natural(site or ""), natural(device.name)

    return sorted((d for d in devices if d.kind == GPU_SERVER_KIND), key=key)


def gpu_slots(servers: Sequence[DeviceSpec]) -> list[RankPlace]:
    """The servers' GPUs in rank order: server by server, GPU index within."""
    return [RankPlace(server.name, g) for server in servers for g in range(gpus_of(server))]


def parse_slot(text: str) -> tuple[str, int]:
    """``"server:gpu"`` -> (server, gpu); the schema has checked the form."""
    server, _, gpu = text.rpartition(":")
    return server, int(gpu)


# --- supernodes ----------------------------------------------------------------------------------

Domain = tuple[str, str | int]  # ("server", name) for a server alone, ("supernode", index) for OLink's


def scale_up_domains(topology: Scenario) -> dict[tuple[str, int], int]:
    """(GPU server, GPU) -> the supernode OLink joins it to (an index), for every GPU with a linked
    scale-up port: the rule the GPU server follows to send over OLink rather than its NIC."""
    return {
        (device.name, gpu): domain
        for device in topology.devices
        if device.kind == GPU_SERVER_KIND
        for gpu in scale_up_ports(device.ports)
        if (domain := gpu_domain(topology, device, gpu)) is not None
    }


def scale_up_problem(
    layout: Layout, slots: Sequence[RankPlace], supernode_of: Mapping[tuple[str, int], int]
) -> tuple[str, str] | None:
    """(tp or ep, what to change) when a TP group leaves its server or supernode, or an EP group straddles
    a supernode and another server or supernode though the supernode could hold it; None when neither."""
    domains = _Domains(slots, supernode_of)
    return _tp_problem(layout, domains) or _ep_problem(layout, domains)


_RANK_MAP = "place the ranks with placement: {rank_map: [...]}"
_TOGETHER = "list job.servers so that each group's servers come together"


class _Domains:
    """Each GPU slot's scale-up domain: its supernode, or its server when OLink does not join it."""

    def __init__(self, slots: Sequence[RankPlace], supernode_of: Mapping[tuple[str, int], int]) -> None:
        self.slots = slots
        joined = [supernode_of.get((s.device, s.gpu)) for s in slots]
        self.of: list[Domain] = [("server", s.device) if k is None else ("supernode", k)
                                 for s, k in zip(slots, joined, strict=True)]
        self.size = Counter(self.of)  # the job's GPUs in each domain
        self.any_supernode = any(kind == "supernode" for kind, _ in self.size)

    def spanned(self, group: Sequence[int]) -> list[Domain]:
        """The domains a group's ranks run in, in rank order."""
        return list(dict.fromkeys(self.of[rank] for rank in group))

    def describe(self, domain: Domain) -> str:
        if domain[0] == "server":
            return f"server {domain[1]}"
        servers = list(dict.fromkeys(s.device for s, d in zip(self.slots, self.of, strict=True) if d == domain))
        return f"the supernode of {servers[0]}" + (f"..{servers[-1]}" if len(servers) > 1 else "")


def _tp_problem(layout: Layout, domains: _Domains) -> tuple[str, str] | None:
    for group in layout.groups[TP]:
        where = domains.spanned(group)
        if len(where) < 2:
            continue
        if not domains.any_supernode:
            smallest = min(domains.size.values())
            why = (f"tp = {layout.tp} is more than the {smallest} GPUs of a server" if layout.tp > smallest
                   else f"the TP group of ranks {group[0]}..{group[-1]} spans servers "
                        f"{' and '.join(sorted(str(d[1]) for d in where))}")
            return TP, f"{why}; TP must stay inside a server (its GPU count a multiple of tp): lower tp, or {_RANK_MAP}"
        largest = max(domains.size.values())
        why = (f"tp = {layout.tp} is more than the {largest} GPUs the job has in any one server or supernode"
               if layout.tp > largest
               else f"the TP group of ranks {group[0]}..{group[-1]} spans {domains.describe(where[0])} and "
                    f"{domains.describe(where[1])}")
        return TP, (f"{why}; TP must stay inside a server or a supernode (its GPU count a multiple of tp): lower tp, "
                    f"{_TOGETHER}, or {_RANK_MAP}")
    return None


def _ep_problem(layout: Layout, domains: _Domains) -> tuple[str, str] | None:
    """EP may cross the fabric only when no supernode the group touches could hold it."""
    for group in layout.groups[EP]:
        where = domains.spanned(group)
        holders = [d for d in where if d[0] == "supernode"]
        span = group[-1] - group[0] + 1  # the consecutive GPUs the group's ranks lie among
        if len(where) < 2 or not holders or span > max(domains.size[d] for d in holders):
            continue
        holder = max(holders, key=lambda d: domains.size[d])
        return EP, (
            f"the EP group of ranks {listing(map(str, group), limit=8)} spans {domains.describe(where[0])} and "
            f"{domains.describe(where[1])}, though the job's {domains.size[holder]} GPUs in "
            f"{domains.describe(holder)} could hold the {span} it lies among; make the supernodes' GPU counts "
            f"multiples of {span}, {_TOGETHER}, or {_RANK_MAP}")
    return None
