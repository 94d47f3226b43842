"""The ``supernodes:`` building block: GPU servers joined by OLink scale-up switches, one or two tiers.

A supernode of N GPUs is ``N / gpus per server`` GPU servers, either its own (``<sn>-s<n>``, with no NIC
ports) or the next ones of a fabric (``fabric:``, servers taken in order). Each GPU gets one scale-up port
per plane (``olink<g>``, or ``olink<g>-<p>`` with several planes) and each plane its own switches: one
switch ``<sn>-sw`` (``<sn>-sw<p>``) with a port ``p<i>`` per GPU, or leaves ``<sn>-l<i>`` of radix/2 GPU
ports with uplinks ``up<j>`` to spines ``<sn>-sp<j>`` (``<sn>-<p>-l<i>``, ``<sn>-<p>-sp<j>``), one port
``p<i>`` per leaf. ``<sn>`` is the supernode's name, or ``<name><k>`` when ``count`` makes several.
Links are named ``<server>.<port>`` and ``<leaf>.up<j>``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from emulators.gpu_server.gpus import DEFAULT_GPU, DEFAULT_GPUS, GPU_TYPES
from emulators.kernel.frame import MAX_PORTS
from emulators.model.units import parse_length_mm, parse_rate, shown
from emulators.olink import spec as olink
from orchestrator.errors import KeyPath, KeyProblem
from orchestrator.scenario.builder import Builder, Origin
from orchestrator.scenario.fabric import GPU_SERVER_KIND, Fabric, fabric_named

DEFAULT_RADIX = 64
DEFAULT_LENGTH_MM = parse_length_mm("2m")
DEFAULT_UPLINK_LENGTH_MM = parse_length_mm("2m")

# Keys of expanded entries that were written under another name in the supernode's spec.
_SERVER_KEYS = {"options": "server_options"}
_SWITCH_KEYS = {"options": "switch_options"}
_UPLINK_KEYS = {"rate": "uplink_rate", "length": "uplink_length"}
_TWO_TIER_KEYS = ("spines", "uplink_rate", "uplink_length")


@dataclass(frozen=True)
class Supernode:
    """The shape of one supernode and the names of everything in it."""

    name: str
    servers: tuple[str, ...]
    gpus_per_server: int
    planes: int
    tiers: int
    radix: int
    spines: int = 0  # per plane, with two tiers

    @property
    def gpus(self) -> int:
        return len(self.servers) * self.gpus_per_server

    @property
    def leaf_gpus(self) -> int:
        """GPU ports per leaf: half of its ports, the other half up to the spines."""
        return self.radix // 2

    @property
    def leaves(self) -> int:
        return -(-self.gpus // self.leaf_gpus)

    def prefix(self, plane: int) -> str:
        return self.name if self.planes == 1 else f"{self.name}-{plane}"

    def switch(self, plane: int) -> str:
        return f"{self.name}-sw" if self.planes == 1 else f"{self.name}-sw{plane}"

    def leaf(self, plane: int, i: int) -> str:
        return f"{self.prefix(plane)}-l{i}"

    def spine(self, plane: int, j: int) -> str:
        return f"{self.prefix(plane)}-sp{j}"

    def server_ports(self) -> list[str]:
        return [olink.scale_up_port(g, p, self.planes) for g in range(self.gpus_per_server) for p in range(self.planes)]

    def switches(self, plane: int) -> list[tuple[str, list[str]]]:
        """(name, ports) of the plane's switches: the switch, or the leaves then the spines."""
        if self.tiers == 1:
            return [(self.switch(plane), [f"p{i}" for i in range(self.gpus)])]
        uplinks = [f"up{j}" for j in range(self.spines)]
        on_leaf = [min(self.leaf_gpus, self.gpus - i * self.leaf_gpus) for i in range(self.leaves)]  # the last: fewer
        leaves = [(self.leaf(plane, i), [f"p{k}" for k in range(n)] + uplinks) for i, n in enumerate(on_leaf)]
        spines = [(self.spine(plane, j), [f"p{i}" for i in range(self.leaves)]) for j in range(self.spines)]
        return leaves + spines

    def gpu_links(self, plane: int) -> list[tuple[str, str, str]]:
        """(name, a, z) of the plane's links from each GPU to its switch or leaf, server by server."""
        links = []
        for n, server in enumerate(self.servers):
            for g in range(self.gpus_per_server):
                index = n * self.gpus_per_server + g  # the GPU's place in the supernode
                if self.tiers == 1:
                    switch, port = self.switch(plane), f"p{index}"
                else:
                    switch, port = self.leaf(plane, index // self.leaf_gpus), f"p{index % self.leaf_gpus}"
                gpu_port = olink.scale_up_port(g, plane, self.planes)
                links.append((f"{server}.{gpu_port}", f"{server}/{gpu_port}", f"{switch}/{port}"))
        return links

    def uplinks(self, plane: int) -> list[tuple[str, str, str]]:
        """(name, a, z) of the plane's links from each leaf to each spine, leaf by leaf."""
        if self.tiers == 1:
            return []
        return [
            (f"{leaf}.up{j}", f"{leaf}/up{j}", f"{self.spine(plane, j)}/p{i}")
            for i in range(self.leaves)
            for leaf in [self.leaf(plane, i)]
            for j in range(self.spines)
        ]


def add_supernodes(builder: Builder, fabrics: dict[str, Fabric], specs: dict[str, Any]) -> None:
    """Add every supernode's servers (or OLink ports on a fabric's), switches and links, in order."""
    taken: set[str] = set()  # fabric servers already in a supernode
    for name, spec in specs.items():
        _add(builder, fabrics, name, spec, ("supernodes", name), taken)


def _add(
    x: Builder, fabrics: dict[str, Fabric], name: str, spec: dict[str, Any], path: KeyPath, taken: set[str]
) -> None:
    server_options, options_path, free = _server_source(x, fabrics, spec, path, taken)
    per_server = _gpus_per_server(server_options, options_path)
    gpus, count, planes = spec["gpus"], spec.get("count", 1), spec.get("planes", 1)
    if gpus % per_server:
        raise KeyProblem((*path, "gpus"), (
            f"{gpus} GPUs do not fill whole servers of {per_server} GPUs; make gpus a multiple of {per_server}"))
    per_supernode = gpus // per_server
    if free is not None and len(free) < count * per_supernode:
        fabric = spec["fabric"]
        supernodes = f"{count} supernodes of {gpus} GPUs need" if count > 1 else f"a supernode of {gpus} GPUs needs"
        raise KeyProblem((*path, "fabric"), (
            f"fabric {fabric!r} has {len(free)} servers not yet in a supernode, and {supernodes} "
            f"{count * per_supernode} of its {per_server}-GPU servers; lower count or gpus, or give the fabric "
            "more servers"))
    radix = spec.get("radix", DEFAULT_RADIX)
    tiers = spec.get("tiers", 1 if gpus <= radix else 2)
    spines = _check_tiers(spec, gpus, tiers, radix, path)
    rate = _rate(spec, server_options, options_path, planes, path)
    if "uplink_rate" in spec:
        uplink_rate: int = spec["uplink_rate"]
    else:  # non-blocking: a leaf's uplinks carry what its GPU ports can
        uplink_rate = max(1, rate * (radix // 2) // spines) if spines else 0
    length = spec.get("length", DEFAULT_LENGTH_MM)
    uplink_length = spec.get("uplink_length", DEFAULT_UPLINK_LENGTH_MM)
    shape = Supernode(name, ("",) * per_supernode, per_server, planes, tiers, radix, spines)
    own_ports = 0 if free is None else max((len(x.devices[server]["ports"]) for server in free), default=0)
    _check_port_count(shape, own_ports + per_server * planes, path)  # before any port list is made
    switches = planes * (1 if tiers == 1 else shape.leaves + spines)
    links = planes * (gpus + (shape.leaves * spines if tiers == 2 else 0))
    x.reserve(path, count * (switches + (per_supernode if free is None else 0)), count * links)

    for k in range(count):
        sn_name = name if count == 1 else f"{name}{k}"
        if free is None:
            servers = tuple(f"{sn_name}-s{n}" for n in range(per_supernode))
        else:
            servers = tuple(free[k * per_supernode:(k + 1) * per_supernode])
            taken.update(servers)
        sn = Supernode(sn_name, servers, per_server, planes, tiers, radix, spines)
        site = _add_servers(x, sn, spec, path)
        for plane in range(planes):
            for switch, ports in sn.switches(plane):
                device = {"kind": olink.KIND, **site, "ports": ports,
                          "options": copy.deepcopy(spec.get("switch_options", {}))}
                x.add_device(switch, device, Origin(path, _SWITCH_KEYS))
        for plane in range(planes):
            for link_name, a, z in sn.gpu_links(plane):
                x.add_link({"name": link_name, "a": a, "z": z, "rate": rate, "length": length}, Origin(path))
            for link_name, a, z in sn.uplinks(plane):
                link = {"name": link_name, "a": a, "z": z, "rate": uplink_rate, "length": uplink_length}
                x.add_link(link, Origin(path, _UPLINK_KEYS))


def _server_source(
    x: Builder, fabrics: dict[str, Fabric], spec: dict[str, Any], path: KeyPath, taken: set[str]
) -> tuple[dict[str, Any], KeyPath, list[str] | None]:
    """The servers' options, where they were written, and the fabric servers still free (None: the
    supernode makes its own servers)."""
    if "fabric" not in spec:
        return spec.get("server_options", {}), (*path, "server_options"), None
    for key in ("site", "server_options"):
        if key in spec:
            raise KeyProblem((*path, key), (
                f"comes from fabric {spec['fabric']!r}, whose servers the supernode takes; set it on the fabric, "
                "or leave fabric out to make the supernode's own servers"))
    fabric = fabric_named(fabrics, spec["fabric"], (*path, "fabric"))
    written = x.written["fabrics"][fabric.name]
    kind = written.get("server_kind", "tester")
    if kind != GPU_SERVER_KIND:
        raise KeyProblem((*path, "fabric"), (
            f"fabric {fabric.name!r} has {kind} servers, and a supernode joins GPUs; give the fabric "
            f"server_kind: {GPU_SERVER_KIND}"))
    free = [server for server in fabric.servers if server not in taken]
    return written.get("server_options", {}), ("fabrics", fabric.name, "server_options"), free


def _gpus_per_server(options: dict[str, Any], path: KeyPath) -> int:
    gpus = options.get("gpus", DEFAULT_GPUS)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise KeyProblem((*path, "gpus"), f"expected a whole number of 1 or more, got {shown(gpus)}")
    return gpus


def _check_tiers(spec: dict[str, Any], gpus: int, tiers: int, radix: int, path: KeyPath) -> int:
    """The spines per plane (0 with one tier), once the shape fits the switches' ports."""
    if tiers == 1:
        for key in _TWO_TIER_KEYS:
            if key in spec:
                raise KeyProblem((*path, key), "goes with tiers: 2; a one-tier supernode has no spines or uplinks")
        if gpus > radix:
            raise KeyProblem((*path, "tiers"), (
                f"one tier of {radix}-port switches joins at most {radix} GPUs, and this supernode has {gpus}; "
                f"use tiers: 2, or a radix of at least {gpus}"))
        return 0
    leaf_gpus = radix // 2
    spines = spec.get("spines", leaf_gpus)
    if leaf_gpus + spines > radix:
        raise KeyProblem((*path, "spines"), (
            f"{spines} uplinks beside {leaf_gpus} GPU ports are more than a leaf's {radix} ports; give at most "
            f"{radix - leaf_gpus} spines"))
    leaves = -(-gpus // leaf_gpus)
    if leaves > radix:
        enough = next(r for r in range(radix, MAX_PORTS + 1) if -(-gpus // (r // 2)) <= r)
        raise KeyProblem((*path, "radix"), (
            f"{gpus} GPUs need {leaves} leaves of {leaf_gpus} GPU ports, and a {radix}-port spine joins at most "
            f"{radix}; raise radix to at least {enough}, or lower gpus"))
    return spines


def _rate(spec: dict[str, Any], options: dict[str, Any], options_path: KeyPath, planes: int, path: KeyPath) -> int:
    """Each GPU port's rate: as written, or the GPU type's scale-up bandwidth shared by the planes."""
    if "rate" in spec:
        rate: int = spec["rate"]
        return rate
    if "scale_up_bandwidth" in options:  # an option, as written: the device converts it again with the others
        try:
            bandwidth = parse_rate(options["scale_up_bandwidth"])
        except ValueError as e:
            raise KeyProblem((*options_path, "scale_up_bandwidth"), str(e)) from None
    else:
        gpu = options.get("gpu", DEFAULT_GPU)
        if gpu not in GPU_TYPES:
            allowed = ", ".join(GPU_TYPES)
            raise KeyProblem((*options_path, "gpu"), f"{shown(gpu)} is not allowed; allowed: {allowed}")
        bandwidth = GPU_TYPES[gpu].scale_up_bps
    if bandwidth < planes:
        raise KeyProblem((*path, "planes"), f"{planes} planes leave less than 1 bit/s per port; give rate")
    return bandwidth // planes


def _add_servers(x: Builder, sn: Supernode, spec: dict[str, Any], path: KeyPath) -> dict[str, Any]:
    """Make the supernode's servers, or give the fabric's their scale-up ports; the site its switches take."""
    new_ports = sn.server_ports()
    if "fabric" not in spec:
        _check_port_count(sn, len(new_ports), path)
        site = {"site": spec["site"]} if "site" in spec else {}
        for server in sn.servers:
            device = {"kind": GPU_SERVER_KIND, **site, "ports": list(new_ports)}
            if "server_options" in spec:
                device["options"] = copy.deepcopy(spec["server_options"])
            x.add_device(server, device, Origin(path, _SERVER_KEYS))
        return site
    for server in sn.servers:
        ports = [*x.devices[server]["ports"], *new_ports]
        _check_port_count(sn, len(ports), path)
        x.change_device(server, ports=ports)
    first = x.devices[sn.servers[0]]
    return {"site": first["site"]} if "site" in first else {}


def _check_port_count(sn: Supernode, ports: int, path: KeyPath) -> None:
    if ports > MAX_PORTS:
        raise KeyProblem((*path, "planes"), (
            f"{sn.planes} planes give each server {ports} ports, more than the {MAX_PORTS} a device may have (a "
            "frame's address holds the port index in 8 bits); use fewer planes"))
