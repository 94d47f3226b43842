"""The NICs of a device that owns ports: one RDMA NIC per port, or per group of ports the ``nics``
option bonds (dual plane), in a fixed order: the groups as written, then the other ports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from emulators.model.scenario import DeviceSpec
from emulators.olink.spec import is_scale_up_port
from emulators.rdma.nic import NicOwner, RdmaNic
from emulators.rdma.options import nic_groups
from emulators.rdma.settings import NicSettings

if TYPE_CHECKING:
    from emulators.kernel.port import Port


class PortAddresses(Protocol):
    """Where the scenario puts each device's ports (an emulators.context.ScenarioContext)."""

    def address(self, end: str, port: str | None = None) -> int: ...


def nics_of(spec: DeviceSpec) -> tuple[tuple[str, ...], ...]:
    """A device's NICs, each as its ports in plane order, in :func:`nic_groups` order (GPU g of a
    GPU server uses the g-th; its OLink scale-up ports are not NIC ports)."""
    ports = [p for p in spec.ports if not (spec.kind == "gpu_server" and is_scale_up_port(p))]
    return tuple(tuple(members) for _, members in nic_groups(spec.options, ports))


def nic_ports_of(spec: DeviceSpec, index: int) -> tuple[str, ...]:
    """The ports of a device's ``index``-th NIC; () if it has none (a server without ports talks only
    inside itself)."""
    nics = nics_of(spec)
    return nics[index] if index < len(nics) else ()


def nic_ports(options: dict[str, Any], port: str) -> list[str]:
    """The ports of the NIC that owns ``port`` on a device with these options, in plane order."""
    for ports in options.get("nics", {}).values():
        if port in ports:
            return list(ports)
    return [port]


def build_nics(owner: NicOwner, name: str, options: dict[str, Any], ports: dict[str, Port],
               context: PortAddresses) -> list[RdmaNic]:
    """The device's NICs, in :func:`nic_groups` order, with the settings of its ``rdma`` option."""
    settings = NicSettings.from_options(options.get("rdma", {}))
    return [
        RdmaNic(owner, nic, [ports[p] for p in members], [context.address(name, p) for p in members], settings)
        for nic, members in nic_groups(options, list(ports))
    ]
