"""Checks of the OLink link layer across a scenario, which no single device shows: credits and replay
buffers that hold the largest OLink frame, and links whose two ends speak the same link layer. The
OLink kind declares them (``check_scenario``); problems name a key path of the expanded scenario."""

from __future__ import annotations

from emulators.kinds import Problem
from emulators.model.scenario import DeviceSpec, Endpoint, LinkSpec
from emulators.olink import spec
from emulators.olink.topology import switch_groups

GPU_SERVER_KIND = "gpu_server"  # the kind whose GPUs have scale-up ports


def check_link_layer(devices: tuple[DeviceSpec, ...], links: tuple[LinkSpec, ...]) -> Problem | None:
    return _buffers(devices) or _link_layers(devices, links)


def _buffers(devices: tuple[DeviceSpec, ...]) -> Problem | None:
    """Credits and replay buffers written for OLink ports must hold the scenario's largest OLink
    frame, or nothing could ever be sent."""
    chunk = spec.largest_chunk(devices)
    frame = spec.wire_bytes(chunk)
    for device in devices:
        if device.kind not in (spec.KIND, GPU_SERVER_KIND):
            continue
        prefix: tuple[str | int, ...] = ("devices", device.name, "options")
        if device.kind != spec.KIND:
            prefix = (*prefix, "olink")
        for key, value in (("credit", spec.credit(device.kind, device.options, chunk)),
                           ("replay_buffer", spec.replay_buffer(device.kind, device.options, chunk))):
            if value < frame:
                return ((*prefix, key), (
                    f"{value} bytes cannot hold one OLink frame of the scenario's largest chunk ({chunk} bytes, "
                    f"{frame} on the wire); raise it or lower the GPU servers' olink.chunk"))
    return None


def _link_layers(devices: tuple[DeviceSpec, ...], links: tuple[LinkSpec, ...]) -> Problem | None:
    """OLink switch ports link to OLink switches or to GPU servers' scale-up ports, and those ports
    only to OLink switches: the two ends of a link must speak the same link layer."""
    kinds = {device.name: device.kind for device in devices}
    # every GPU of one supernode (OLink switches joined by links) has as many planes as the others
    group = switch_groups(devices, links)
    attached: dict[Endpoint, str] = {}
    for link in links:
        for near, far in ((link.a, link.z), (link.z, link.a)):
            if far.device in group:
                attached[near] = far.device
    first: dict[int, tuple[str, int, int]] = {}  # supernode -> (server, GPU, scale-up ports) of its first GPU
    for device in devices:
        if device.kind != GPU_SERVER_KIND:
            continue
        for gpu, ports in spec.scale_up_ports(device.ports).items():
            switch = attached.get(Endpoint(device.name, ports[0]))
            if switch is None:
                continue
            server, other, planes = first.setdefault(group[switch], (device.name, gpu, len(ports)))
            if len(ports) != planes:
                return (("devices", device.name, "ports"), (
                    f"GPU {gpu} has {len(ports)} scale-up ports (OLink planes), but GPU {other} of {server} in "
                    f"the same supernode has {planes}; give every GPU of a supernode the same number of planes"))
    for index, link in enumerate(links):
        for near, far in ((link.a, link.z), (link.z, link.a)):
            scale_up = kinds[near.device] == GPU_SERVER_KIND and spec.is_scale_up_port(near.port)
            if kinds[far.device] == spec.KIND and kinds[near.device] != spec.KIND and not scale_up:
                return (("links", index), (
                    f"{near} is not an OLink port, but {far} is on an OLink switch; link a GPU server's "
                    f"scale-up port (olink<g> or olink<g>-<p>) or another OLink switch to it"))
            if scale_up and kinds[far.device] != spec.KIND:
                return (("links", index), (
                    f"{near} is a scale-up port, but {far} is not on an OLink switch; link it to an olink "
                    f"device, or rename the port if it is a NIC"))
    return None
