"""The OTN node declares itself (emulators.otn.node): client ports onto line ODUs, forwarding like a
switch, with 1+1 and OTS protection."""

from __future__ import annotations

from typing import Any

from emulators.ethernet.kind import BUFFER_SUMMARY_RANK, SWITCH_FIGURES, buffer_lines, switch_like
from emulators.kinds import DeviceKind, Problem, SummaryLines, own_defaults
from emulators.kinds import unit_option as _unit
from emulators.model.units import format_time
from emulators.otn.defaults import OTN_DEFAULTS

OTN_OPTIONS_SCHEMA = switch_like(
    {
        "odus": {
            "type": "object",
            "x-expect": "a mapping of client port to the line ports of its ODUs",
            "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "description": "ODUs that isolate tenants: each client port's traffic rides only these line ports",
        },
        "protection": {
            "type": "array",
            "x-expect": "a list of protection groups",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["working", "protecting"],
                "properties": {
                    "kind": {
                        "enum": ["1+1", "ots"],
                        "description": "electrical SNCP 1+1 or OTS 1+1 optical (default 1+1)",
                    },
                    "working": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "description": "line ports of the working path",
                    },
                    "protecting": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "description": "line ports of the protection path, one per working port",
                    },
                    "switch_time": _unit("time", "detection + switch time after a failure (default 50ms)"),
                    "revertive": {"type": "boolean", "description": "back to working when it returns (default false)"},
                },
            },
            "description": "1+1 protection groups over line ports",
        },
    }
)


def _check_otn_options(options: dict[str, Any], ports: tuple[str, ...]) -> Problem | None:
    for client, lines in options.get("odus", {}).items():
        for k, port in enumerate([client, *lines]):
            if port not in ports:
                where: tuple[str | int, ...] = ("odus", client) if k == 0 else ("odus", client, k - 1)
                return where, f"no port {port!r} on this node; its ports: {', '.join(ports)}"
    for index, group in enumerate(options.get("protection", [])):
        for side in ("working", "protecting"):
            for k, port in enumerate(group[side]):
                if port not in ports:
                    return (
                        "protection",
                        index,
                        side,
                        k,
                    ), f"no port {port!r} on this node; its ports: {', '.join(ports)}"
        if len(group["working"]) != len(group["protecting"]):
            return ("protection", index, "protecting"), (
                f"{len(group['protecting'])} ports for {len(group['working'])} working ones; give one per working port"
            )
    return None


PROTECTION_FIGURES = (("protection_switches", "protection switches"),
                      ("protection_gap_frames", "frames lost in switch gaps"))


def _summary(name: str, device: dict[str, Any]) -> list[str]:
    lines = buffer_lines(f"otn {name}", device, SWITCH_FIGURES + PROTECTION_FIGURES)
    for event in device.get("protection_events", []):
        lines.append(f"  {format_time(event['at_ps'])}: {name} switched {event['from']} -> {event['to']} "
                     f"({event['reason']})")
    return lines


OTN = DeviceKind(
    name="otn",
    summary="OTN node: client ports onto line ODUs over fiber, 1+1 / OTS protection, Flex-O line rates",
    options_schema=OTN_OPTIONS_SCHEMA,
    class_path="emulators.otn.node:OtnNode",
    check=_check_otn_options,
    forwards=True,
    defaults=own_defaults(OTN_DEFAULTS, OTN_OPTIONS_SCHEMA),
    summary_lines=SummaryLines(BUFFER_SUMMARY_RANK, device=_summary),
    paths="emulators.otn.openconfig:PATHS",
    buffer_plot=True,
)
