"""The fault timeline: one class per kind of change a link undergoes at a virtual time.

A scenario's written faults (a link, a fabric plane, a device, a WAN cut or repair, a Flex-O resize,
a lightpath...) expand into these changes (orchestrator.scenario.faults); the host runtime applies
them to its links, the partition bounds its lookahead by them, and results and reports describe
them. Each class says all of that for its own kind, so a new kind of change is one class here.

On the wire and in inputs.json a change is one flat mapping, ``{index, at_ps, link, state, rate_bps,
ber, length_mm}`` with exactly one of the last four set: the form recorded runs hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from emulators.model.units import format_rate


class ChangeableLink(Protocol):
    """What a change needs of a link in the kernel (emulators.kernel.link.Link)."""

    def set_state(self, up: bool) -> None: ...
    def set_rate(self, rate_bps: int) -> None: ...
    def set_ber(self, ber: float) -> None: ...
    def set_length(self, length_mm: int) -> None: ...


@dataclass(frozen=True)
class LinkChange:
    """One change on the timeline. ``index`` is its position in the scenario's timeline: with
    ``at_ps`` it orders changes due at the same time, in every partition alike."""

    index: int
    at_ps: int
    link: str

    field: ClassVar[str]  # the key its value has in the flat form and in results.json

    @property
    def value(self) -> Any:
        return getattr(self, self.field)

    def apply(self, link: ChangeableLink) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """The change in the words of a scenario file: down, rate 400 Gb/s, ber 1e-09, length 400 km."""
        raise NotImplementedError

    def length_after_mm(self) -> int | None:
        """The link's length once this change applies, if it sets one: the partition's lookahead must
        hold for the shortest length a cut link will ever have."""
        return None

    def to_dict(self) -> dict[str, Any]:
        flat: dict[str, Any] = {"index": self.index, "at_ps": self.at_ps, "link": self.link}
        return flat | {name: None for name in CHANGE_FIELDS} | {self.field: self.value}


@dataclass(frozen=True)
class LinkState(LinkChange):
    state: str  # "down" | "up"
    field: ClassVar[str] = "state"

    @property
    def up(self) -> bool:
        return self.state == "up"

    def apply(self, link: ChangeableLink) -> None:
        link.set_state(self.up)

    def describe(self) -> str:
        return self.state


@dataclass(frozen=True)
class LinkRate(LinkChange):
    rate_bps: int
    field: ClassVar[str] = "rate_bps"

    def apply(self, link: ChangeableLink) -> None:
        link.set_rate(self.rate_bps)

    def describe(self) -> str:
        return f"rate {format_rate(self.rate_bps)}"


@dataclass(frozen=True)
class LinkBer(LinkChange):
    ber: float
    field: ClassVar[str] = "ber"

    def apply(self, link: ChangeableLink) -> None:
        link.set_ber(self.ber)

    def describe(self) -> str:
        return f"ber {self.ber:g}"


@dataclass(frozen=True)
class LinkLength(LinkChange):
    length_mm: int
    field: ClassVar[str] = "length_mm"

    def apply(self, link: ChangeableLink) -> None:
        link.set_length(self.length_mm)

    def describe(self) -> str:
        return f"length {self.length_mm / 1e6:g} km"

    def length_after_mm(self) -> int | None:
        return self.length_mm


CHANGE_KINDS: tuple[type[LinkChange], ...] = (LinkState, LinkRate, LinkBer, LinkLength)
CHANGE_FIELDS = tuple(kind.field for kind in CHANGE_KINDS)
_BY_FIELD = {kind.field: kind for kind in CHANGE_KINDS}


def change(index: int, at_ps: int, link: str, field: str, value: Any) -> LinkChange:
    """The change that sets ``field`` (state, rate_bps, ber or length_mm) of ``link`` to ``value``."""
    kind = _BY_FIELD.get(field)
    if kind is None:
        raise ValueError(f"no kind of link change sets {field!r}; the kinds set {', '.join(CHANGE_FIELDS)}")
    made: LinkChange = kind(index, at_ps, link, value)  # type: ignore[call-arg]  # each kind adds its one field
    return made


def change_from_dict(flat: dict[str, Any]) -> LinkChange:
    """A change from its flat form (``to_dict``); ValueError unless exactly one change field is set."""
    unknown = set(flat) - {"index", "at_ps", "link", *CHANGE_FIELDS}
    if unknown:
        raise ValueError(f"a link change has no field {sorted(unknown)[0]!r}")
    given = [name for name in CHANGE_FIELDS if flat.get(name) is not None]
    if len(given) != 1:
        raise ValueError(f"a link change sets exactly one of {', '.join(CHANGE_FIELDS)}; this one sets "
                         f"{', '.join(given) or 'none'}")
    return change(flat["index"], flat["at_ps"], flat["link"], given[0], flat[given[0]])
