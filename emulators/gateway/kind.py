"""The intelligent computing gateway declares itself (emulators.gateway.device): a switch-like device
between a site's fabric and the WAN."""

from __future__ import annotations

from typing import Any

from emulators.ethernet.kind import BUFFER_SUMMARY_RANK, SWITCH_FIGURES, buffer_lines, switch_like
from emulators.gateway.defaults import GATEWAY_DEFAULTS
from emulators.kinds import DeviceKind, Problem, SummaryLines, own_defaults
from emulators.kinds import unit_option as _unit

# forwarding latency unless a device's options say otherwise: deep buffers, classification
GATEWAY_OPTIONS_SCHEMA = switch_like(
    {
        "wan_ports": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "uniqueItems": True,
            "description": "ports toward the OTN (the WAN side); every other port faces the site's fabric",
        },
        "fast_cnp": {
            "type": "boolean",
            "description": "CNPs to local senders when the WAN queue builds (default true)",
        },
        "fast_cnp_threshold": _unit("size", "WAN egress queue that triggers fast CNPs (default 4MiB)", nonzero=True),
        "fast_cnp_interval": _unit("time", "at most one fast CNP per flow in this interval (default 50us)"),
        "elephant_bytes": _unit(
            "size", "a flow is an elephant once this much of it has passed (default 10MiB)", nonzero=True
        ),
        "mice_first": {"type": "boolean", "description": "mice ahead of elephants on the WAN (default true)"},
        "path_info": {
            "type": "boolean",
            "description": "tell local NICs the WAN path: length, BER, protection switches (default true)",
        },
    }
)


def _check_gateway_options(options: dict[str, Any], ports: tuple[str, ...]) -> Problem | None:
    for index, port in enumerate(options.get("wan_ports", [])):
        if port not in ports:
            return ("wan_ports", index), f"no port {port!r} on this gateway; its ports: {', '.join(ports)}"
    return None


def _summary(name: str, device: dict[str, Any]) -> list[str]:
    return buffer_lines(f"gateway {name}", device, (*SWITCH_FIGURES, ("fast_cnps_sent", "fast CNPs")))


GATEWAY = DeviceKind(
    name="gateway",
    summary="intelligent computing gateway: deep buffer, WAN back-pressure, fast CNP, flow classes, path info",
    options_schema=GATEWAY_OPTIONS_SCHEMA,
    class_path="emulators.gateway.device:Gateway",
    check=_check_gateway_options,
    forwards=True,
    defaults=own_defaults(GATEWAY_DEFAULTS, GATEWAY_OPTIONS_SCHEMA),
    summary_lines=SummaryLines(BUFFER_SUMMARY_RANK, device=_summary),
    paths="emulators.gateway.openconfig:PATHS",
    buffer_plot=True,
)
