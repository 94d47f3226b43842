"""The OpenConfig paths of a device's RDMA NICs: each NIC's ports and its queue pairs' state."""

from __future__ import annotations

from typing import Protocol

from emulators.openconfig import DevicePaths, Leaf, elem
from emulators.rdma.nic import RdmaNic

QP_LEAVES = ("state", "message_bytes", "acked_bytes", "inflight_bytes", "window_bytes", "retx_bytes",
             "naks_received", "timeouts", "cnps_received", "failovers", "completion_ps")


def nic_leaves(nic: RdmaNic) -> list[Leaf]:
    base = (elem("nics"), elem("nic", name=nic.name))
    out: list[Leaf] = [((*base, elem("state"), elem("ports")), ",".join(p.name for p in nic.ports))]
    for qp in nic.qps:
        state = (*base, elem("qps"), elem("qp", name=qp.name), elem("state"))
        out += [((*state, elem(leaf.replace("_", "-"))), getattr(qp, leaf)) for leaf in QP_LEAVES]
    return out


class OwnsNics(Protocol):
    nics: list[RdmaNic]


class NicPaths(DevicePaths[OwnsNics]):
    """A device whose only paths of its own are its NICs': a tester."""

    def leaves(self, device: OwnsNics) -> list[Leaf]:
        return [leaf for nic in device.nics for leaf in nic_leaves(nic)]


NIC_PATHS = NicPaths()
