"""The kinds of fault a scenario's ``faults:`` list holds, one class each.

A written fault names what it acts on (``link``, ``fabric`` with ``plane``, ``device`` or ``wan``) and
one change (``state``, ``rate``, ``ber``, ``length``, ``cut``, ``repair``, ``flexo`` or ``lightpath``),
its quantities already in integer units. :func:`parse_fault` picks its class, which checks what it
names and expands it (``expand``) into the link changes of the timeline (:mod:`emulators.model.faults`),
which apply themselves to links; ``describe`` says it in words. A combination no class takes is an error
naming the key, never a fault that silently changes nothing. A new kind of fault is one class here, added
to :data:`FAULT_KINDS`, with its change key in :data:`CHANGES` and the schema's ``fault``.

Expanded changes are mappings ``{at, link, <state|rate|ber|length>}``; a change that brings a link
down or up says why (``_cause``), so the expansion brings a link up only when nothing else holds it
down, and an ASON restoration says so (``_restoration``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from emulators.model.units import format_rate, format_time, shown
from emulators.otn.node import FLEXO_STEP_BPS
from orchestrator.errors import KeyPath, KeyProblem, listing
from orchestrator.scenario.builder import Builder
from orchestrator.scenario.fabric import Fabric, fabric_named
from orchestrator.scenario.wan import Pair, WanExpander

TARGETS = ("link", "fabric", "wan", "device")
# what a link fault sets, as written -> the field of the timeline's change (emulators.model.faults) it sets
LINK_CHANGE_FIELDS = {"state": "state", "rate": "rate_bps", "ber": "ber", "length": "length_mm"}
LINK_CHANGES = tuple(LINK_CHANGE_FIELDS)
CHANGES = (*LINK_CHANGES, "cut", "repair", "flexo", "lightpath")


@dataclass(frozen=True)
class Scope:
    """What faults expand against: the scenario's devices and links as built, its fabrics and its WAN."""

    builder: Builder
    fabrics: dict[str, Fabric]
    wan: WanExpander | None


@dataclass(frozen=True)
class Fault(ABC):
    """One entry of ``faults:``, at ``path``, as written (quantities converted)."""

    spec: dict[str, Any]
    path: KeyPath

    target: ClassVar[str]  # the key naming what it acts on
    changes: ClassVar[tuple[str, ...]]  # the change keys it takes

    @property
    def at_ps(self) -> int:
        at: int = self.spec["at"]
        return at

    @property
    def change(self) -> str:
        """The change key it was written with."""
        return next(key for key in CHANGES if key in self.spec)

    @abstractmethod
    def expand(self, scope: Scope) -> list[dict[str, Any]]:
        """The link changes it stands for, in order; what it would schedule past the run's end is left out."""

    @abstractmethod
    def describe(self) -> str:
        """The fault in a few words, for warnings and logs: "device otn-dc1 down"."""

    def idle_reason(self) -> str:
        """Why it expanded to no link change at all."""
        return "every change it makes would come after the run ends"


class LinkFault(Fault):
    """One link's state, rate, BER or length changes (kept as written: the timeline's own form)."""

    target, changes = "link", LINK_CHANGES

    def expand(self, scope: Scope) -> list[dict[str, Any]]:
        return [self.spec]

    def describe(self) -> str:
        link, value = self.spec["link"], self.spec[self.change]
        if self.change == "state":
            return f"link {link} {value}"
        if self.change == "rate":
            return f"link {link} rate {format_rate(value)}"
        if self.change == "length":
            return f"link {link} length {value / 1e6:g} km"
        return f"link {link} ber {value:g}"


class PlaneFault(Fault):
    """Every link of one plane of a two-plane fabric goes down or comes up: its server links, then its uplinks."""

    target, changes = "fabric", ("state",)

    def expand(self, scope: Scope) -> list[dict[str, Any]]:
        spec, path = self.spec, self.path
        fabric = fabric_named(scope.fabrics, spec["fabric"], (*path, "fabric"))
        if "plane" not in spec:
            raise KeyProblem((*path, "plane"), "required key is missing; a fault on a fabric names its plane: a or b")
        for key in ("rate", "ber", "length"):
            if key in spec:
                raise KeyProblem((*path, key), "a plane fault changes state only (down or up); to change a link's "
                                 "rate, ber or length, name the link")
        if fabric.planes == 1:
            raise KeyProblem((*path, "plane"), f"fabric {fabric.name!r} has one plane; plane faults need planes: 2 "
                             "(name links to fail parts of it)")
        _only(self)
        cause = f"plane:{fabric.name}:{spec['plane']}"
        return [{"at": spec["at"], "link": link, "state": spec["state"], "_cause": cause}
                for link in fabric.plane_link_names(spec["plane"])]

    def describe(self) -> str:
        return f"plane {self.spec.get('plane')} of fabric {self.spec['fabric']} {self.spec.get('state')}"


class DeviceFault(Fault):
    """A device fails (every link of it goes down) or recovers (they come back up)."""

    target, changes = "device", ("state",)

    def expand(self, scope: Scope) -> list[dict[str, Any]]:
        name = self.spec["device"]
        if name not in scope.builder.devices:
            known = listing(sorted(scope.builder.devices))
            raise KeyProblem((*self.path, "device"), f"no device named {shown(name)}; devices: {known}")
        if "state" not in self.spec:
            raise KeyProblem(self.path, "a device fault changes state only: down or up")
        return [{"at": self.spec["at"], "link": link, "state": self.spec["state"], "_cause": f"device:{name}"}
                for link in scope.builder.links_of(name)]

    def describe(self) -> str:
        return f"device {self.spec['device']} {self.spec.get('state')}"

    def idle_reason(self) -> str:
        return "the device has no links"


