"""A gateway's OpenConfig paths: a switch's, and its two sides' capacities and their ratio."""

from __future__ import annotations

from emulators.ethernet.openconfig import SwitchPaths
from emulators.gateway.device import Gateway
from emulators.openconfig import Leaf, elem


class GatewayPaths(SwitchPaths[Gateway]):
    def leaves(self, device: Gateway) -> list[Leaf]:
        dc, wan = device.capacity_bps(False), device.capacity_bps(True)
        gw = (elem("gateway"), elem("state"))
        return [*super().leaves(device), ((*gw, elem("dc-capacity-bps")), dc),
                ((*gw, elem("wan-capacity-bps")), wan), ((*gw, elem("convergence")), dc / wan if wan else 0.0)]


PATHS = GatewayPaths()
