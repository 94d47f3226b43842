"""What building blocks (fabrics, the WAN, supernodes) build on: the scenario's devices and links as they
are made, where each was written, and how many a scenario may have.

A building block receives a :class:`Builder` and adds to it; it never reaches into another block. The
finished :class:`Expansion` turns a key path of the expanded document back into the key that was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import KeyPath, KeyProblem, key_path

# How large a scenario may grow once fabrics, supernodes, traffic patterns and plane faults expand; each is
# checked before a building block makes anything, so a typo in a count fails at once instead of filling memory.
MAX_DEVICES = 20_000  # Trial B at full size (512+512 GPUs) is ~150 devices; room for fabrics of 100,000 GPUs
MAX_LINKS = 100_000  # five per device: servers' NICs and OLink ports, leaf-spine meshes
MAX_FLOWS = 100_000  # a permutation over every server of the largest fabric, five times over
MAX_FAULTS = 100_000  # a plane or device fault is one per link: a plane of the largest fabric, and more


@dataclass(frozen=True)
class Origin:
    """Where an expanded entry was written, and which of its keys were written under other names."""

    path: KeyPath
    renamed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expansion:
    written: dict[str, Any]  # the document as written (its quantities converted)
    document: dict[str, Any]  # without fabrics and traffic; with every device, link, flow and fault
    origins: dict[KeyPath, Origin]  # ("links", 7) -> where that entry was written, when not there
    idle_faults: dict[int, str] = field(default_factory=dict)  # written fault -> why it changes no link

    def written_path(self, path: KeyPath) -> KeyPath | None:
        """The key that was written for a key path of the expanded document; None when it was not written
        (a building block made it)."""
        origin = self.origins.get(path[:2])
        if origin is None:
            return path
        rest = path[2:]
        if rest and isinstance(rest[0], str):
            rest = (origin.renamed.get(rest[0], rest[0]), *rest[1:])
        return (*origin.path, *rest) if _holds(self.written, (*origin.path, *rest)) else None

    def where(self, path: KeyPath) -> str:
        """A key path of the expanded document as the key that was written, or said to be expanded."""
        written = self.written_path(path)
        if written is not None:
            return key_path(written)
        return f"{key_path(path)} (expanded from {key_path(self.origins[path[:2]].path)})"


def value_at(document: Any, path: KeyPath) -> Any:
    """The value at a key path that the document holds."""
    for key in path:
        document = document[key]
    return document


def _holds(document: Any, path: KeyPath) -> bool:
    node = document
    for key in path:
        in_mapping = isinstance(node, dict) and key in node
        in_list = isinstance(node, list) and isinstance(key, int) and key < len(node)
        if not (in_mapping or in_list):
            return False
        node = node[key]
    return True


class Builder:
    """The devices and links of a scenario as its building blocks make them, each named once, with where
    it was written; starts from the devices and links written by hand."""

    def __init__(self, written: dict[str, Any]) -> None:
        self.written = written
        self.devices: dict[str, Any] = dict(written.get("devices", {}))
        self.device_at: dict[str, KeyPath] = {name: ("devices", name) for name in self.devices}
        self.links: list[Any] = list(written.get("links", []))
        self.link_at: dict[str, KeyPath] = {
            spec["name"]: ("links", index) for index, spec in enumerate(self.links) if "name" in spec
        }
        self.origins: dict[KeyPath, Origin] = {}
        self._links_of: dict[str, list[str]] | None = None  # device -> names of its links, once all are made

    def reserve(self, path: KeyPath, devices: int, links: int) -> None:
        """Refuse a building block that would take the scenario past :data:`MAX_DEVICES` or :data:`MAX_LINKS`,
        before it makes anything."""
        for what, more, have, most in (("devices", devices, len(self.devices), MAX_DEVICES),
                                       ("links", links, len(self.links), MAX_LINKS)):
            if have + more > most:
                before = f", which with the {have:,} before it is" if have else ","
                raise KeyProblem(path, (
                    f"makes {more:,} {what}{before} more than the {most:,} a scenario may have; make it smaller"))

    def check_size(self) -> None:
        """Refuse a scenario with more devices or links than it may have (written by hand, or made)."""
        for table, entries, most in (("devices", self.devices, MAX_DEVICES), ("links", self.links, MAX_LINKS)):
            if len(entries) > most:
                raise KeyProblem((table,), f"{len(entries):,} {table}, more than the {most:,} a scenario may have")

    def add_device(self, name: str, device: dict[str, Any], origin: Origin) -> None:
        if name in self.device_at:
            raise KeyProblem(origin.path, f"makes device {name!r}, {_also(self.device_at[name])}")
        self.device_at[name] = origin.path
        self.origins[("devices", name)] = origin
        self.devices[name] = device

    def change_device(self, name: str, **keys: Any) -> None:
        """Give a device made before new values for some of its keys (more ports, a site)."""
        self.devices[name] = dict(self.devices[name], **keys)

    def made_by(self, path: KeyPath) -> list[str]:
        """The devices the building block written at ``path`` made, in order."""
        return [entry[1] for entry, origin in self.origins.items()
                if entry[0] == "devices" and origin.path == path and isinstance(entry[1], str)]

    def add_link(self, link: dict[str, Any], origin: Origin) -> None:
        name = link["name"]
        if name in self.link_at:
            raise KeyProblem(origin.path, f"makes link {name!r}, {_also(self.link_at[name])}")
        self.link_at[name] = origin.path
        self.origins[("links", len(self.links))] = origin
        self.links.append(link)

    def links_of(self, device: str) -> list[str]:
        """The names of a device's links, once every link is made (device faults come after them)."""
        if self._links_of is None:
            self._links_of = {}
            for link in self.links:
                name = link.get("name", f"{link['a']}--{link['z']}")
                for end in dict.fromkeys(link[key].split("/")[0] for key in ("a", "z")):
                    self._links_of.setdefault(end, []).append(name)
        return self._links_of.get(device, [])


def _also(other: KeyPath) -> str:
    if other[0] in ("devices", "links"):
        return f"which is also written at {key_path(other)}; names must be unique"
    return f"which {key_path(other)} also makes; names must be unique"
