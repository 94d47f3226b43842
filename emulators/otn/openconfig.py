"""An OTN node's OpenConfig paths: a switch's, its protection modules (``/aps``) and its line side
(``/terminal-device``); a forced protection switch and a Flex-O resize are writable."""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Any

from emulators.ethernet.openconfig import SwitchPaths
from emulators.kernel.link import Link
from emulators.openconfig import MAX_RATE_MBPS, Change, InvalidValue, Leaf, Path, PathNotFound, elem, render, uint_value
from emulators.otn.node import FLEXO_STEP_BPS, OtnNode, Selector

SIDES = {"WORKING": 0, "PROTECTION": 1}


class OtnPaths(SwitchPaths[OtnNode]):
    writable = (*SwitchPaths.writable, "/aps/aps-modules/aps-module[name=*]/config/force-side",
                "/terminal-device/flexo-groups/flexo-group[peer=*]/config/size")

    def leaves(self, device: OtnNode) -> list[Leaf]:
        return [*super().leaves(device), *_aps(device.selectors), *_terminal_device(device)]

    def plan(self, device: OtnNode, path: Path, value: Any, local_links: Set[str],
             staged: dict[str, Any]) -> list[Change] | None:
        names = tuple(name for name, _ in path)
        if names == ("aps", "aps-modules", "aps-module", "config", "force-side"):
            return [_force_change(device, path, render(path), value)]
        if names == ("terminal-device", "flexo-groups", "flexo-group", "config", "size"):
            return _flexo_changes(device, path, render(path), value, local_links)
        return super().plan(device, path, value, local_links, staged)


PATHS = OtnPaths()


def _aps(selectors: list[Selector]) -> list[Leaf]:
    out: list[Leaf] = []
    for i, selector in enumerate(selectors):
        base = (elem("aps"), elem("aps-modules"), elem("aps-module", name=str(i)), elem("state"))
        out += [
            ((*base, elem("group")), selector.group.index),
            ((*base, elem("kind")), selector.group.kind),
            ((*base, elem("active-path")), "WORKING" if selector.selected == 0 else "PROTECTION"),
            ((*base, elem("active-ports")), ",".join(p.name for p in selector.active_ports)),
            ((*base, elem("in-service")), bool(selector.in_service)),
        ]
    return out


def _terminal_device(node: OtnNode) -> list[Leaf]:
    """The node's line side: a logical channel per line port (an ODU on its optical channel), and per
    remote node the Flex-O line its channels share."""
    out: list[Leaf] = []
    index = 0
    for peer, (ports, odus) in sorted(node.lines().items()):
        for port in ports:
            link = port.link
            assert link is not None
            channel = (elem("terminal-device"), elem("logical-channels"), elem("channel", index=str(index)))
            state = (*channel, elem("state"))
            out += [
                ((*state, elem("index")), index),
                ((*state, elem("description")), f"{port.name} to {peer}"),
                ((*state, elem("line-port")), port.name),
                ((*state, elem("peer")), peer),
                ((*state, elem("link-state")), "UP" if link.up else "DOWN"),
                ((*state, elem("rate-bps")), link.rate_bps),
                ((*state, elem("length-mm")), link.length_mm),
                ((*state, elem("protection-role")), node.protection_role(port)),
                ((*state, elem("carrying-traffic")), node.carries(port)),
                ((*channel, elem("otn"), elem("state"), elem("pre-fec-ber"), elem("instant")), float(link.ber)),
            ]
            index += 1
        group = (elem("terminal-device"), elem("flexo-groups"), elem("flexo-group", peer=peer))
        capacity = sum(p.link.rate_bps for p in ports if p.link is not None and node.protection_role(p) != "PROTECTION")
        size = (capacity + FLEXO_STEP_BPS // 2) // FLEXO_STEP_BPS  # N x 100G split over the ODUs rounds down
        out += [
            ((*group, elem("config"), elem("size")), size),
            ((*group, elem("state"), elem("size")), size),
            ((*group, elem("state"), elem("capacity-bps")), capacity),
            ((*group, elem("state"), elem("odus")), odus),
            ((*group, elem("state"), elem("line-ports")), ",".join(p.name for p in ports)),
        ]
    return out


def _force_change(node: OtnNode, path: Path, text: str, value: Any) -> Change:
    """A forced protection switch of one APS module (a 1+1 pair or an OTS group) at this node."""
    name = dict(path[2][1]).get("name", "")
    if not name.isdigit() or int(name) >= len(node.selectors):
        raise PathNotFound(f"{node.name} has no APS module {name!r}; it has {len(node.selectors)} "
                           f"(names 0 to {len(node.selectors) - 1})")
    if not isinstance(value, str) or value.upper() not in SIDES:
        raise InvalidValue(f"{text} takes WORKING or PROTECTION, not {value!r}")
    index, side = int(name), SIDES[value.upper()]
    selector = node.selectors[index]
    if not selector.healthy[side]:
        raise InvalidValue(f"the {value.lower()} path of APS module {name} on {node.name} is down: nothing "
                           f"to switch to")
    def apply() -> None:
        node.force_switch(index, side)  # the side may have failed since: then the node stays where it is

    return Change(node.name, text, value.upper(), apply)


def _flexo_changes(node: OtnNode, path: Path, text: str, value: Any, local_links: Set[str]) -> list[Change]:
    """A Flex-O resize of the line toward one remote node: N x 100G shared by its ODUs, on every
    line port toward it (protection paths alike), as the scenario's ``flexo`` fault does."""
    peer = dict(path[2][1]).get("peer", "")
    lines = node.lines()
    if peer not in lines:
        raise PathNotFound(f"{node.name} has no line toward {peer!r}; it has lines toward {', '.join(sorted(lines))}")
    ports, odus = lines[peer]
    if not odus:
        raise InvalidValue(f"{node.name}'s line ports toward {peer} ({', '.join(p.name for p in ports)}) all protect "
                           f"ports toward another node: resize the line those carry")
    size = uint_value(text, value, 1, MAX_RATE_MBPS // 100_000)
    rate = size * FLEXO_STEP_BPS // odus
    changes = []
    for port in ports:
        link = port.link
        assert link is not None
        changes.append(Change(node.name, text, size, _rate_setter(link, rate), link=link.name, rate_bps=rate,
                              shared=link.name not in local_links))
    return changes


def _rate_setter(link: Link, rate_bps: int) -> Callable[[], None]:
    return lambda: link.set_rate(rate_bps)
