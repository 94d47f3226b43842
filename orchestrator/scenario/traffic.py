"""The ``traffic:`` patterns: flows between a fabric's servers' NICs, made after the flows written by hand.

``permutation``: server n sends to the server at its position on the next leaf (flows ``<name>-<n>``);
``incast``: senders (by default every other server) to one server (flows ``<name>-<sender>``). Each flow
takes the pattern's transport, size, rate, start and priority as written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from emulators.model.units import shown
from orchestrator.errors import KeyPath, KeyProblem, listing
from orchestrator.scenario.builder import MAX_FLOWS, Builder, Origin
from orchestrator.scenario.fabric import Fabric, fabric_named

RAW_FLOW_NEEDS_RATE = "required key is missing; raw flows send at a rate (only rdma flows may leave it out)"

# The keys a traffic pattern passes on to each flow it makes, unchanged.
_FLOW_KEYS = ("transport", "bytes", "for", "rate", "start", "priority")


def traffic_flows(builder: Builder, fabrics: dict[str, Fabric]) -> list[Any]:
    """The flows written by hand, then those of every traffic pattern, in order."""
    flows = list(builder.written.get("flows", []))
    _count_flows(builder.written, fabrics, len(flows))
    for index, spec in enumerate(builder.written.get("traffic", [])):
        path: KeyPath = ("traffic", index)
        fabric = fabric_named(fabrics, spec["fabric"], (*path, "fabric"))
        if spec["transport"] == "raw" and "rate" not in spec:
            raise KeyProblem((*path, "rate"), RAW_FLOW_NEEDS_RATE)
        make_pairs = _permutation if spec["pattern"] == "permutation" else _incast
        for suffix, src, dst in make_pairs(fabric, spec, path):
            flow = {
                "name": f"{spec['name']}-{suffix}",
                "src": fabric.nic_endpoint(src),
                "dst": fabric.nic_endpoint(dst),
            }
            flow.update((key, spec[key]) for key in _FLOW_KEYS if key in spec)
            builder.origins[("flows", len(flows))] = Origin(path)
            flows.append(flow)
    return flows


def _count_flows(document: dict[str, Any], fabrics: dict[str, Fabric], written: int) -> None:
    """Refuse the traffic pattern that would take the flows past :data:`MAX_FLOWS`, before making any."""
    if written > MAX_FLOWS:
        raise KeyProblem(("flows",), f"{written:,} flows, more than the {MAX_FLOWS:,} a scenario may have")
    total = written
    for index, spec in enumerate(document.get("traffic", [])):
        fabric = fabrics.get(spec["fabric"])
        servers = fabric.leaves * fabric.servers_per_leaf if fabric is not None else 0
        flows = servers if spec["pattern"] == "permutation" else len(spec.get("from", ())) or servers - 1
        if total + flows > MAX_FLOWS:
            raise KeyProblem(("traffic", index), (
                f"makes {flows:,} flows, which with the {total:,} before it is more than the {MAX_FLOWS:,} a "
                "scenario may have"))
        total += flows


def _permutation(fabric: Fabric, spec: dict[str, Any], path: KeyPath) -> Iterator[tuple[str, str, str]]:
    """Server n sends to the server at its position on the next leaf (the next server, with one leaf)."""
    for key in ("to", "from"):
        if key in spec:
            raise KeyProblem(
                (*path, key), f"only incast patterns take {key}; a permutation's pairs follow from the fabric"
            )
    servers = fabric.servers
    if len(servers) < 2:
        raise KeyProblem(
            (*path, "fabric"), f"fabric {fabric.name!r} has one server; a permutation needs two or more"
        )
    step = fabric.servers_per_leaf if fabric.leaves > 1 else 1
    for n, server in enumerate(servers):
        yield str(n), server, servers[(n + step) % len(servers)]


def _incast(fabric: Fabric, spec: dict[str, Any], path: KeyPath) -> Iterator[tuple[str, str, str]]:
    """Every sender (by default every other server of the fabric) sends to one server."""
    servers = fabric.servers
    receiver = spec["to"]
    if receiver not in servers:
        raise KeyProblem((*path, "to"), _no_server(fabric, receiver))
    if "from" not in spec:
        senders = [server for server in servers if server != receiver]
    else:
        senders = spec["from"]
        for position, sender in enumerate(senders):
            if sender not in servers:
                raise KeyProblem((*path, "from", position), _no_server(fabric, sender))
            if sender == receiver:
                raise KeyProblem(
                    (*path, "from", position), f"{sender!r} is the incast's receiver (to); it cannot send to itself"
                )
    for sender in senders:
        yield sender, sender, receiver


def _no_server(fabric: Fabric, name: Any) -> str:
    return f"no server named {shown(name)} in fabric {fabric.name!r}; its servers: {listing(fabric.servers)}"