class WanFault(Fault):
    """A change to a WAN pair's line links (``wan: A-B``); each change key is a class of its own."""

    target = "wan"

    def expand(self, scope: Scope) -> list[dict[str, Any]]:
        if scope.wan is None:
            raise KeyProblem((*self.path, "wan"), "names a WAN pair, and this scenario has no wan block")
        pair = scope.wan.pair_named(self.spec["wan"], (*self.path, "wan"))
        end = scope.builder.written["duration"]
        return [f for f in self.on_pair(pair) if f["at"] <= end]

    @abstractmethod
    def on_pair(self, pair: Pair) -> list[dict[str, Any]]: ...

    def links(self, pair: Pair, which: str) -> list[str]:
        try:
            return pair.links(which)
        except KeyProblem as e:
            raise KeyProblem(self.path, e.problem) from None

    def describe(self) -> str:
        return f"{self.change} {self.spec[self.change]} on WAN pair {self.spec['wan']}"


class WanCut(WanFault):
    """A fibre cut on the working path, the protection path or both; with ASON/WSON restoration the cut links
    come back after ``restoration.after`` over a new path of ``restoration.length``."""

    changes = ("cut",)

    def on_pair(self, pair: Pair) -> list[dict[str, Any]]:
        at = self.spec["at"]
        cut = self.links(pair, self.spec["cut"])
        out = [{"at": at, "link": link, "state": "down", "_cause": "cut"} for link in cut]
        if pair.restoration is not None:
            back = at + pair.restoration["after"]
            for fault in list(out):
                out.append({"at": back, "link": fault["link"], "length": pair.restoration["length"],
                            "_restoration": True})
                out.append({"at": back, "link": fault["link"], "state": "up", "_cause": "cut", "_restoration": True})
        return out


class WanRepair(WanFault):
    """A cut path repaired: its links come back up (unless something else still holds them down)."""

    changes = ("repair",)

    def on_pair(self, pair: Pair) -> list[dict[str, Any]]:
        return [{"at": self.spec["at"], "link": link, "state": "up", "_cause": "cut"}
                for link in self.links(pair, self.spec["repair"])]


class WanBer(WanFault):
    """The post-FEC bit error ratio of every line link of the pair changes."""

    changes = ("ber",)

    def on_pair(self, pair: Pair) -> list[dict[str, Any]]:
        return [{"at": self.spec["at"], "link": link, "ber": self.spec["ber"]} for link in pair.links()]

    def describe(self) -> str:
        return f"ber {self.spec['ber']:g} on WAN pair {self.spec['wan']}"


class WanFlexo(WanFault):
    """A Flex-O resize of the pair's line to N x 100G, shared by its ODUs."""

    changes = ("flexo",)

    def on_pair(self, pair: Pair) -> list[dict[str, Any]]:
        rate = self.spec["flexo"] * FLEXO_STEP_BPS // pair.odus
        return [{"at": self.spec["at"], "link": link, "rate": rate} for link in pair.links()]

    def describe(self) -> str:
        return f"Flex-O resize to {self.spec['flexo']} x 100G on WAN pair {self.spec['wan']}"


class WanLightpath(WanFault):
    """An on-demand lightpath torn down, or set up: its links come up after the pair's setup time."""

    changes = ("lightpath",)

    def on_pair(self, pair: Pair) -> list[dict[str, Any]]:
        at, state = self.spec["at"], self.spec["lightpath"]
        if state == "up":
            at += pair.setup_time_ps
        return [{"at": at, "link": link, "state": state, "_cause": "lightpath"} for link in pair.links()]

    def describe(self) -> str:
        return f"lightpath {self.spec['lightpath']} on WAN pair {self.spec['wan']} (at {format_time(self.at_ps)})"


FAULT_KINDS: tuple[type[Fault], ...] = (LinkFault, PlaneFault, DeviceFault, WanCut, WanRepair, WanBer, WanFlexo,
                                        WanLightpath)


def parse_fault(spec: dict[str, Any], path: KeyPath) -> Fault:
    """The fault a ``faults:`` entry is (the schema has made sure it names one target and one change)."""
    target = next((key for key in TARGETS if key in spec), None)
    change = next((key for key in CHANGES if key in spec), None)
    for kind in FAULT_KINDS:
        if kind.target == target and (change in kind.changes or _checks_later(kind)):
            return kind(spec, path)
    takes = [c for kind in FAULT_KINDS if kind.target == target for c in kind.changes]
    where = (*path, change) if change is not None else path
    raise KeyProblem(where, f"a fault on a {target} takes {_alternatives(takes)}, not {change}")


def _checks_later(kind: type[Fault]) -> bool:
    """Plane and device faults say in their own words that they change state only, once what they name is
    known to exist."""
    return kind in (PlaneFault, DeviceFault)


def _only(fault: Fault) -> None:
    if "state" not in fault.spec:
        raise KeyProblem((*fault.path, fault.change), f"a {fault.target} fault changes state only: down or up")


def _alternatives(keys: list[str]) -> str:
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " or " + keys[-1]
