"""The OTN node: client ports (toward a gateway) mapped onto line ports (fiber toward the remote OTN
node), with 1+1 and OTS protection and line rates that change on the timeline (Flex-O, wavelengths).

It forwards like a switch (emulators.ethernet.switch) with a deeper buffer and PFC on every lossless
class: it is a lossless transport, so when a client is faster than the line (after a Flex-O resize)
the node buffers and pauses the client instead of dropping.

Protection. A group's working and protecting line ports are one *selector* (an OTS group: the whole
fibre, every port at once) or one selector per working/protecting pair (1+1: ODU level). Routes
use only a selector's active side, never ECMP across both. When the active side fails, frames that
arrive for it are dropped by the node (the detection gap, ``protection_gap_*``) and ``switch_time``
later the selector moves to the other side if it is up. A side that returns after a failure is
usable ``switch_time`` after it returned (hold-off); with both sides down the first side back wins.
Revertive groups go back to working ``switch_time`` after it returns. Frames already queued on, or
in the pipeline toward, a failed port die there (the port's ``down_drop_*``). Each end of a line
runs its own node and sees the fault at the same virtual time, so both ends switch together.

Clients hear of a new path by PATH_INFO frames (length, BER, rate of the line port, whether it was a
protection switch), sent on every client port that faces a gateway: NICs do not read OTN path info,
the gateway relays it to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulators.ethernet.defaults import MIB
from emulators.ethernet.mmu import HEADROOM_FRAME_BYTES, default_headroom
from emulators.ethernet.switch import Switch
from emulators.kernel.engine import Engine
from emulators.kernel.frame import CONTROL_FRAME_BYTES, CONTROL_PRIORITY, PATH_INFO, Frame, address
from emulators.kernel.port import Port
from emulators.kernel.vtime import NEVER, PS_PER_MS
from emulators.model.scenario import Endpoint, LinkSpec, Scenario
from emulators.otn.defaults import OTN_DEFAULTS

if TYPE_CHECKING:
    from emulators.context import ScenarioContext

KIND = "otn"
FLEXO_STEP_BPS = 100 * 10**9  # a Flex-O line grows and shrinks in steps of 100G
WAN_CHUNK_BYTES = 4 * MIB  # the largest frame the node expects: a bulk DP chunk across the WAN
DEFAULT_SWITCH_TIME_PS = 50 * PS_PER_MS
ONE_PLUS_ONE = "1+1"
OTS = "ots"

WORKING, PROTECTION = 0, 1
SIDE_NAMES = ("working", "protection")

OTN_COUNTERS = (
    "line_rate_changes", "protection_switches", "protection_gap_frames", "protection_gap_bytes",
    "path_info_sent",
)


@dataclass(frozen=True)
class GroupSpec:
    """One entry of the ``protection`` option, defaults applied."""

    index: int
    kind: str
    working: tuple[str, ...]
    protecting: tuple[str, ...]
    switch_time_ps: int
    revertive: bool


def protection_groups(options: dict[str, Any]) -> list[GroupSpec]:
    return [
        GroupSpec(index, g.get("kind", ONE_PLUS_ONE), tuple(g["working"]), tuple(g["protecting"]),
                  int(g.get("switch_time", DEFAULT_SWITCH_TIME_PS)), bool(g.get("revertive", False)))
        for index, g in enumerate(options.get("protection", []))
    ]


@dataclass(eq=False)
class Selector:
    """What switches as one: an OTS group's whole fibre, or one 1+1 pair. ``sides[s]`` are the ports
    of side s (working, protection), paired by position."""

    group: GroupSpec
    sides: tuple[tuple[Port, ...], tuple[Port, ...]]
    selected: int = WORKING
    in_service: bool = True  # False during a detection gap or a hold-off after a return
    healthy: list[bool] = field(default_factory=lambda: [True, True])
    ready_at: list[int] = field(default_factory=lambda: [0, 0])  # usable from; NEVER while down
    failed_at: int = 0  # when the selected side last failed

    def side_up(self, side: int) -> bool:
        # an OTS side is one fibre: any of its links down means the section has failed
        return all(p.link is not None and p.link.up for p in self.sides[side])

    @property
    def active_ports(self) -> tuple[Port, ...]:
        return self.sides[self.selected]


class OtnNode(Switch):
    kind = KIND
    option_defaults = OTN_DEFAULTS

    def __init__(self, name: str, device_id: int, engine: Engine, seed: int,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(name, device_id, engine, seed, options)
        self.counters.update(dict.fromkeys(OTN_COUNTERS, 0))
        self.groups = protection_groups(self.options)
        self.node_address = address(device_id)
        # set in configure
        self.line_ports: set[Port] = set()
        self.gateway_ports: list[tuple[Port, int]] = []  # client ports facing a gateway, its address
        self.line_peer: dict[str, int] = {}  # port -> id of the device across its link
        self.line_peer_node: dict[Port, str] = {}  # line port -> the remote OTN node
        self.selectors: list[Selector] = []
        self._arrival = ""
        self.selector_of: dict[Port, Selector] = {}
        self.route_slots: dict[int, tuple[Port | tuple[Selector, int], ...]] = {}
        self._line_rate: dict[Port, int] = {}
        self._line_optics: dict[Port, tuple[int, float]] = {}  # (length, BER) last told to clients
        self.protection_events: list[dict[str, Any]] = []
        self.path_info_log: list[dict[str, int]] = []

    # -- set-up -----------------------------------------------------------------------------------
    def configure(self, context: ScenarioContext) -> None:
        super().configure(context)
        for pname, port in self.ports.items():
            peer = context.peer_of.get(Endpoint(self.name, pname))
            if peer is None:
                continue
            if context.scenario.device(peer.device).kind == KIND:
                self.line_ports.add(port)
                self.line_peer_node[port] = peer.device
                assert port.link is not None
                self._line_rate[port] = port.link.rate_bps
                self._line_optics[port] = (port.link.length_mm, port.link.ber)
            elif peer.device in context.forwarders:
                self.gateway_ports.append((port, context.address(peer)))
        self.line_peer = {}
        for pname in self.ports:
            far = context.peer_of.get(Endpoint(self.name, pname))
            if far is not None:
                self.line_peer[pname] = context.ids[far.device]
        for group in self.groups:
            self._build_group(group)
        self._build_slots()
        # ODUs isolate tenants: a client port's traffic rides only its own ODUs' line links
        self.odus_of_client: dict[str, frozenset[str]] = {
            client: frozenset(lines) for client, lines in self.options.get("odus", {}).items()}

    def _build_group(self, group: GroupSpec) -> None:
        where = f"{self.name}: protection group {group.index}"
        if group.kind not in (ONE_PLUS_ONE, OTS):
            raise ValueError(f"{where}: kind {group.kind!r} is not one of {ONE_PLUS_ONE}, {OTS}")
        if len(group.working) != len(group.protecting):
            raise ValueError(f"{where}: {len(group.working)} working ports but {len(group.protecting)} "
                             "protecting ports; give one protecting port per working port")
        line_names = sorted(p.name for p in self.line_ports)
        seen: set[str] = set()
        for pname in (*group.working, *group.protecting):
            port = self.ports.get(pname)
            if port is None or port not in self.line_ports:
                raise ValueError(f"{where}: {pname!r} is not a line port (a port linked to another OTN "
                                 f"node); line ports: {', '.join(line_names) or 'none'}")
            if port in self.selector_of or pname in seen:
                raise ValueError(f"{where}: port {pname!r} is already in a protection group")
            seen.add(pname)
        working = tuple(self.ports[p] for p in group.working)
        protecting = tuple(self.ports[p] for p in group.protecting)
        pairs = [(working, protecting)] if group.kind == OTS else [((w,), (p,)) for w, p in zip(working, protecting,
                                                                                                strict=True)]
        for sides in pairs:
            selector = Selector(group, sides)
            self.selectors.append(selector)
            for port in (*sides[WORKING], *sides[PROTECTION]):
                self.selector_of[port] = selector

    def _headroom_for(self, port: Port) -> int:
        """The switch's headroom, for WAN chunks: the upstream finishes a whole chunk after XOFF."""
        if self.pfc_headroom_option is not None or port.link is None:
            return super()._headroom_for(port)
        return (default_headroom(port.link.rate_bps, port.link.propagation_ps)
                + 3 * (WAN_CHUNK_BYTES - HEADROOM_FRAME_BYTES))

    def _build_slots(self) -> None:
        """Each route's ECMP members: plain ports, and one slot per selector position, which its
        active side fills. Slots keep their places when a selector switches, so no flow is rehashed.
        A route through one side is a route through the other, even if that one is longer in hops."""
        for dst, ports in self.routes.items():
            slots: list[Port | tuple[Selector, int]] = []
            for port in ports:
                selector = self.selector_of.get(port)
                if selector is None:
                    slots.append(port)
                    continue
                side = selector.sides[WORKING] if port in selector.sides[WORKING] else selector.sides[PROTECTION]
                slot = (selector, side.index(port))
                if slot not in slots:
                    slots.append(slot)
            self.route_slots[dst] = tuple(slots)

    # -- forwarding -------------------------------------------------------------------------------
    def on_frame(self, port: Port, frame: Frame) -> None:
        self._arrival = port.name  # the client port a frame came in on decides its ODUs
        super().on_frame(port, frame)

    def route(self, frame: Frame) -> Port | None:
        """ECMP over the up ungrouped ports and the active members of protection selectors (within
        the arrival client port's ODUs, when it has some). An active member in its protection gap
        is still chosen: ``admit`` drops what it gets."""
        slots = self.route_slots.get(frame.dst)
        if not slots:
            return None
        odus = self.odus_of_client.get(self._arrival)
        if odus is not None:
            slots = tuple(slot for slot in slots if _slot_ports(slot) & odus)
        members = [slot[0].active_ports[slot[1]] if isinstance(slot, tuple) else slot for slot in slots
                   if isinstance(slot, tuple) or (slot.link is not None and slot.link.up)]
        if len(members) <= 1:
            return members[0] if members else None
        return members[self.ecmp_hash(frame.src, frame.dst, frame.entropy) % len(members)]

    def admit(self, frame: Frame, in_port: int, egress: Port) -> bool:
        selector = self.selector_of.get(egress)
        if selector is not None and not selector.in_service:
            self.counters["protection_gap_frames"] += 1
            self.counters["protection_gap_bytes"] += frame.nbytes
            return False
        return super().admit(frame, in_port, egress)

    # -- line changes -----------------------------------------------------------------------------
    def on_link_change(self, port: Port) -> None:
        super().on_link_change(port)
        if port not in self.line_ports:
            if port.link is not None and port.link.up and any(port is p for p, _ in self.gateway_ports):
                for line in self.line_ports:  # a gateway back in touch learns the lines as they are now
                    if self.carries(line):
                        self._send_path_info(line, switch=False)
            return
        link = port.link
        assert link is not None
        if link.rate_bps != self._line_rate[port]:
            self._line_rate[port] = link.rate_bps
            self.counters["line_rate_changes"] += 1
            if self.carries(port):
                self._send_path_info(port, switch=False)
        self._check_optics(port)
        selector = self.selector_of.get(port)
        if selector is not None:
            self._on_member_change(selector)

    def _check_optics(self, port: Port) -> None:
        link = port.link
        assert link is not None
        optics = (link.length_mm, link.ber)
        if optics != self._line_optics[port]:
            self._line_optics[port] = optics
            if self.carries(port):
                self._send_path_info(port, switch=False)

    def carries(self, port: Port) -> bool:
        """Whether clients' traffic may ride this line port: ungrouped, or on its selector's active side."""
        selector = self.selector_of.get(port)
        return selector is None or port in selector.active_ports

    def lines(self) -> dict[str, tuple[list[Port], int]]:
        """Per remote OTN node, the line ports toward it (by name) and the ODUs that share the line:
        its ports less the protecting ones. A Flex-O line of N x 100G gives each port N x 100G / ODUs,
        protection paths alike (the scenario's ``flexo`` fault does the same)."""
        protecting = {name for group in self.groups for name in group.protecting}
        out: dict[str, tuple[list[Port], int]] = {}
        for port in sorted(self.line_ports, key=lambda p: p.name):
            ports, odus = out.get(self.line_peer_node[port], ([], 0))
            out[self.line_peer_node[port]] = ([*ports, port], odus + (port.name not in protecting))
        return out

    def protection_role(self, port: Port) -> str:
        """WORKING or PROTECTION for a line port of a protection group, NONE for an ungrouped one."""
        selector = self.selector_of.get(port)
        if selector is None:
            return "NONE"
        return "WORKING" if port in selector.sides[WORKING] else "PROTECTION"

    # -- protection -------------------------------------------------------------------------------
    def _on_member_change(self, selector: Selector) -> None:
        now = self.engine.now
        wait = selector.group.switch_time_ps
        for side in (WORKING, PROTECTION):
            up = selector.side_up(side)
            if up == selector.healthy[side]:
                continue
            selector.healthy[side] = up
            if up:  # usable after a hold-off of switch_time
                selector.ready_at[side] = now + wait
                self.at(now + wait, self._decide, selector)
            else:
                selector.ready_at[side] = NEVER
                if side == selector.selected and selector.in_service:
                    selector.in_service = False  # the gap: frames for this side are lost
                    selector.failed_at = now
                    self.at(now + wait, self._decide, selector)

    def _decide(self, selector: Selector) -> None:
        """A timer ran out: re-examine the selector as it is now (stale timers find nothing to do)."""
        now = self.engine.now
        ready = [s for s in (WORKING, PROTECTION) if selector.ready_at[s] <= now]
        current = selector.selected
        if selector.in_service:
            if selector.group.revertive and current == PROTECTION and WORKING in ready:
                self._switch(selector, WORKING, "working path restored (revertive)")
            return
        if not ready:
            return  # both sides down: wait for one to return
        choice = min(ready, key=lambda s: (selector.ready_at[s], s != current))  # the first one back
        if choice == current:
            selector.in_service = True  # the failed side returned before the other: no switch
            return
        reason = f"{SIDE_NAMES[current]} path down"
        if selector.ready_at[choice] - selector.group.switch_time_ps > selector.failed_at:
            reason += f", {SIDE_NAMES[choice]} path restored"  # both were down; this one came back first
        self._switch(selector, choice, reason)

    def _switch(self, selector: Selector, side: int, reason: str) -> None:
        now = self.engine.now
        old_ports = selector.active_ports
        selector.selected = side
        selector.in_service = True
        new_ports = selector.active_ports
        group = selector.group
        for old, new in zip(old_ports, new_ports, strict=True):
            self.counters["protection_switches"] += 1
            self.protection_events.append({"at_ps": now, "group": group.index, "kind": group.kind,
                                           "from": old.name, "to": new.name, "reason": reason})
        for port in new_ports:
            self._send_path_info(port, switch=True)

    def force_switch(self, index: int, side: int) -> bool:
        """A management command (a forced switch): selector ``index`` moves to ``side`` now, if that
        side is up and in service; False if it cannot (or is there already). This end only, as a
        1+1 tail end selects on its own."""
        selector = self.selectors[index]
        if side == selector.selected or not selector.healthy[side] or selector.ready_at[side] > self.engine.now:
            return False
        self._switch(selector, side, "forced switch (management)")
        return True

    def _send_path_info(self, line_port: Port, switch: bool) -> None:
        link = line_port.link
        assert link is not None
        fields = {"length_mm": link.length_mm, "ber_e18": round(link.ber * 1e18), "rate_bps": link.rate_bps,
                  "switch": int(switch), "port": self.port_index[line_port.name],
                  "peer": self.line_peer[line_port.name]}  # the node across: which line this is about
        now = self.engine.now
        self.path_info_log.append({"at_ps": now} | fields)
        for port, peer in self.gateway_ports:
            self.counters["path_info_sent"] += 1
            self.enqueue(port, Frame(PATH_INFO, -1, self.node_address, peer, CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES,
                                     priority=CONTROL_PRIORITY, created_ps=now, fields=dict(fields)))

    # -- results ----------------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        out = super().results()
        out["protection_events"] = list(self.protection_events)
        out["protection"] = [
            {"group": g.index, "kind": g.kind, "switch_time_ps": g.switch_time_ps, "revertive": g.revertive,
             "active": [p.name for s in self.selectors if s.group is g for p in s.active_ports],
             "in_service": all(s.in_service for s in self.selectors if s.group is g)}
            for g in self.groups
        ]
        out["path_info"] = list(self.path_info_log)
        return out


