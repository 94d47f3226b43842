"""The ``fabrics:`` building block: two-tier leaf/spine fabrics, so a fabric is not written link by link.

Each fabric becomes servers ``<f>-s<n>`` on leaves ``<f>-leaf<i>`` joined by spines ``<f>-spine<j>`` (with
two planes ``<f>-a-leaf<i>``, ``<f>-b-spine<j>``, ...), and the links ``<server>.<port>`` and
``<leaf>.up<j>`` between them. The same document always expands to the same entries in the same order.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from emulators.gpu_server.gpus import DEFAULT_GPUS
from emulators.kernel.frame import MAX_PORTS
from emulators.model.units import parse_length_mm, shown
from emulators.registry import DEVICE_KINDS, DeviceKind
from orchestrator.errors import KeyPath, KeyProblem, listing
from orchestrator.scenario.builder import Builder, Origin

PLANES = ("a", "b")
SWITCH_KIND = "switch"
DEFAULT_MODE = "roce"
DEFAULT_SERVER_KIND = "tester"
GPU_SERVER_KIND = "gpu_server"  # one NIC (and leaf port) per GPU
DEFAULT_SERVER_LINK_MM = parse_length_mm("3m")
DEFAULT_UPLINK_MM = parse_length_mm("30m")
NIC = "nic"  # the dual-plane NIC's name in a server's nics option

# Keys of expanded entries that were written under another name in the fabric's spec.
_SERVER_KEYS = {"kind": "server_kind", "options": "server_options"}
_SWITCH_KEYS = {"options": "switch_options"}
_SERVER_LINK_KEYS = {"rate": "server_rate", "length": "server_link_length"}
_UPLINK_KEYS = {"rate": "uplink_rate", "length": "uplink_length"}


@dataclass(frozen=True)
class Fabric:
    """The shape of a two-tier fabric and the names of everything in it."""

    name: str
    planes: int
    leaves: int
    spines: int
    servers_per_leaf: int
    nics: int = 1  # NICs per server: one per GPU for GPU servers

    @property
    def servers(self) -> list[str]:
        return [f"{self.name}-s{n}" for n in range(self.leaves * self.servers_per_leaf)]

    @property
    def plane_names(self) -> tuple[str, ...]:
        return PLANES[: self.planes]

    @property
    def leaf_downlinks(self) -> int:
        return self.servers_per_leaf * self.nics

    def switch(self, plane: str, role: str, index: int) -> str:
        prefix = self.name if self.planes == 1 else f"{self.name}-{plane}"
        return f"{prefix}-{role}{index}"

    def nic_name(self, nic: int) -> str:
        return NIC if self.nics == 1 else f"{NIC}{nic}"

    def server_port(self, plane: str, nic: int = 0) -> str:
        return self.nic_name(nic) if self.planes == 1 else f"{self.nic_name(nic)}-{plane}"

    def nic_endpoint(self, server: str) -> str:
        """Where flows to or from a server start and end: its (first) NIC's (first) port."""
        return f"{server}/{self.server_port(PLANES[0])}"

    def server_links(self, plane: str) -> list[tuple[str, str, str]]:
        """(name, a, z) of the plane's links from each server's NICs to its leaf, in server order."""
        links = []
        for n, server in enumerate(self.servers):
            leaf = self.switch(plane, "leaf", n // self.servers_per_leaf)
            for nic in range(self.nics):
                port = self.server_port(plane, nic)
                down = (n % self.servers_per_leaf) * self.nics + nic
                links.append((f"{server}.{port}", f"{server}/{port}", f"{leaf}/down{down}"))
        return links

    def uplinks(self, plane: str) -> list[tuple[str, str, str]]:
        """(name, a, z) of the plane's links from each leaf to each spine, leaf by leaf."""
        return [
            (f"{leaf}.up{j}", f"{leaf}/up{j}", f"{self.switch(plane, 'spine', j)}/down{i}")
            for i in range(self.leaves)
            for leaf in [self.switch(plane, "leaf", i)]
            for j in range(self.spines)
        ]

    @property
    def plane_links(self) -> int:
        """How many links each plane has: its server links and its uplinks."""
        return self.leaves * self.servers_per_leaf * self.nics + self.leaves * self.spines

    def plane_link_names(self, plane: str) -> list[str]:
        return [name for name, _, _ in self.server_links(plane) + self.uplinks(plane)]


def add_fabrics(builder: Builder, specs: dict[str, Any]) -> dict[str, Fabric]:
    """Add every fabric's servers, switches and links, in order; the fabrics' shapes by name."""
    fabrics: dict[str, Fabric] = {}
    for name, spec in specs.items():
        fabrics[name] = _add_fabric(builder, name, spec, ("fabrics", name))
    return fabrics


def fabric_named(fabrics: dict[str, Fabric], name: str, path: KeyPath) -> Fabric:
    fabric = fabrics.get(name)
    if fabric is None:
        raise KeyProblem(path, f"no fabric named {shown(name)}; fabrics: {listing(fabrics)}")
    return fabric


def _add_fabric(builder: Builder, name: str, spec: dict[str, Any], path: KeyPath) -> Fabric:
    fabric = _shape(name, spec, path)
    servers = fabric.leaves * fabric.servers_per_leaf
    builder.reserve(path, servers + fabric.planes * (fabric.leaves + fabric.spines),
                    fabric.planes * (servers * fabric.nics + fabric.leaves * fabric.spines))
    server_rate = spec["server_rate"]
    uplink_rate = _uplink_rate(fabric, spec, server_rate, path)
    server_length = spec.get("server_link_length", DEFAULT_SERVER_LINK_MM)
    uplink_length = spec.get("uplink_length", DEFAULT_UPLINK_MM)
    site = {"site": spec["site"]} if "site" in spec else {}

    ports = [fabric.server_port(plane, nic) for nic in range(fabric.nics) for plane in fabric.plane_names]
    for server in fabric.servers:
        options = copy.deepcopy(spec.get("server_options", {}))
        if fabric.planes == 2:
            options["nics"] = {
                fabric.nic_name(nic): [fabric.server_port(plane, nic) for plane in fabric.plane_names]
                for nic in range(fabric.nics)
            }
        server_spec = {"kind": spec.get("server_kind", DEFAULT_SERVER_KIND), **site, "ports": list(ports)}
        if options:
            server_spec["options"] = options
        builder.add_device(server, server_spec, Origin(path, _SERVER_KEYS))
    for plane in fabric.plane_names:
        leaf_ports = [f"down{k}" for k in range(fabric.leaf_downlinks)] + [f"up{j}" for j in range(fabric.spines)]
        for i in range(fabric.leaves):
            leaf = _switch_spec(spec, site, "leaf", leaf_ports)
            builder.add_device(fabric.switch(plane, "leaf", i), leaf, Origin(path, _SWITCH_KEYS))
        spine_ports = [f"down{i}" for i in range(fabric.leaves)]
        for j in range(fabric.spines):
            spine = _switch_spec(spec, site, "spine", spine_ports)
            builder.add_device(fabric.switch(plane, "spine", j), spine, Origin(path, _SWITCH_KEYS))

    for plane in fabric.plane_names:
        for link_name, a, z in fabric.server_links(plane):
            link = {"name": link_name, "a": a, "z": z, "rate": server_rate, "length": server_length}
            builder.add_link(link, Origin(path, _SERVER_LINK_KEYS))
        for link_name, a, z in fabric.uplinks(plane):
            link = {"name": link_name, "a": a, "z": z, "rate": uplink_rate, "length": uplink_length}
            builder.add_link(link, Origin(path, _UPLINK_KEYS))
    return fabric


def _shape(name: str, spec: dict[str, Any], path: KeyPath) -> Fabric:
    kind = spec.get("server_kind", DEFAULT_SERVER_KIND)
    gpus = spec.get("server_options", {}).get("gpus", DEFAULT_GPUS) if kind == GPU_SERVER_KIND else 1
    nics = gpus if isinstance(gpus, int) and gpus > 0 else 1  # a bad count is the resolver's to report
    fabric = Fabric(name, spec.get("planes", 1), spec["leaves"], spec["spines"], spec["servers_per_leaf"], nics)
    if fabric.spines == 0 and fabric.leaves > 1:
        raise KeyProblem(
            (*path, "spines"),
            f"0 spines can serve only one leaf and this fabric has {fabric.leaves}; give spines >= 1",
        )
    leaf_ports = fabric.leaf_downlinks + fabric.spines
    if leaf_ports > MAX_PORTS:
        nics_each = f" ({nics} NICs each)" if nics > 1 else ""
        raise KeyProblem((*path, "servers_per_leaf"), (
            f"a leaf would have {leaf_ports} ports, {fabric.leaf_downlinks} to its {fabric.servers_per_leaf} "
            f"servers{nics_each} and {fabric.spines} to spines, more than the {MAX_PORTS} a device may have (a "
            "frame's address holds the port index in 8 bits); use fewer servers per leaf and more leaves"))
    server_kind = DEVICE_KINDS.get(spec.get("server_kind", DEFAULT_SERVER_KIND))
    if fabric.planes == 2 and server_kind is not None:  # an unknown kind is the resolver's to report
        if not _bonds_nics(server_kind):
            dual = [kind.name for kind in DEVICE_KINDS.values() if _bonds_nics(kind)]
            raise KeyProblem(
                (*path, "planes"),
                f"two planes need servers with dual-plane NICs (the nics option), and server kind "
                f"{server_kind.name!r} has none; kinds that do: {listing(dual)}",
            )
        if "nics" in spec.get("server_options", {}):
            raise KeyProblem(
                (*path, "server_options", "nics"),
                f"is set by the fabric: with two planes each server's NIC bonds "
                f"{fabric.server_port('a')} and {fabric.server_port('b')}; leave it out",
            )
    for key in ("mode", "role"):
        if key in spec.get("switch_options", {}):
            source = "the fabric's mode key" if key == "mode" else "where each switch sits (leaf or spine)"
            raise KeyProblem(
                (*path, "switch_options", key), f"is set by the fabric, from {source}; leave it out here"
            )
    return fabric


def _uplink_rate(fabric: Fabric, spec: dict[str, Any], server_rate: int, path: KeyPath) -> int | None:
    if "uplink_rate" in spec and "oversubscription" in spec:
        raise KeyProblem(
            (*path, "oversubscription"),
            "conflicts with uplink_rate; give uplink_rate, or oversubscription to derive it from the server rate",
        )
    if "uplink_rate" in spec:
        written: int = spec["uplink_rate"]
        return written
    if fabric.spines == 0:
        return None
    oversubscription = Fraction(str(spec.get("oversubscription", 1)))  # str: 1.1 is 11/10, as written
    rate = math.floor(server_rate * fabric.leaf_downlinks / (oversubscription * fabric.spines))
    if rate < 1:
        raise KeyProblem(
            (*path, "oversubscription"),
            f"{shown(spec.get('oversubscription', 1))} leaves less than 1 bit/s per uplink; lower it",
        )
    return rate


def _switch_spec(spec: dict[str, Any], site: dict[str, Any], role: str, ports: list[str]) -> dict[str, Any]:
    options = copy.deepcopy(spec.get("switch_options", {}))
    options.update(mode=spec.get("mode", DEFAULT_MODE), role=role)
    return {"kind": SWITCH_KIND, **site, "ports": list(ports), "options": options}


def _bonds_nics(kind: DeviceKind) -> bool:
    """Kinds whose NICs may span two ports (one per plane) take the nics option."""
    return "nics" in kind.options_schema.get("properties", {})
