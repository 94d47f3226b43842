"""Pass 4: the building blocks expanded into the devices, links, flows and faults they stand for.

Each block is a plug-in that receives the :class:`~orchestrator.scenario.builder.Builder` (and the
fabrics it builds on): fabrics first, then the WAN joining them, then supernodes (after the WAN, which
names the sites of fabrics written without one); then traffic patterns and faults, which name what
the blocks made. Runs on the document with its quantities converted; the resolver checks what the
blocks make like anything written by hand.
"""

from __future__ import annotations

from typing import Any

from orchestrator.scenario.builder import Builder, Expansion
from orchestrator.scenario.fabric import add_fabrics
from orchestrator.scenario.faults import expand_faults
from orchestrator.scenario.supernode import add_supernodes
from orchestrator.scenario.traffic import traffic_flows
from orchestrator.scenario.wan import WanExpander

_SHORTHANDS = ("fabrics", "traffic", "wan", "supernodes")


def expand(document: dict[str, Any]) -> Expansion:
    """The document with its fabrics, WAN, supernodes, traffic patterns and plane, device and WAN faults
    replaced by what they make. The same document always expands to the same entries in the same order."""
    builder = Builder(document)
    fabrics = add_fabrics(builder, document.get("fabrics", {}))
    wan = None
    if "wan" in document:
        wan = WanExpander(builder, fabrics, document["wan"])
        wan.expand()
    if "supernodes" in document:
        add_supernodes(builder, fabrics, document["supernodes"])
    builder.check_size()
    flows = traffic_flows(builder, fabrics)
    faults, idle_faults = expand_faults(builder, fabrics, wan)
    expanded = {key: value for key, value in document.items() if key not in _SHORTHANDS}
    expanded.update(devices=builder.devices, links=builder.links, flows=flows, faults=faults)
    return Expansion(document, expanded, builder.origins, idle_faults)
