"""The ``wan:`` building block: sites (fabrics) joined by computing gateways and OTN nodes.

Every site named in a pair gets a gateway ``gw-SITE`` (one port per spine of its fabric, ``dcJ``, and
``clients`` ports toward its OTN node, ``wanK``) and an OTN node ``otn-SITE`` (client ports ``cK``;
per remote site a working line port ``PEER-w`` and, with protection, ``PEER-p``). Line links are
named ``wan-A-B`` (working) and ``wan-A-B-protection``. The gateway's fabric side carries
``convergence`` times its WAN side (clients x client_rate).

WAN faults (``cut``/``repair`` a path, ``ber``, ``flexo``, ``lightpath``, and ASON/WSON restoration) are
classes of :mod:`orchestrator.scenario.fault_kinds`; they expand on the pairs made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from emulators.model.units import parse_length_mm, parse_time_ps, shown
from orchestrator.errors import KeyPath, KeyProblem, listing
from orchestrator.scenario.builder import Builder, Origin
from orchestrator.scenario.fabric import Fabric

GATEWAY_KIND = "gateway"
OTN_KIND = "otn"
DEFAULT_GATEWAY_LINK_MM = parse_length_mm("30m")
DEFAULT_CLIENT_LINK_MM = parse_length_mm("10m")
DEFAULT_SETUP_TIME_PS = parse_time_ps("2s")
PATHS = ("working", "protection")


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    protected: bool
    restoration: dict[str, Any] | None
    setup_time_ps: int
    on_demand: bool
    path: KeyPath
    odus: int = 1

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"

    def link(self, which: str, odu: int = 0) -> str:
        base = f"wan-{self.name}" + (f"-odu{odu}" if self.odus > 1 else "")
        return base if which == "working" else f"{base}-protection"

    def links(self, which: str = "both") -> list[str]:
        if which == "both":
            paths = [p for p in PATHS if p == "working" or self.protected]
        elif which == "protection" and not self.protected:
            raise KeyProblem(self.path, f"pair {self.name} has no protection path; give it protection first")
        else:
            paths = [which]
        return [self.link(p, k) for p in paths for k in range(self.odus)]


def line_port(peer: str, suffix: str, odu: int, odus: int) -> str:
    """An OTN node's line port toward ``peer``: working (w) or protection (p), per ODU when several."""
    return f"{peer}-{suffix}{odu}" if odus > 1 else f"{peer}-{suffix}"


def gateway(site: str) -> str:
    return f"gw-{site}"


def otn(site: str) -> str:
    return f"otn-{site}"


