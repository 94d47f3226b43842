"""The OpenConfig paths of OLink ports (an OLink switch's, a GPU server's scale-up ports): each
port's link-level counters under its interface."""

from __future__ import annotations

from collections.abc import Mapping

from emulators.olink.link import OLinkPort
from emulators.olink.switch import OLinkSwitch
from emulators.openconfig import DevicePaths, Leaf, elem


def port_leaves(ports: Mapping[str, OLinkPort]) -> list[Leaf]:
    out: list[Leaf] = []
    for pname, link in sorted(ports.items()):
        base = (elem("interfaces"), elem("interface", name=pname), elem("olink"), elem("state"))
        out += [((*base, elem(k.replace("_", "-"))), v) for k, v in link.counters().items()]
    return out


class OLinkSwitchPaths(DevicePaths[OLinkSwitch]):
    def leaves(self, device: OLinkSwitch) -> list[Leaf]:
        return port_leaves(device.links)


PATHS = OLinkSwitchPaths()
