"""The Ethernet switch declares itself: a RoCE or GSE leaf or spine (emulators.ethernet.switch).

Gateways and OTN nodes forward like a switch: they take its buffer, PFC and ECN options
(:func:`switch_like`) and show their buffer in a run's summary as it does (:func:`buffer_lines`).
"""

from __future__ import annotations

from typing import Any

from emulators.ethernet.defaults import DEFAULTS
from emulators.kinds import DeviceKind, SummaryLines
from emulators.kinds import unit_option as _unit
from emulators.model.units import format_bytes

SWITCH_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "role": {"enum": ["leaf", "spine"], "description": "where it sits in a two-tier fabric (default leaf)"},
        "mode": {
            "enum": ["roce", "gse"],
            "description": "RoCE (ECMP, PFC, ECN) or GSE (PDC, DGSQ, request/grant, spraying)",
        },
        "buffer": _unit("size", "shared packet buffer (default 64MiB)", nonzero=True),
        "latency": _unit("time", "forwarding pipeline latency (default 600ns)"),
        "pfc": {"type": "boolean", "description": "priority flow control on the lossless priorities (default true)"},
        "lossless_priorities": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 5},
            "uniqueItems": True,
            "description": "priorities PFC protects (default [3], where RDMA traffic runs)",
        },
        "pfc_xoff": _unit(
            "size", "ingress bytes per port and priority that trigger XOFF (default 512KiB; GSE 2MiB)", nonzero=True
        ),
        "pfc_xon": _unit("size", "ingress bytes below which XON is sent (default xoff - 128KiB)"),
        "pfc_headroom": _unit(
            "size", "per port and priority after XOFF (default from the link: 2 x rate x delay + 2 frames)"
        ),
        "lossy_alpha": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "dynamic threshold of lossy queues, x free buffer (default 1)",
        },
        "ecn": {"type": "boolean", "description": "ECN marking (default true in RoCE mode, false in GSE mode)"},
        "ecn_kmin": _unit("size", "queue where marking starts (default 128KiB)"),
        "ecn_kmax": _unit("size", "queue where every frame is marked (default 1MiB)"),
        "ecn_pmax": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "marking probability at kmax (default 0.1)",
        },
        "gse_container": _unit("size", "GSE packet container (PDC) size (default 64KiB)", nonzero=True),
        "reconvergence": _unit(
            "time", "routes avoid a failed link this long after it fails, e.g. BFD + BGP (default 50ms)"
        ),
        "gse_credit": _unit("size", "granted-but-not-arrived bytes per destination port (default 1MiB)", nonzero=True),
    },
}


def switch_like(
    extra: dict[str, Any],
    drop: tuple[str, ...] = ("role", "mode", "gse_container", "gse_credit", "reconvergence"),
) -> dict[str, Any]:
    """A switch's buffer, PFC and ECN options (without the fabric-role ones) plus a kind's own."""
    properties = {k: v for k, v in SWITCH_OPTIONS_SCHEMA["properties"].items() if k not in drop}
    return {"type": "object", "additionalProperties": False, "properties": properties | extra}


# the counters a summary line shows when they are not 0, with their labels
SWITCH_FIGURES = (("drop_headroom_frames", "headroom drops"), ("drop_lossy_frames", "lossy drops"),
                  ("drop_buffer_frames", "buffer-full drops"), ("no_route_frames", "unroutable"),
                  ("pfc_xoff_sent", "XOFF sent"), ("ecn_marked_frames", "ECN marked"),
                  ("grants_sent", "grants"), ("reorder_peak_bytes", "reorder peak B"))
BUFFER_SUMMARY_RANK = 10  # forwarding devices' buffers, before the scale-up fabric's lines


def buffer_lines(what: str, device: dict[str, Any], figures: tuple[tuple[str, str], ...]) -> list[str]:
    """A forwarding device's summary line: its buffer peak and the ``figures`` it counted."""
    counters = device["counters"]
    shown = ", ".join(f"{counters[key]} {label}" for key, label in figures if counters.get(key))
    peak = format_bytes(counters.get("buffer_peak_bytes", 0))
    return [f"  {what}: buffer peak {peak}" + (f", {shown}" if shown else "")]


def _summary(name: str, device: dict[str, Any]) -> list[str]:
    return buffer_lines(f"switch {name} ({device['settings']['mode']})", device, SWITCH_FIGURES)


SWITCH = DeviceKind(
    name="switch",
    summary="Ethernet leaf or spine switch: RoCE mode (ECMP, shared buffer, PFC, ECN) or GSE mode",
    options_schema=SWITCH_OPTIONS_SCHEMA,
    class_path="emulators.ethernet.switch:Switch",
    forwards=True,
    defaults=DEFAULTS,
    summary_lines=SummaryLines(BUFFER_SUMMARY_RANK, device=_summary),
    paths="emulators.ethernet.openconfig:PATHS",
    buffer_plot=True,
)