class WanExpander:
    """The WAN block's sites, pairs and line links, and the lightpaths torn down at the start."""

    def __init__(self, builder: Builder, fabrics: dict[str, Fabric], spec: dict[str, Any]) -> None:
        self.builder = builder
        self.fabrics = fabrics
        self.spec = spec
        self.pairs: dict[str, Pair] = {}

    def expand(self) -> None:
        spec = self.spec
        path: KeyPath = ("wan",)
        odus = spec.get("odus", 1)
        clients = spec.get("clients", odus)
        if odus > 1 and clients != odus:
            raise KeyProblem((*path, "odus"), f"{odus} ODUs need one client port each, and clients is {clients}")
        self.odus = odus
        client_rate: int = spec.get("client_rate", spec["line_rate"])
        wan_capacity = clients * client_rate
        convergence = Fraction(str(spec.get("convergence", 1)))
        sites: list[str] = []
        for index, pair in enumerate(spec["pairs"]):
            for key in ("a", "b"):
                site = pair[key]
                if "-" in site:
                    raise KeyProblem(
                        (*path, "pairs", index, key),
                        f"site {site!r} has a '-', which separates the sites in WAN names like "
                        "wan-A-B and A-B; rename the fabric without it",
                    )
                if site not in self.fabrics:
                    raise KeyProblem(
                        (*path, "pairs", index, key),
                        f"no fabric named {shown(site)}; a WAN joins fabrics: {listing(self.fabrics)}",
                    )
                if site not in sites:
                    sites.append(site)
            if pair["a"] == pair["b"]:
                raise KeyProblem((*path, "pairs", index, "b"), "joins a site to itself; name two different fabrics")
            name = f"{pair['a']}-{pair['b']}"
            if name in self.pairs or f"{pair['b']}-{pair['a']}" in self.pairs:
                raise KeyProblem((*path, "pairs", index), f"sites {pair['a']} and {pair['b']} are already joined")
            self.pairs[name] = Pair(
                pair["a"],
                pair["b"],
                "protection" in pair,
                pair.get("restoration"),
                pair.get("setup_time", DEFAULT_SETUP_TIME_PS),
                bool(pair.get("on_demand")),
                (*path, "pairs", index),
                odus,
            )
        for site in sites:
            self.add_site(site, clients, client_rate, wan_capacity, convergence, path)
        for index, pair in enumerate(spec["pairs"]):
            self.add_pair(pair, (*path, "pairs", index))

    def add_site(
        self, site: str, clients: int, client_rate: int, wan_capacity: int, convergence: Fraction, path: KeyPath
    ) -> None:
        fabric = self.fabrics[site]
        written = self.builder.written["fabrics"][site]
        site_key = {"site": written["site"]} if "site" in written else {"site": site}
        if "site" not in written:  # a fabric joined over the WAN is a site: name it after the fabric
            for device in self.builder.made_by(("fabrics", site)):
                self.builder.change_device(device, site=site)
        # the gateway hangs off every spine (or the single leaf of a spine-less fabric)
        if fabric.planes != 1:
            raise KeyProblem(path, f"fabric {site!r} has two planes; the WAN block joins single-plane fabrics")
        tops = [fabric.switch("a", "spine", j) for j in range(fabric.spines)] or [fabric.switch("a", "leaf", 0)]
        for top in tops:
            self.builder.change_device(top, ports=[*self.builder.devices[top]["ports"], "gw"])
        dc_rate = int(convergence * wan_capacity / len(tops))
        if dc_rate < 1:
            raise KeyProblem((*path, "convergence"), f"{shown(self.spec.get('convergence'))} leaves no capacity")
        gw_ports = [f"dc{j}" for j in range(len(tops))] + [f"wan{k}" for k in range(clients)]
        gw_options = dict(self.spec.get("gateway_options", {}))
        gw_options["wan_ports"] = [f"wan{k}" for k in range(clients)]
        self.builder.add_device(
            gateway(site),
            {"kind": GATEWAY_KIND, **site_key, "ports": gw_ports, "options": gw_options},
            Origin(path),
        )
        peers = [p.b if p.a == site else p.a for p in self.pairs.values() if site in (p.a, p.b)]
        otn_ports = [f"c{k}" for k in range(clients)]
        groups = []
        for peer in peers:
            pair = self.pair_between(site, peer)
            working = [line_port(peer, "w", k, self.odus) for k in range(self.odus)]
            otn_ports.extend(working)
            if pair.protected:
                protecting = [line_port(peer, "p", k, self.odus) for k in range(self.odus)]
                otn_ports.extend(protecting)
                protection = self.spec["pairs"][pair.path[-1]]["protection"]
                group = {"kind": protection.get("kind", "1+1"), "working": working, "protecting": protecting}
                for key in ("switch_time", "revertive"):
                    if key in protection:
                        group[key] = protection[key]
                groups.append(group)
        otn_options = dict(self.spec.get("otn_options", {}))
        if groups:
            otn_options["protection"] = groups
        if self.odus > 1:  # client k rides ODU k toward every peer
            otn_options["odus"] = {
                f"c{k}": [line_port(peer, "w", k, self.odus) for peer in peers] for k in range(clients)
            }
        self.builder.add_device(
            otn(site), {"kind": OTN_KIND, **site_key, "ports": otn_ports, "options": otn_options}, Origin(path)
        )
        for j, top in enumerate(tops):
            self.builder.add_link(
                {
                    "name": f"{gateway(site)}.dc{j}",
                    "a": f"{top}/gw",
                    "z": f"{gateway(site)}/dc{j}",
                    "rate": dc_rate,
                    "length": DEFAULT_GATEWAY_LINK_MM,
                },
                Origin(path),
            )
        for k in range(clients):
            self.builder.add_link(
                {
                    "name": f"{gateway(site)}.wan{k}",
                    "a": f"{gateway(site)}/wan{k}",
                    "z": f"{otn(site)}/c{k}",
                    "rate": client_rate,
                    "length": DEFAULT_CLIENT_LINK_MM,
                },
                Origin(path),
            )

    def add_pair(self, spec: dict[str, Any], path: KeyPath) -> None:
        pair = self.pairs[f"{spec['a']}-{spec['b']}"]
        rate = self.spec["line_rate"] // self.odus  # ODUs share the line
        ber = spec.get("ber", self.spec.get("ber"))  # neither: the links' default
        for which in PATHS:
            if which == "protection" and not pair.protected:
                continue
            length = spec["length"] if which == "working" else spec["protection"]["length"]
            suffix = "w" if which == "working" else "p"
            for k in range(self.odus):
                link = {
                    "name": pair.link(which, k),
                    "a": f"{otn(pair.a)}/{line_port(pair.b, suffix, k, self.odus)}",
                    "z": f"{otn(pair.b)}/{line_port(pair.a, suffix, k, self.odus)}",
                    "rate": rate,
                    "length": length,
                }
                if ber is not None:
                    link["ber"] = ber
                self.builder.add_link(link, Origin(path))

    def pair_between(self, site: str, peer: str) -> Pair:
        return self.pairs.get(f"{site}-{peer}") or self.pairs[f"{peer}-{site}"]

    # -- faults -----------------------------------------------------------------------------------
    def initial_faults(self) -> list[dict[str, Any]]:
        """On-demand lightpaths start torn down."""
        return [
            {"at": 0, "link": link, "state": "down", "_cause": "lightpath"}
            for pair in self.pairs.values()
            if pair.on_demand
            for link in pair.links()
        ]

    def pair_named(self, name: Any, path: KeyPath) -> Pair:
        pair = self.pairs.get(name)
        if pair is None:
            raise KeyProblem(path, f"no WAN pair {shown(name)}; pairs: {listing(self.pairs)}")
        return pair
