"""OpenConfig-style paths over the device models: what gNMI reads and writes, without gRPC.

A path is a tuple of elements ``(name, keys)``, keys a sorted tuple of ``(key, value)`` pairs, as in
gNMI's PathElem (:mod:`emulators.openconfig`). Every device has the system and interface leaves
here; its kind declares the rest (``DeviceKind.paths``). ``leaves(device)`` lists every leaf a
device has with its value now; ``select`` picks those under a requested path (``*`` matches any
name or key value, ``...`` any depth below), ``Snapshot`` does so for many paths over one reading
of the device.
``plan_set`` checks a Set against a device and returns the changes to apply, or raises
``PathNotFound`` / ``InvalidValue``; applying them is the host's business (at a window boundary).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from emulators.kernel.device import Device
from emulators.kernel.link import Link
from emulators.kernel.port import Port
from emulators.openconfig import (
    MAX_RATE_MBPS,
    NO_PATHS,
    Change,
    DevicePaths,
    Elem,
    InvalidValue,
    Leaf,
    Path,
    PathNotFound,
    elem,
    render,
    uint_value,
)
from emulators.registry import DEVICE_KINDS

__all__ = ["Change", "Elem", "InvalidPath", "InvalidValue", "Leaf", "Path", "PathNotFound", "Snapshot", "elem",
           "expand", "leaves", "matches", "parse", "plan_set", "render", "select", "writable"]

# the OpenConfig interface counters and the port counters they are made of
INTERFACE_COUNTERS: dict[str, tuple[str, ...]] = {
    "in-octets": ("rx_bytes",), "out-octets": ("tx_bytes",),
    "in-pkts": ("rx_frames",), "out-pkts": ("tx_frames",),
    "in-errors": ("rx_corrupt_packets",),
    "out-discards": ("drop_frames", "down_drop_frames", "lost_frames"),
}


class InvalidPath(ValueError):
    """The path is malformed."""


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
    out += kind_paths(device).leaves(device)
    return out


def kind_paths(device: Device) -> DevicePaths[Any]:
    """The paths ``device``'s kind declares; none for a class no kind declares (a test's own device)."""
    kind = DEVICE_KINDS.get(device.kind)
    return kind.load_paths() if kind is not None else NO_PATHS


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
    paths = kind_paths(device)
    changes: list[Change] = []
    staged: dict[str, Any] = {}
    for path, value in updates:
        text = render(path)
        names = tuple(name for name, _ in path)
        own = paths.plan(device, path, value, local_links, staged)
        if own is not None:
            changes += own
        elif names == ("interfaces", "interface", "config", "high-speed"):
            pname = dict(path[1][1]).get("name")
            port = device.ports.get(pname or "")
            if port is None:
                raise PathNotFound(f"{device.name} has no interface {pname!r}; it has {', '.join(device.ports)}")
            mbps = uint_value(text, value, 1, MAX_RATE_MBPS)
            link = port.link
            if link is None:
                raise PathNotFound(f"interface {pname} of {device.name} has no link")
            rate = mbps * 1_000_000
            changes.append(Change(device.name, text, mbps, _rate_setter(link, rate), link=link.name, rate_bps=rate,
                                  shared=link.name not in local_links))
        else:
            raise PathNotFound(f"{device.name} ({device.kind}) has no writable leaf {text}; writable: "
                               f"{', '.join(writable(device))}")
    return changes + paths.finish(device, staged)


def writable(device: Device) -> list[str]:
    return ["/interfaces/interface[name=*]/config/high-speed", *kind_paths(device).writable]


def _rate_setter(link: Link, rate_bps: int) -> Callable[[], None]:
    return lambda: link.set_rate(rate_bps)