# -- the capacity map -----------------------------------------------------------------------------
def capacity_map(scenario: Scenario) -> list[dict[str, Any]]:
    """Every path between two OTN nodes joined by line links, as the scenario declares it: one entry
    per protection group side (named by the group's owner, the first node by name that has one),
    and one per ungrouped link. Latency is propagation over the path's longest link plus both
    nodes' forwarding latency; capacity is the sum of its links' rates."""
    otn = {d.name: d for d in scenario.devices if d.kind == KIND}
    between: dict[tuple[str, str], list[LinkSpec]] = {}
    for link in scenario.links:
        if link.a.device in otn and link.z.device in otn and link.a.device != link.z.device:
            pair = tuple(sorted((link.a.device, link.z.device)))
            between.setdefault((pair[0], pair[1]), []).append(link)
    entries: list[dict[str, Any]] = []
    for (a, z), links in sorted(between.items()):
        latency = sum(int(otn[n].options.get("latency", OTN_DEFAULTS["latency"])) for n in (a, z))
        link_at = {end: link for link in links for end in (link.a, link.z)}
        covered: set[str] = set()
        for owner in (a, z):
            for group in protection_groups(otn[owner].options):
                for path, ports in (("working", group.working), ("protection", group.protecting)):
                    path_links = [link_at[e] for p in ports if (e := Endpoint(owner, p)) in link_at]
                    if not path_links or any(link.name in covered for link in path_links):
                        continue
                    entries.append(_path_entry(a, z, path, path_links, latency) | {"group": group.index})
                    covered.update(link.name for link in path_links)
        for link in links:
            if link.name not in covered:
                entries.append(_path_entry(a, z, link.name, [link], latency) | {"group": None})
    return entries


def _path_entry(a: str, z: str, path: str, links: list[LinkSpec], node_latency_ps: int) -> dict[str, Any]:
    longest = max(links, key=lambda link: link.propagation_ps)
    return {"a": a, "z": z, "path": path, "links": [link.name for link in links], "length_mm": longest.length_mm,
            "latency_ps": longest.propagation_ps + node_latency_ps,
            "capacity_bps": sum(link.rate_bps for link in links)}



def _slot_ports(slot: Port | tuple[Selector, int]) -> set[str]:
    """The line ports behind an ECMP slot: a plain port, or both sides of a protection position."""
    if isinstance(slot, tuple):
        selector, position = slot
        return {selector.sides[WORKING][position].name, selector.sides[PROTECTION][position].name}
    return {slot.name}
