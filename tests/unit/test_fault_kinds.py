"""Faults are typed: every written fault is one class that expands it, every link change one class that
applies itself, and a fault no class takes is an error naming its key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulators.model.faults import (
    CHANGE_FIELDS,
    LinkBer,
    LinkChange,
    LinkLength,
    LinkRate,
    LinkState,
    change,
    change_from_dict,
)
from orchestrator.errors import KeyProblem
from orchestrator.scenario.fault_kinds import CHANGES, FAULT_KINDS, LINK_CHANGE_FIELDS, TARGETS, parse_fault

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "orchestrator/scenario/schema.json").read_text())


class RecordingLink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def set_state(self, up: bool) -> None:
        self.calls.append(("state", up))

    def set_rate(self, rate_bps: int) -> None:
        self.calls.append(("rate", rate_bps))

    def set_ber(self, ber: float) -> None:
        self.calls.append(("ber", ber))

    def set_length(self, length_mm: int) -> None:
        self.calls.append(("length", length_mm))


@pytest.mark.parametrize(("made", "call", "text"), [
    (LinkState(0, 5, "l", "down"), ("state", False), "down"),
    (LinkState(0, 5, "l", "up"), ("state", True), "up"),
    (LinkRate(0, 5, "l", 400 * 10**9), ("rate", 400 * 10**9), "rate 400 Gb/s"),
    (LinkBer(0, 5, "l", 1e-9), ("ber", 1e-9), "ber 1e-09"),
    (LinkLength(0, 5, "l", 400 * 10**6), ("length", 400 * 10**6), "length 400 km"),
])
def test_a_link_change_applies_itself_describes_itself_and_round_trips(made: LinkChange, call: tuple[str, object],
                                                                     text: str) -> None:
    link = RecordingLink()
    made.apply(link)
    assert link.calls == [call]
    assert made.describe() == text
    assert change_from_dict(made.to_dict()) == made
    assert change(made.index, made.at_ps, made.link, made.field, made.value) == made
    assert made.length_after_mm() == (made.value if isinstance(made, LinkLength) else None)


def test_a_flat_change_must_set_exactly_one_known_field() -> None:
    with pytest.raises(ValueError, match="sets exactly one of"):
        change_from_dict({"index": 0, "at_ps": 0, "link": "l", "state": "down", "ber": 1e-9})
    with pytest.raises(ValueError, match="sets exactly one of"):
        change_from_dict({"index": 0, "at_ps": 0, "link": "l"})
    with pytest.raises(ValueError, match="no field 'colour'"):
        change_from_dict({"index": 0, "at_ps": 0, "link": "l", "colour": "red"})
    with pytest.raises(ValueError, match="no kind of link change sets 'colour'"):
        change(0, 0, "l", "colour", "red")


def test_written_link_changes_and_timeline_changes_are_the_same_four() -> None:
    assert tuple(LINK_CHANGE_FIELDS.values()) == CHANGE_FIELDS


def test_the_fault_kinds_cover_what_the_schema_lets_a_fault_say() -> None:
    fault = SCHEMA["$defs"]["fault"]
    targets, changes = ([next(iter(option["required"])) for option in group["oneOf"]] for group in fault["allOf"])
    assert (tuple(targets), tuple(changes)) == (TARGETS, CHANGES)
    taken = {(kind.target, c) for kind in FAULT_KINDS for c in kind.changes}
    assert {t for t, _ in taken} == set(TARGETS) and {c for _, c in taken} == set(CHANGES)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("change_key", CHANGES)
def test_every_target_and_change_is_one_class_or_an_error_at_the_change(target: str, change_key: str) -> None:
    spec = {"at": 0, target: "x", change_key: "down"}
    takers = [kind for kind in FAULT_KINDS if kind.target == target and change_key in kind.changes]
    assert len(takers) <= 1
    try:
        parsed = parse_fault(spec, ("faults", 3))
    except KeyProblem as e:
        assert not takers and target in ("link", "wan")  # plane and device faults refuse it as they expand
        assert e.path == ("faults", 3, change_key)
        assert f"not {change_key}" in e.problem
        return
    assert type(parsed) in (takers or [kind for kind in FAULT_KINDS if kind.target == target])
