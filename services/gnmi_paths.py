"""OpenConfig-style paths over the device models: what gNMI reads and writes, without gRPC.

A path is a tuple of elements ``(name, keys)``, keys a sorted tuple of ``(key, value)`` pairs, as in
gNMI's PathElem. ``leaves(device)`` lists every leaf a device has with its value now; ``select``
picks those under a requested path (``*`` matches any name or key value, ``...`` any depth below),
``Snapshot`` does so for many paths over one reading of the device.
``plan_set`` checks a Set against a device and returns the changes to apply, or raises
``PathNotFound`` / ``InvalidValue``; applying them is the host's business (at a window boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from emulators.ethernet.mmu import EcnMarker
from emulators.ethernet.switch import Switch
from emulators.kernel.device import Device
from emulators.kernel.link import Link
from emulators.kernel.port import Port
from emulators.otn.node import FLEXO_STEP_BPS, OtnNode

Keys = tuple[tuple[str, str], ...]
Elem = tuple[str, Keys]
Path = tuple[Elem, ...]
Leaf = tuple[Path, Any]

MAX_RATE_MBPS = 100_000_000  # 100 Tb/s: beyond any line the testbed models

# the OpenConfig interface counters and the port counters they are made of
INTERFACE_COUNTERS: dict[str, tuple[str, ...]] = {
    "in-octets": ("rx_bytes",), "out-octets": ("tx_bytes",),
    "in-pkts": ("rx_frames",), "out-pkts": ("tx_frames",),
    "in-errors": ("rx_corrupt_packets",),
    "out-discards": ("drop_frames", "down_drop_frames", "lost_frames"),
}


class PathNotFound(LookupError):
    """The path names nothing this device has."""


class InvalidValue(ValueError):
    """The path is writable but the value has the wrong type or is out of range."""


class InvalidPath(ValueError):
    """The path is malformed."""


def elem(name: str, /, **keys: str) -> Elem:
    return (name, tuple(sorted(keys.items())))


def parse(text: str) -> Path:
    """``/a/b[k=v]/c`` as a path (for tests and error messages' counterparts); ``/`` is the root."""
    out: list[Elem] = []
    for part in _split(text.strip("/")):
        name, _, rest = part.partition("[")
        keys: dict[str, str] = {}
        if rest:
            for item in ("[" + rest).split("]")[:-1]:
                key, eq, value = item.lstrip("[").partition("=")
                if not eq or not key:
                    raise InvalidPath(f"key {item!r} in {text!r} is not name=value")
                keys[key] = value
        if not name:
            raise InvalidPath(f"empty element in {text!r}")
        out.append(elem(name, **keys))
    return tuple(out)


def _split(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "/" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current:
        parts.append(current)
    return parts


def render(path: Path) -> str:
    return "/" + "/".join(name + "".join(f"[{k}={v}]" for k, v in keys) for name, keys in path)


# -- reading ---------------------------------------------------------------------------------------
def leaves(device: Device) -> list[Leaf]:
    """Every leaf of ``device`` with its current value (ints, floats, bools, strings)."""
    out: list[Leaf] = [
        ((elem("system"), elem("state"), elem("name")), device.name),
        ((elem("system"), elem("state"), elem("kind")), device.kind),
        ((elem("system"), elem("state"), elem("current-time-ps")), device.engine.now),
    ]
    out += [((elem("system"), elem("state"), elem("counters"), elem(name.replace("_", "-"))), value)
            for name, value in device.counters.items()]
    for pname, port in device.ports.items():
        out += _interface(pname, port)
    olink = getattr(device, "olink", None) or getattr(device, "links", None)
    if isinstance(olink, dict):
        for pname, link in sorted(olink.items()):
            counters = getattr(link, "counters", None)
            if callable(counters):
                base = (elem("interfaces"), elem("interface", name=pname), elem("olink"), elem("state"))
                out += [((*base, elem(k.replace("_", "-"))), v) for k, v in counters().items()]
    if isinstance(device, Switch):
        out += _qos(device)
    selectors = getattr(device, "selectors", None)
    if isinstance(selectors, list):
        out += _aps(selectors)
    if isinstance(device, OtnNode):
        out += _terminal_device(device)
    for nic in getattr(device, "nics", None) or []:
        out += _nic(nic)
    capacity = getattr(device, "capacity_bps", None)
    if callable(capacity):  # a computing gateway: its two sides and their ratio
        dc, wan = capacity(False), capacity(True)
        gw = (elem("gateway"), elem("state"))
        out += [((*gw, elem("dc-capacity-bps")), dc), ((*gw, elem("wan-capacity-bps")), wan),
                ((*gw, elem("convergence")), dc / wan if wan else 0.0)]
    busy = getattr(device, "gpu_busy_ps", None)
    if callable(busy):
        # the counter charges a compute op when it starts; busy time runs with the clock
        gpu = (elem("gpus"), elem("state"))
        out += [((*gpu, elem("count")), getattr(device, "gpus", 0)),
                ((*gpu, elem("compute-ps")), device.counters["gpu_compute_ps"])]
        now = device.engine.now
        for index, ps in busy().items():
            one = (elem("gpus"), elem("gpu", id=str(index)), elem("state"))
            out += [((*one, elem("busy-ps")), ps), ((*one, elem("utilization")), 100.0 * ps / now if now else 0.0)]
    return out


QP_LEAVES = ("state", "message_bytes", "acked_bytes", "inflight_bytes", "window_bytes", "retx_bytes",
             "naks_received", "timeouts", "cnps_received", "failovers", "completion_ps")


def _nic(nic: Any) -> list[Leaf]:
    base = (elem("nics"), elem("nic", name=nic.name))
    out: list[Leaf] = [((*base, elem("state"), elem("ports")), ",".join(p.name for p in nic.ports))]
    for qp in nic.qps:
        state = (*base, elem("qps"), elem("qp", name=qp.name), elem("state"))
        out += [((*state, elem(leaf.replace("_", "-"))), getattr(qp, leaf)) for leaf in QP_LEAVES]
    return out


def _interface(pname: str, port: Port) -> list[Leaf]:
    base = (elem("interfaces"), elem("interface", name=pname))
    link = port.link
    state = (*base, elem("state"))
    out: list[Leaf] = [
        ((*state, elem("name")), pname),
        ((*state, elem("oper-status")), "NOT_PRESENT" if link is None else ("UP" if link.up else "DOWN")),
        ((*base, elem("config"), elem("high-speed")), 0 if link is None else link.rate_bps // 1_000_000),
        ((*state, elem("high-speed")), 0 if link is None else link.rate_bps // 1_000_000),
    ]
    if link is not None:
        out += [((*state, elem("ber")), float(link.ber)), ((*state, elem("length-mm")), link.length_mm)]
    counters = port.counters()
    out += [((*state, elem("counters"), elem(name)), sum(counters[c] for c in parts))
            for name, parts in INTERFACE_COUNTERS.items()]
    out += [((*state, elem("counters"), elem(name.replace("_", "-"))), value) for name, value in counters.items()]
    out.append(((*state, elem("paused-priorities")), port.paused))
    return out


def _qos(switch: Switch) -> list[Leaf]:
    pfc = (elem("qos"), elem("pfc"))
    ecn = (elem("qos"), elem("ecn"))
    buf = (elem("qos"), elem("buffer"), elem("state"))
    mmu = getattr(switch, "mmu", None)
    return [
        ((*pfc, elem("config"), elem("enabled")), switch.pfc),
        ((*pfc, elem("state"), elem("lossless-priorities")), ",".join(str(p) for p in sorted(switch.lossless))),
        ((*pfc, elem("state"), elem("xoff-bytes")), switch.pfc_xoff),
        ((*pfc, elem("state"), elem("xon-bytes")), switch.pfc_xon),
        ((*pfc, elem("state"), elem("xoff-sent")), switch.counters["pfc_xoff_sent"]),
        ((*pfc, elem("state"), elem("xon-sent")), switch.counters["pfc_xon_sent"]),
        ((*pfc, elem("state"), elem("pause-received")), switch.counters["pfc_pause_received"]),
        ((*ecn, elem("config"), elem("enabled")), switch.ecn_marker is not None),
        ((*ecn, elem("config"), elem("kmin-bytes")), switch.ecn_kmin),
        ((*ecn, elem("config"), elem("kmax-bytes")), switch.ecn_kmax),
        ((*ecn, elem("config"), elem("pmax")), switch.ecn_pmax),
        ((*ecn, elem("state"), elem("marked-frames")), switch.counters["ecn_marked_frames"]),
        ((*buf, elem("size-bytes")), switch.buffer_size),
        ((*buf, elem("used-bytes")), mmu.used if mmu is not None else 0),
        ((*buf, elem("peak-bytes")), switch.counters["buffer_peak_bytes"]),
    ]


def _aps(selectors: list[Any]) -> list[Leaf]:
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


def matches(pattern: Path, path: Path) -> bool:
    """Whether ``path`` lies at or under ``pattern`` (``*`` any name or key value; ``...`` any depth)."""
    for i, (name, keys) in enumerate(pattern):
        if name == "...":
            return any(matches(pattern[i + 1:], path[j:]) for j in range(i, len(path) + 1))
        if i >= len(path):
            return False
        have_name, have_keys = path[i]
        if name not in ("*", have_name):
            return False
        have = dict(have_keys)
        for key, value in keys:
            if key not in have or value not in ("*", have[key]):
                return False
    return True


class Snapshot:
    """A device's leaves at one moment, indexed by the element names along their paths: a request of
    many paths costs each path the leaves under its literal prefix, not a scan of every leaf. The
    values are copies: the device may run on while the snapshot is read."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.leaves = leaves(device)
        self._under: dict[tuple[str, ...], list[Leaf]] = {}
        for leaf in self.leaves:
            names = tuple(name for name, _ in leaf[0])
            for depth in range(len(names) + 1):
                self._under.setdefault(names[:depth], []).append(leaf)

    def candidates(self, pattern: Path) -> list[Leaf]:
        """The leaves under the names ``pattern`` starts with, up to its first wildcard: a superset
        of what it selects."""
        literal: list[str] = []
        for name, _ in pattern:
            if name in ("*", "..."):
                break
            literal.append(name)
        return self._under.get(tuple(literal), [])

    def select(self, pattern: Path) -> list[Leaf]:
        """The leaves at or under ``pattern``; PathNotFound if there are none."""
        found = [leaf for leaf in self.candidates(pattern) if matches(pattern, leaf[0])]
        if not found:
            raise PathNotFound(f"{self.device.name} ({self.device.kind}) has nothing at {render(pattern)}")
        return found


def select(device: Device, pattern: Path) -> list[Leaf]:
    """The leaves of ``device`` at or under ``pattern``; PathNotFound if there are none."""
    return Snapshot(device).select(pattern)


# -- writing ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One checked configuration change: ``apply()`` puts it in force (at a window boundary). A
    change of a link's rate names the link; ``shared`` when the link's other end is on another host,
    which must change its side at the same virtual time."""

    device: str
    path: str
    value: Any
    apply: Callable[[], None]
    link: str = ""
    rate_bps: int = 0
    shared: bool = False


def _uint(path: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"{path} takes an unsigned integer, not {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise InvalidValue(f"{path} must be between {lo} and {hi}, not {value}")
    return value


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(f"{path} takes a boolean, not {type(value).__name__} {value!r}")
    return value


def _fraction(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidValue(f"{path} takes a number between 0 and 1, not {value!r}")
    return float(value)


def expand(path: Path, value: Any) -> list[tuple[Path, Any]]:
    """A container path with a JSON object becomes one update per leaf it names."""
    if isinstance(value, dict):
        out: list[tuple[Path, Any]] = []
        for key, inner in value.items():
            name = str(key).split(":")[-1]  # JSON_IETF module prefixes
            if not name:
                raise InvalidValue(f"empty member name in the value for {render(path)}")
            out += expand((*path, elem(name)), inner)
        return out
    return [(path, value)]


def plan_set(device: Device, updates: Iterable[tuple[Path, Any]], local_links: set[str]) -> list[Change]:
    """Check every update against ``device`` (together: ECN kmin below kmax after all of them) and
    return the changes. ``local_links`` are the links whose both ends this host runs: a rate change
    of any other link is ``shared`` with the host of its other end."""
    changes: list[Change] = []
    ecn: dict[str, Any] = {}
    for path, value in updates:
        text = render(path)
        names = tuple(name for name, _ in path)
        if isinstance(device, Switch) and names[:2] == ("qos", "ecn") and names[2:3] == ("config",) and len(path) == 4:
            leaf = names[3]
            if leaf in ("kmin-bytes", "kmax-bytes"):
                ecn[leaf] = _uint(text, value, 0, 1 << 40)
            elif leaf == "enabled":
                ecn[leaf] = _bool(text, value)
            elif leaf == "pmax":
                ecn[leaf] = _fraction(text, value)
            else:
                raise PathNotFound(f"{device.name} has no writable leaf {text}")
        elif isinstance(device, Switch) and names == ("qos", "pfc", "config", "enabled"):
            changes.append(Change(device.name, text, _bool(text, value), _pfc_setter(device, value)))
        elif isinstance(device, OtnNode) and names == ("aps", "aps-modules", "aps-module", "config", "force-side"):
            changes.append(_force_change(device, path, text, value))
        elif isinstance(device, OtnNode) and names == ("terminal-device", "flexo-groups", "flexo-group", "config",
                                                       "size"):
            changes += _flexo_changes(device, path, text, value, local_links)
        elif names == ("interfaces", "interface", "config", "high-speed"):
            pname = dict(path[1][1]).get("name")
            port = device.ports.get(pname or "")
            if port is None:
                raise PathNotFound(f"{device.name} has no interface {pname!r}; it has {', '.join(device.ports)}")
            mbps = _uint(text, value, 1, MAX_RATE_MBPS)
            link = port.link
            if link is None:
                raise PathNotFound(f"interface {pname} of {device.name} has no link")
            rate = mbps * 1_000_000
            changes.append(Change(device.name, text, mbps, _rate_setter(link, rate), link=link.name, rate_bps=rate,
                                  shared=link.name not in local_links))
        else:
            raise PathNotFound(f"{device.name} ({device.kind}) has no writable leaf {text}; writable: "
                               f"{', '.join(writable(device))}")
    if ecn:
        assert isinstance(device, Switch)
        changes.append(_ecn_change(device, ecn))
    return changes


def writable(device: Device) -> list[str]:
    out = ["/interfaces/interface[name=*]/config/high-speed"]
    if isinstance(device, Switch):
        out += ["/qos/pfc/config/enabled"] + [f"/qos/ecn/config/{leaf}"
                                               for leaf in ("enabled", "kmin-bytes", "kmax-bytes", "pmax")]
    if isinstance(device, OtnNode):
        out += ["/aps/aps-modules/aps-module[name=*]/config/force-side",
                "/terminal-device/flexo-groups/flexo-group[peer=*]/config/size"]
    return out


SIDES = {"WORKING": 0, "PROTECTION": 1}


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


def _flexo_changes(node: OtnNode, path: Path, text: str, value: Any, local_links: set[str]) -> list[Change]:
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
    size = _uint(text, value, 1, MAX_RATE_MBPS // 100_000)
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


def _pfc_setter(switch: Switch, enabled: bool) -> Callable[[], None]:
    lossless = frozenset(int(p) for p in switch.setting["lossless_priorities"]) if enabled else frozenset()

    def apply() -> None:
        # pauses already sent are released as the queues drain (release() does not look at lossless)
        switch.pfc = enabled
        switch.lossless = lossless
        mmu = getattr(switch, "mmu", None)
        if mmu is not None:
            mmu.lossless = lossless

    return apply


def _ecn_change(switch: Switch, ecn: dict[str, Any]) -> Change:
    kmin = ecn.get("kmin-bytes", switch.ecn_kmin)
    kmax = ecn.get("kmax-bytes", switch.ecn_kmax)
    pmax = ecn.get("pmax", switch.ecn_pmax)
    enabled = ecn.get("enabled", switch.ecn_marker is not None)
    if kmin >= kmax:
        raise InvalidValue(f"ECN kmin-bytes ({kmin}) must be below kmax-bytes ({kmax}) on {switch.name}")

    def apply() -> None:
        switch.ecn_kmin, switch.ecn_kmax, switch.ecn_pmax, switch.ecn = kmin, kmax, pmax, enabled
        marker = switch.ecn_marker
        if not enabled:
            switch.ecn_marker = None
        elif marker is None:
            switch.ecn_marker = EcnMarker(kmin, kmax, pmax, switch.rng)
        else:
            marker.kmin, marker.kmax, marker.pmax = kmin, kmax, pmax

    return Change(switch.name, "/qos/ecn/config", {"enabled": enabled, "kmin-bytes": kmin, "kmax-bytes": kmax,
                                                   "pmax": pmax}, apply)
