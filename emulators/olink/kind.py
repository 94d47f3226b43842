"""The OLink scale-up switch declares itself (emulators.olink.switch)."""

from __future__ import annotations

from typing import Any

from emulators.kinds import DeviceKind, Problem, SummaryLines
from emulators.kinds import unit_option as _unit
from emulators.model.units import format_bytes
from emulators.olink import spec
from emulators.olink.checks import check_link_layer
from emulators.olink.ports import PORT_FIGURES, REPLAY_LEAST, SCALE_UP_SUMMARY_RANK, port_totals

OLINK_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "latency": _unit("time", "port to port forwarding latency (default 250ns)"),
        "credit": _unit("size", "receive buffer per port and virtual channel, announced as credit (default 1MiB)",
                        nonzero=True),
        "replay_buffer": _unit("size", "frames sent and not yet acknowledged, per port (default 2MiB)",
                               nonzero=True),
        "replay_timeout": _unit("time", "replay when a frame is not acknowledged this long (default from the "
                                "link)", nonzero=True, least=REPLAY_LEAST),
        "vcs": {"type": "integer", "minimum": 2, "maximum": 8,
                "description": "virtual channels, each with its own credit (default 2: data, in-network collectives)"},
        "fec": {
            "description": "forward error correction on this switch's links: false for none, or RS(n, k) over "
                           "m-bit symbols (default {n: 272, k: 257, m: 10}, which corrects 7 symbols a codeword)",
            "oneOf": [
                {"const": False},
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["n", "k", "m"],
                    "x-expect": "a mapping {n, k, m}",
                    "properties": {
                        "n": {"type": "integer", "minimum": 2, "maximum": 4096},
                        "k": {"type": "integer", "minimum": 1, "maximum": 4096},
                        "m": {"type": "integer", "minimum": 1, "maximum": 16},
                    },
                },
            ],
        },
        "in_network": {"type": "boolean", "description": "reduce and replicate for collectives whose members all "
                       "attach here: all-reduce, reduce-scatter, all-gather (default false)"},
    },
}


def _check_olink_options(options: dict[str, Any], ports: tuple[str, ...]) -> Problem | None:
    fec = options.get("fec")
    if isinstance(fec, dict) and fec["k"] >= fec["n"]:
        return ("fec", "k"), f"{fec['k']} data symbols in codewords of {fec['n']}; k must be below n"
    return None


SWITCH_FIGURES = (("forwarded_frames", "frames forwarded"), ("reduced_chunks", "chunks reduced in the network"),
                  ("replicated_frames", "frames replicated"), ("unroutable_frames", "unroutable"))


def _summary(name: str, device: dict[str, Any]) -> list[str]:
    """What the switch forwarded and reduced, and its ports' link-level figures."""
    counters, totals = device["counters"], port_totals(device)
    figures = [f"{counters[key]} {label}" for key, label in SWITCH_FIGURES if counters.get(key)]
    figures += [f"{totals[key]} {label}" for key, label in PORT_FIGURES if totals[key]]
    peak = format_bytes(max((port["replay_buffer_peak_bytes"] for port in device.get("olink", {}).values()),
                            default=0))
    return [f"  olink {name}: replay buffer peak {peak}" + (f", {', '.join(figures)}" if figures else "")]


OLINK = DeviceKind(
    name=spec.KIND,
    summary="OLink scale-up switch: credits per virtual channel, link-level retry with light FEC, "
            "optional in-network all-reduce/all-gather",
    options_schema=OLINK_OPTIONS_SCHEMA,
    class_path="emulators.olink.switch:OLinkSwitch",
    check=_check_olink_options,
    check_scenario=check_link_layer,
    forwards=True,
    defaults={"latency": spec.DEFAULT_LATENCY_PS, "credit": spec.DEFAULT_CREDIT,  # replay_timeout: the link's
              "replay_buffer": spec.DEFAULT_REPLAY_BUFFER, "vcs": spec.DEFAULT_VCS, "in_network": False,
              "fec": dict(zip("nkm", spec.DEFAULT_FEC, strict=True))},
    summary_lines=SummaryLines(SCALE_UP_SUMMARY_RANK, device=_summary),
    paths="emulators.olink.openconfig:PATHS",
)
