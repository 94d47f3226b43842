"""Written faults expanded into the link faults they stand for, so every partition sees the whole timeline.

Each written fault's class (:mod:`orchestrator.scenario.fault_kinds`) checks it and expands it. Expanded
faults say why they change a link (``_cause``), so :func:`reconcile` brings a link up only when nothing
else holds it down.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import KeyPath, KeyProblem
from orchestrator.scenario.builder import MAX_FAULTS, Builder, Origin
from orchestrator.scenario.fabric import Fabric
from orchestrator.scenario.fault_kinds import Scope, parse_fault
from orchestrator.scenario.wan import WanExpander


def expand_faults(
    builder: Builder, fabrics: dict[str, Fabric], wan: WanExpander | None
) -> tuple[list[Any], dict[int, str]]:
    """The link faults of the scenario, in order, and the written faults that change no link (and why)."""
    faults: list[Any] = wan.initial_faults() if wan is not None else []
    for position in range(len(faults)):  # on-demand lightpaths start torn down
        builder.origins[("faults", position)] = Origin(("wan",))
    written_at: list[int | None] = [None] * len(faults)  # position -> the written fault it came from
    idle_faults: dict[int, str] = {}
    scope = Scope(builder, fabrics, wan)
    count_plane_faults(builder.written, fabrics, len(faults))
    for index, spec in enumerate(builder.written.get("faults", [])):
        path: KeyPath = ("faults", index)
        if "plane" in spec and "fabric" not in spec:
            raise KeyProblem(
                (*path, "plane"),
                "goes with fabric, for a fault on every link of one plane; this fault names a link",
            )
        fault = parse_fault(spec, path)
        expanded = fault.expand(scope)
        count_faults(len(faults), len(expanded), path)
        if not expanded:
            idle_faults[index] = f"{fault.describe()}: {fault.idle_reason()}"
        for change in expanded:
            if len(faults) != index or change is not spec:
                builder.origins[("faults", len(faults))] = Origin(path)
            faults.append(change)
            written_at.append(index)
    keep = reconcile(builder, faults)
    dropped = {i for i, kept in zip(written_at, keep, strict=True) if not kept}
    dropped -= {i for i, kept in zip(written_at, keep, strict=True) if kept}
    for index in sorted(i for i in dropped if i is not None):
        idle_faults[index] = "the links it would bring up stay down for another fault"
    kept_faults = [{k: v for k, v in f.items() if not k.startswith("_")}
                   for f, kept in zip(faults, keep, strict=True) if kept]
    return kept_faults, idle_faults


def count_plane_faults(document: dict[str, Any], fabrics: dict[str, Fabric], before: int) -> None:
    """Refuse the fault that would take the faults past :data:`MAX_FAULTS`, counting plane faults (one per
    link of a plane) before making any; the others are counted as they expand."""
    for index, spec in enumerate(document.get("faults", [])):
        fabric = fabrics.get(spec.get("fabric", ""))
        more = fabric.plane_links if fabric is not None else 1
        count_faults(before, more, ("faults", index))
        before += more


def count_faults(before: int, more: int, path: KeyPath) -> None:
    if before + more > MAX_FAULTS:
        raise KeyProblem(path, (
            f"makes {more:,} link faults, which with the {before:,} before it is more than the {MAX_FAULTS:,} a "
            "scenario may have"))


def reconcile(builder: Builder, faults: list[Any]) -> list[bool]:
    """Which faults to keep: bring a link up only when nothing else still holds it down (a cut fibre
    stays cut when the device at its end recovers), and drop an ASON restoration of a fibre repaired
    before it. Expanded faults say why they change a link (``_cause``); written link faults are "link".
    The origins of the faults kept move with them."""
    down: dict[str, set[str]] = {}
    keep = [True] * len(faults)
    for position in sorted(range(len(faults)), key=lambda i: (faults[i]["at"], i)):
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
    origins = {key: origin for key, origin in builder.origins.items() if key[0] != "faults"}
    for position in range(len(faults)):
        if not keep[position]:
            continue
        origin = builder.origins.get(("faults", position))
        if origin is None and position != kept:  # a written fault (at its written index) moved up
            origin = Origin(("faults", position))
        if origin is not None:
            origins[("faults", kept)] = origin
        kept += 1
    builder.origins = origins
    return keep
