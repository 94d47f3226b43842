"""Fabrics, traffic patterns and plane faults, expanded into the devices, links, flows and faults
they stand for, so a leaf/spine fabric is not written link by link.

Pure functions on the schema-valid YAML document, run between the schema pass and the resolver:
what they make is checked and converted by the resolver like anything written by hand, and
:meth:`Expansion.where` turns a key path in the expanded document back into the key that was written.
The same document always expands to the same entries in the same order.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from emulators.gpu_server.gpus import DEFAULT_GPUS
from emulators.kernel.frame import MAX_PORTS
from emulators.model.units import parse_length_mm, parse_rate, parse_time_ps, shown
from emulators.registry import DEVICE_KINDS, DeviceKind
from orchestrator.scenario.schema_errors import KeyPath, key_path, listing

PLANES = ("a", "b")
SWITCH_KIND = "switch"
DEFAULT_MODE = "roce"
DEFAULT_SERVER_KIND = "tester"
GPU_SERVER_KIND = "gpu_server"  # one NIC (and leaf port) per GPU
DEFAULT_SERVER_LINK_LENGTH = "3m"
DEFAULT_UPLINK_LENGTH = "30m"
NIC = "nic"  # the dual-plane NIC's name in a server's nics option

RAW_FLOW_NEEDS_RATE = "required key is missing; raw flows send at a rate (only rdma flows may leave it out)"

# How large a scenario may grow once fabrics, supernodes, traffic patterns and plane faults expand; each is
# checked before a building block makes anything, so a typo in a count fails at once instead of filling memory.
MAX_DEVICES = 20_000  # Trial B at full size (512+512 GPUs) is ~150 devices; room for fabrics of 100,000 GPUs
MAX_LINKS = 100_000  # five per device: servers' NICs and OLink ports, leaf-spine meshes
MAX_FLOWS = 100_000  # a permutation over every server of the largest fabric, five times over
MAX_FAULTS = 100_000  # a plane or device fault is one per link: a plane of the largest fabric, and more

# The keys a traffic pattern passes on to each flow it makes, unchanged.
_FLOW_KEYS = ("transport", "bytes", "for", "rate", "start", "priority")
# Keys of expanded entries that were written under another name in the fabric's spec.
_SERVER_KEYS = {"kind": "server_kind", "options": "server_options"}
_SWITCH_KEYS = {"options": "switch_options"}
_SERVER_LINK_KEYS = {"rate": "server_rate", "length": "server_link_length"}
_UPLINK_KEYS = {"rate": "uplink_rate", "length": "uplink_length"}


class ExpansionError(Exception):
    """A problem in a fabric, traffic pattern or plane fault, at the key path where it was written."""

    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Origin:
    """Where an expanded entry was written, and which of its keys were written under other names."""

    path: KeyPath
    renamed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expansion:
    written: dict[str, Any]  # the document as written
    document: dict[str, Any]  # without fabrics and traffic; with every device, link, flow and fault
    origins: dict[KeyPath, Origin]  # ("links", 7) -> where that entry was written, when not there
    idle_faults: dict[int, str] = field(default_factory=dict)  # written fault -> why it changes no link

    def where(self, path: KeyPath) -> str:
        """A key path of the expanded document as the key that was written, or said to be expanded."""
        origin = self.origins.get(path[:2])
        if origin is None:
            return key_path(path)
        rest = path[2:]
        if rest and isinstance(rest[0], str):
            rest = (origin.renamed.get(rest[0], rest[0]), *rest[1:])
        if _holds(self.written, (*origin.path, *rest)):
            return key_path((*origin.path, *rest))
        return f"{key_path(path)} (expanded from {key_path(origin.path)})"


def expand(written: dict[str, Any]) -> Expansion:
    """The document with its fabrics, traffic patterns and plane faults replaced by what they make."""
    return _Expander(written).expansion()


def _holds(document: Any, path: KeyPath) -> bool:
    node = document
    for key in path:
        in_mapping = isinstance(node, dict) and key in node
        in_list = isinstance(node, list) and isinstance(key, int) and key < len(node)
        if not (in_mapping or in_list):
            return False
        node = node[key]
    return True


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


def _checked(parse: Callable[[Any], int], value: Any, path: KeyPath) -> int:
    try:
        return parse(value)
    except ValueError as e:
        raise ExpansionError(path, str(e)) from None


class _Expander:
    def __init__(self, written: dict[str, Any]) -> None:
        self.written = written
        self.devices: dict[str, Any] = dict(written.get("devices", {}))
        self.device_at: dict[str, KeyPath] = {name: ("devices", name) for name in self.devices}
        self.links: list[Any] = list(written.get("links", []))
        self.link_at: dict[str, KeyPath] = {
            spec["name"]: ("links", index) for index, spec in enumerate(self.links) if "name" in spec
        }
        self.fabrics: dict[str, Fabric] = {}
        self.origins: dict[KeyPath, Origin] = {}
        self.wan: Any = None  # the WAN block's expander, when there is one
        self.idle_faults: dict[int, str] = {}
        self._links_of: dict[str, list[str]] | None = None  # device -> names of its links, once all are made

    def expansion(self) -> Expansion:
        for name, spec in self.written.get("fabrics", {}).items():
            self.add_fabric(name, spec, ("fabrics", name))
        if "wan" in self.written:
            from orchestrator.scenario.wan import WanExpander  # it builds on this module

            self.wan = WanExpander(self, self.written["wan"])
            self.wan.expand()
        if "supernodes" in self.written:  # after the WAN, which names the sites of fabrics written without one
            from orchestrator.scenario.supernode import add_supernodes  # it builds on this module

            add_supernodes(self, self.written["supernodes"])
        for table, entries, most in (("devices", self.devices, MAX_DEVICES), ("links", self.links, MAX_LINKS)):
            if len(entries) > most:
                raise ExpansionError((table,), f"{len(entries):,} {table}, more than the {most:,} a scenario may have")
        flows = self.flows()
        faults = self.faults()
        shorthands = ("fabrics", "traffic", "wan", "supernodes")
        document = {key: value for key, value in self.written.items() if key not in shorthands}
        document.update(devices=self.devices, links=self.links, flows=flows, faults=faults)
        return Expansion(self.written, document, self.origins, self.idle_faults)

    def reserve(self, path: KeyPath, devices: int, links: int) -> None:
        """Refuse a building block that would take the scenario past :data:`MAX_DEVICES` or :data:`MAX_LINKS`,
        before it makes anything."""
        for what, more, have, most in (("devices", devices, len(self.devices), MAX_DEVICES),
                                       ("links", links, len(self.links), MAX_LINKS)):
            if have + more > most:
                before = f", which with the {have:,} before it is" if have else ","
                raise ExpansionError(path, (
                    f"makes {more:,} {what}{before} more than the {most:,} a scenario may have; make it smaller"))

    # --- fabrics ---------------------------------------------------------------------------------

    def add_fabric(self, name: str, spec: dict[str, Any], path: KeyPath) -> None:
        fabric = self.shape(name, spec, path)
        servers = fabric.leaves * fabric.servers_per_leaf
        self.reserve(path, servers + fabric.planes * (fabric.leaves + fabric.spines),
                     fabric.planes * (servers * fabric.nics + fabric.leaves * fabric.spines))
        self.fabrics[name] = fabric
        server_rate = _checked(parse_rate, spec["server_rate"], (*path, "server_rate"))
        uplink_rate = self.uplink_rate(fabric, spec, server_rate, path)
        server_length = self.length(spec, "server_link_length", DEFAULT_SERVER_LINK_LENGTH, path)
        uplink_length = self.length(spec, "uplink_length", DEFAULT_UPLINK_LENGTH, path)
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
            self.add_device(server, server_spec, Origin(path, _SERVER_KEYS))
        for plane in fabric.plane_names:
            leaf_ports = [f"down{k}" for k in range(fabric.leaf_downlinks)] + [f"up{j}" for j in range(fabric.spines)]
            for i in range(fabric.leaves):
                leaf = self.switch_spec(spec, site, "leaf", leaf_ports)
                self.add_device(fabric.switch(plane, "leaf", i), leaf, Origin(path, _SWITCH_KEYS))
            spine_ports = [f"down{i}" for i in range(fabric.leaves)]
            for j in range(fabric.spines):
                spine = self.switch_spec(spec, site, "spine", spine_ports)
                self.add_device(fabric.switch(plane, "spine", j), spine, Origin(path, _SWITCH_KEYS))

        for plane in fabric.plane_names:
            for link_name, a, z in fabric.server_links(plane):
                link = {"name": link_name, "a": a, "z": z, "rate": server_rate, "length": server_length}
                self.add_link(link, Origin(path, _SERVER_LINK_KEYS))
            for link_name, a, z in fabric.uplinks(plane):
                link = {"name": link_name, "a": a, "z": z, "rate": uplink_rate, "length": uplink_length}
                self.add_link(link, Origin(path, _UPLINK_KEYS))

    def shape(self, name: str, spec: dict[str, Any], path: KeyPath) -> Fabric:
        kind = spec.get("server_kind", DEFAULT_SERVER_KIND)
        gpus = spec.get("server_options", {}).get("gpus", DEFAULT_GPUS) if kind == GPU_SERVER_KIND else 1
        nics = gpus if isinstance(gpus, int) and gpus > 0 else 1  # a bad count is the resolver's to report
        fabric = Fabric(name, spec.get("planes", 1), spec["leaves"], spec["spines"], spec["servers_per_leaf"], nics)
        if fabric.spines == 0 and fabric.leaves > 1:
            raise ExpansionError(
                (*path, "spines"),
                f"0 spines can serve only one leaf and this fabric has {fabric.leaves}; give spines >= 1",
            )
        leaf_ports = fabric.leaf_downlinks + fabric.spines
        if leaf_ports > MAX_PORTS:
            nics_each = f" ({nics} NICs each)" if nics > 1 else ""
            raise ExpansionError((*path, "servers_per_leaf"), (
                f"a leaf would have {leaf_ports} ports, {fabric.leaf_downlinks} to its {fabric.servers_per_leaf} "
                f"servers{nics_each} and {fabric.spines} to spines, more than the {MAX_PORTS} a device may have (a "
                "frame's address holds the port index in 8 bits); use fewer servers per leaf and more leaves"))
        server_kind = DEVICE_KINDS.get(spec.get("server_kind", DEFAULT_SERVER_KIND))
        if fabric.planes == 2 and server_kind is not None:  # an unknown kind is the resolver's to report
            if not _bonds_nics(server_kind):
                dual = [kind.name for kind in DEVICE_KINDS.values() if _bonds_nics(kind)]
                raise ExpansionError(
                    (*path, "planes"),
                    f"two planes need servers with dual-plane NICs (the nics option), and server kind "
                    f"{server_kind.name!r} has none; kinds that do: {listing(dual)}",
                )
            if "nics" in spec.get("server_options", {}):
                raise ExpansionError(
                    (*path, "server_options", "nics"),
                    f"is set by the fabric: with two planes each server's NIC bonds "
                    f"{fabric.server_port('a')} and {fabric.server_port('b')}; leave it out",
                )
        for key in ("mode", "role"):
            if key in spec.get("switch_options", {}):
                source = "the fabric's mode key" if key == "mode" else "where each switch sits (leaf or spine)"
                raise ExpansionError(
                    (*path, "switch_options", key), f"is set by the fabric, from {source}; leave it out here"
                )
        return fabric

    def uplink_rate(self, fabric: Fabric, spec: dict[str, Any], server_rate: int, path: KeyPath) -> int | None:
        if "uplink_rate" in spec and "oversubscription" in spec:
            raise ExpansionError(
                (*path, "oversubscription"),
                "conflicts with uplink_rate; give uplink_rate, or oversubscription to derive it from the server rate",
            )
        if "uplink_rate" in spec:
            return _checked(parse_rate, spec["uplink_rate"], (*path, "uplink_rate"))
        if fabric.spines == 0:
            return None
        oversubscription = Fraction(str(spec.get("oversubscription", 1)))  # str: 1.1 is 11/10, as written
        rate = math.floor(server_rate * fabric.leaf_downlinks / (oversubscription * fabric.spines))
        if rate < 1:
            raise ExpansionError(
                (*path, "oversubscription"),
                f"{shown(spec.get('oversubscription', 1))} leaves less than 1 bit/s per uplink; lower it",
            )
        return rate

    def length(self, spec: dict[str, Any], key: str, default: str, path: KeyPath) -> Any:
        value = spec.get(key, default)
        _checked(parse_length_mm, value, (*path, key))
        return value  # as written: the resolver converts it with every other length

    def switch_spec(self, spec: dict[str, Any], site: dict[str, Any], role: str, ports: list[str]) -> dict[str, Any]:
        options = copy.deepcopy(spec.get("switch_options", {}))
        options.update(mode=spec.get("mode", DEFAULT_MODE), role=role)
        return {"kind": SWITCH_KIND, **site, "ports": list(ports), "options": options}

    def add_device(self, name: str, device: dict[str, Any], origin: Origin) -> None:
        if name in self.device_at:
            raise ExpansionError(origin.path, f"makes device {name!r}, {_also(self.device_at[name])}")
        self.device_at[name] = origin.path
        self.origins[("devices", name)] = origin
        self.devices[name] = device

    def add_link(self, link: dict[str, Any], origin: Origin) -> None:
        name = link["name"]
        if name in self.link_at:
            raise ExpansionError(origin.path, f"makes link {name!r}, {_also(self.link_at[name])}")
        self.link_at[name] = origin.path
        self.origins[("links", len(self.links))] = origin
        self.links.append(link)

    def fabric_named(self, name: str, path: KeyPath) -> Fabric:
        fabric = self.fabrics.get(name)
        if fabric is None:
            raise ExpansionError(path, f"no fabric named {shown(name)}; fabrics: {listing(self.fabrics)}")
        return fabric

    # --- traffic patterns ------------------------------------------------------------------------

    def flows(self) -> list[Any]:
        flows = list(self.written.get("flows", []))
        self.count_flows(len(flows))
        for index, spec in enumerate(self.written.get("traffic", [])):
            path: KeyPath = ("traffic", index)
            fabric = self.fabric_named(spec["fabric"], (*path, "fabric"))
            if spec["transport"] == "raw" and "rate" not in spec:
                raise ExpansionError((*path, "rate"), RAW_FLOW_NEEDS_RATE)
            make_pairs = self.permutation if spec["pattern"] == "permutation" else self.incast
            for suffix, src, dst in make_pairs(fabric, spec, path):
                flow = {
                    "name": f"{spec['name']}-{suffix}",
                    "src": fabric.nic_endpoint(src),
                    "dst": fabric.nic_endpoint(dst),
                }
                flow.update((key, spec[key]) for key in _FLOW_KEYS if key in spec)
                self.origins[("flows", len(flows))] = Origin(path)
                flows.append(flow)
        return flows

    def count_flows(self, written: int) -> None:
        """Refuse the traffic pattern that would take the flows past :data:`MAX_FLOWS`, before making any."""
        if written > MAX_FLOWS:
            raise ExpansionError(("flows",), f"{written:,} flows, more than the {MAX_FLOWS:,} a scenario may have")
        total = written
        for index, spec in enumerate(self.written.get("traffic", [])):
            fabric = self.fabrics.get(spec["fabric"])
            servers = fabric.leaves * fabric.servers_per_leaf if fabric is not None else 0
            flows = servers if spec["pattern"] == "permutation" else len(spec.get("from", ())) or servers - 1
            if total + flows > MAX_FLOWS:
                raise ExpansionError(("traffic", index), (
                    f"makes {flows:,} flows, which with the {total:,} before it is more than the {MAX_FLOWS:,} a "
                    "scenario may have"))
            total += flows

    def permutation(self, fabric: Fabric, spec: dict[str, Any], path: KeyPath) -> Iterator[tuple[str, str, str]]:
        """Server n sends to the server at its position on the next leaf (the next server, with one leaf)."""
        for key in ("to", "from"):
            if key in spec:
                raise ExpansionError(
                    (*path, key), f"only incast patterns take {key}; a permutation's pairs follow from the fabric"
                )
        servers = fabric.servers
        if len(servers) < 2:
            raise ExpansionError(
                (*path, "fabric"), f"fabric {fabric.name!r} has one server; a permutation needs two or more"
            )
        step = fabric.servers_per_leaf if fabric.leaves > 1 else 1
        for n, server in enumerate(servers):
            yield str(n), server, servers[(n + step) % len(servers)]

    def incast(self, fabric: Fabric, spec: dict[str, Any], path: KeyPath) -> Iterator[tuple[str, str, str]]:
        """Every sender (by default every other server of the fabric) sends to one server."""
        servers = fabric.servers
        receiver = spec["to"]
        if receiver not in servers:
            raise ExpansionError((*path, "to"), _no_server(fabric, receiver))
        if "from" not in spec:
            senders = [server for server in servers if server != receiver]
        else:
            senders = spec["from"]
            for position, sender in enumerate(senders):
                if sender not in servers:
                    raise ExpansionError((*path, "from", position), _no_server(fabric, sender))
                if sender == receiver:
                    raise ExpansionError(
                        (*path, "from", position), f"{sender!r} is the incast's receiver (to); it cannot send to itself"
                    )
        for sender in senders:
            yield sender, sender, receiver

    # --- faults ----------------------------------------------------------------------------------

    def faults(self) -> list[Any]:
        faults: list[Any] = self.wan.initial_faults() if self.wan is not None else []
        for position in range(len(faults)):  # on-demand lightpaths start torn down
            self.origins[("faults", position)] = Origin(("wan",))
        written_at: list[int | None] = [None] * len(faults)  # position -> the written fault it came from
        self.count_plane_faults(len(faults))
        for index, spec in enumerate(self.written.get("faults", [])):
            path: KeyPath = ("faults", index)
            if "plane" in spec and "fabric" not in spec:
                raise ExpansionError(
                    (*path, "plane"),
                    "goes with fabric, for a fault on every link of one plane; this fault names a link",
                )
            expanded = self.expand_fault(spec, path)
            self.count_faults(len(faults), len(expanded), path)
            if not expanded:
                self.idle_faults[index] = self.idle_reason(spec)
            for fault in expanded:
                if len(faults) != index or fault is not spec:
                    self.origins[("faults", len(faults))] = Origin(path)
                faults.append(fault)
                written_at.append(index)
        keep = self.reconcile(faults)
        dropped = {i for i, kept in zip(written_at, keep, strict=True) if not kept}
        dropped -= {i for i, kept in zip(written_at, keep, strict=True) if kept}
        for index in sorted(i for i in dropped if i is not None):
            self.idle_faults[index] = "the links it would bring up stay down for another fault"
        return [{k: v for k, v in f.items() if not k.startswith("_")} for f, kept in zip(faults, keep, strict=True)
                if kept]

    def count_plane_faults(self, before: int) -> None:
        """Refuse the fault that would take the faults past :data:`MAX_FAULTS`, counting plane faults (one per
        link of a plane) before making any; the others are counted as they expand."""
        for index, spec in enumerate(self.written.get("faults", [])):
            fabric = self.fabrics.get(spec.get("fabric", ""))
            more = fabric.plane_links if fabric is not None else 1
            self.count_faults(before, more, ("faults", index))
            before += more

    def count_faults(self, before: int, more: int, path: KeyPath) -> None:
        if before + more > MAX_FAULTS:
            raise ExpansionError(path, (
                f"makes {more:,} link faults, which with the {before:,} before it is more than the {MAX_FAULTS:,} a "
                "scenario may have"))

    def idle_reason(self, spec: dict[str, Any]) -> str:
        """Why a written fault expanded to no link fault at all."""
        if "device" in spec:
            return f"device {spec['device']!r} has no links"
        return "every change it makes would come after the run ends"

    def links_of(self, device: str) -> list[str]:
        """The names of a device's links, once every link is made (device faults come after them)."""
        if self._links_of is None:
            self._links_of = {}
            for link in self.links:
                name = link.get("name", f"{link['a']}--{link['z']}")
                for end in dict.fromkeys(link[key].split("/")[0] for key in ("a", "z")):
                    self._links_of.setdefault(end, []).append(name)
        return self._links_of.get(device, [])

    def reconcile(self, faults: list[Any]) -> list[bool]:
        """Which faults to keep: bring a link up only when nothing else still holds it down (a cut fibre
        stays cut when the device at its end recovers), and drop an ASON restoration of a fibre repaired
        before it. Expanded faults say why they change a link (``_cause``); written link faults are "link".
        The origins of the faults kept move with them."""
        try:
            times = [parse_time_ps(f["at"]) for f in faults]
        except (ValueError, KeyError, TypeError):
            return [True] * len(faults)  # the resolver reports the bad time, at the key that was written
        down: dict[str, set[str]] = {}
        keep = [True] * len(faults)
        for position in sorted(range(len(faults)), key=lambda i: (times[i], i)):
            fault = faults[position]
            link, cause = fault.get("link"), fault.get("_cause", "link")
            causes = down.setdefault(link, set())
            if fault.get("_restoration") and "cut" not in causes:
                keep[position] = False  # repaired meanwhile: no new route is set up
            elif fault.get("state") == "down":
                causes.add(cause)
            elif fault.get("state") == "up":
                causes.discard(cause)
                keep[position] = not causes
        kept = 0
        origins = {key: origin for key, origin in self.origins.items() if key[0] != "faults"}
        for position in range(len(faults)):
            if not keep[position]:
                continue
            origin = self.origins.get(("faults", position))
            if origin is None and position != kept:  # a written fault (at its written index) moved up
                origin = Origin(("faults", position))
            if origin is not None:
                origins[("faults", kept)] = origin
            kept += 1
        self.origins = origins
        return keep

    def expand_fault(self, spec: dict[str, Any], path: KeyPath) -> list[dict[str, Any]]:
        if "fabric" in spec:
            return self.plane_faults(spec, path)
        if "wan" in spec:
            if self.wan is None:
                raise ExpansionError((*path, "wan"), "names a WAN pair, and this scenario has no wan block")
            return list(self.wan.fault(spec, path))
        if "device" in spec:
            from orchestrator.scenario.wan import device_fault

            return device_fault(self, spec, path)
        return [spec]

    def plane_faults(self, spec: dict[str, Any], path: KeyPath) -> list[dict[str, Any]]:
        """One state change per link of one plane: its server links, then its uplinks."""
        fabric = self.fabric_named(spec["fabric"], (*path, "fabric"))
        if "plane" not in spec:
            raise ExpansionError(
                (*path, "plane"), "required key is missing; a fault on a fabric names its plane: a or b"
            )
        for key in ("rate", "ber", "length"):
            if key in spec:
                raise ExpansionError(
                    (*path, key),
                    "a plane fault changes state only (down or up); to change a link's rate, ber or length, "
                    "name the link",
                )
        if fabric.planes == 1:
            raise ExpansionError(
                (*path, "plane"),
                f"fabric {fabric.name!r} has one plane; plane faults need planes: 2 (name links to fail parts of it)",
            )
        cause = f"plane:{fabric.name}:{spec['plane']}"
        return [
            {"at": spec["at"], "link": link, "state": spec["state"], "_cause": cause}
            for link in fabric.plane_link_names(spec["plane"])
        ]


def _bonds_nics(kind: DeviceKind) -> bool:
    """Kinds whose NICs may span two ports (one per plane) take the nics option."""
    return "nics" in kind.options_schema.get("properties", {})


def _also(other: KeyPath) -> str:
    if other[0] in ("devices", "links"):
        return f"which is also written at {key_path(other)}; names must be unique"
    return f"which {key_path(other)} also makes; names must be unique"


def _no_server(fabric: Fabric, name: Any) -> str:
    return f"no server named {shown(name)} in fabric {fabric.name!r}; its servers: {listing(fabric.servers)}"
