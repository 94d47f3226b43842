"""Where GPUs meet OLink switches: which switch each scale-up port is attached to, which GPUs share a
scale-up domain (a connected set of OLink switches: a supernode), and when a group can reduce in the
network. Computed from the scenario alone, so every host finds the same answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from emulators.model.scenario import DeviceSpec, Endpoint, LinkSpec, Scenario
from emulators.olink.spec import KIND, scale_up_ports

T = TypeVar("T")


def _per_scenario(compute: Callable[[Scenario], T]) -> Callable[[Scenario], T]:
    """Remember ``compute``'s answer for the most recent scenarios (they are not hashable)."""
    memo: dict[int, tuple[Scenario, T]] = {}

    def cached(scenario: Scenario) -> T:
        hit = memo.get(id(scenario))
        if hit is None or hit[0] is not scenario:
            if len(memo) > 8:
                memo.clear()
            hit = (scenario, compute(scenario))
            memo[id(scenario)] = hit
        return hit[1]

    return cached


@_per_scenario
def _attachments(scenario: Scenario) -> dict[Endpoint, Endpoint]:
    """Scale-up port of a GPU server -> the OLink switch port it is linked to."""
    kinds = {d.name: d.kind for d in scenario.devices}
    found: dict[Endpoint, Endpoint] = {}
    for link in scenario.links:
        for near, far in ((link.a, link.z), (link.z, link.a)):
            if kinds[far.device] == KIND and kinds[near.device] != KIND:
                found[near] = far
    return found


def switch_groups(devices: tuple[DeviceSpec, ...], links: tuple[LinkSpec, ...]) -> dict[str, int]:
    """OLink switch -> the index of its scale-up domain (switches joined by links among them), domains
    numbered in the order of their first switch's name."""
    switches = sorted(d.name for d in devices if d.kind == KIND)
    parent = {name: name for name in switches}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for link in links:
        if link.a.device in parent and link.z.device in parent:
            a, z = root(link.a.device), root(link.z.device)
            if a != z:
                parent[max(a, z)] = min(a, z)
    roots = sorted({root(name) for name in switches})
    return {name: roots.index(root(name)) for name in switches}


@_per_scenario
def domains(scenario: Scenario) -> dict[str, int]:
    """OLink switch -> the index of its scale-up domain."""
    return switch_groups(scenario.devices, scenario.links)


def gpu_planes(scenario: Scenario, server: DeviceSpec, gpu: int) -> list[tuple[str, str]]:
    """(scale-up port, the OLink switch it is linked to) for each plane of GPU ``gpu`` of ``server``;
    [] if the GPU has no linked scale-up port."""
    attached = _attachments(scenario)
    planes = []
    for port in scale_up_ports(server.ports).get(gpu, []):
        far = attached.get(Endpoint(server.name, port))
        if far is not None:
            planes.append((port, far.device))
    return planes


def gpu_domain(scenario: Scenario, server: DeviceSpec, gpu: int) -> int | None:
    """The scale-up domain GPU ``gpu`` of ``server`` belongs to, None without OLink."""
    planes = gpu_planes(scenario, server, gpu)
    return domains(scenario)[planes[0][1]] if planes else None


def in_network_switches(scenario: Scenario, members: list[tuple[str, int]]) -> list[str] | None:
    """For a group of GPUs (server, gpu): the switch of each plane that can reduce for all of them,
    or None. It can when every member has the same number of planes, each plane's ports of all
    members attach to one switch (a different one per plane), and that switch has ``in_network`` on."""
    per_plane: list[set[str]] | None = None
    for device, gpu in members:
        planes = gpu_planes(scenario, scenario.device(device), gpu)
        if not planes:
            return None
        if per_plane is None:
            per_plane = [set() for _ in planes]
        if len(planes) != len(per_plane):
            return None
        for index, (_, switch) in enumerate(planes):
            per_plane[index].add(switch)
    if per_plane is None or any(len(s) != 1 for s in per_plane):
        return None
    switches = [next(iter(s)) for s in per_plane]
    if len(set(switches)) != len(switches):  # two planes on one switch: it could not tell them apart
        return None
    if not all(scenario.device(name).options.get("in_network", False) for name in switches):
        return None
    return switches
