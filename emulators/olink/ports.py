"""What a device with OLink scale-up ports declares of them: their settings (a GPU server's ``olink``
option) and the port figures a run's summary shows."""

from __future__ import annotations

from typing import Any

from emulators.kinds import unit_option as _unit
from emulators.olink import spec

REPLAY_LEAST = "100ns"  # an OLink replay timeout: about one 64 KiB frame's time on the fastest port
SCALE_UP_SUMMARY_RANK = 20  # the scale-up fabric's lines, after the forwarding devices' buffers

PORT_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "x-expect": "a mapping of OLink settings of the GPUs' scale-up ports",
    "properties": {
        "chunk": _unit("size", "payload bytes per OLink frame: the emulation's grain on scale-up links "
                       "(default 64KiB; at least one packet's payload)", nonzero=True,
                       least=f"{spec.PACKET_PAYLOAD}B"),
        "credit": _unit("size", "receive buffer per scale-up port and virtual channel, announced as credit "
                        "(default 1MiB)", nonzero=True),
        "replay_buffer": _unit("size", "replay buffer per scale-up port (default 2MiB)", nonzero=True),
        "replay_timeout": _unit("time", "replay when a frame is not acknowledged this long (default from "
                                "the link)", nonzero=True, least=REPLAY_LEAST),
    },
}

# link-level counters a summary shows, summed over a device's OLink ports (its "olink" in results.json)
PORT_FIGURES = (("crc_errors", "CRC errors"), ("replayed_frames", "frames replayed"),
                ("replay_timeouts", "replay timeouts"), ("credit_stalls", "credit stalls"))


def port_totals(device: dict[str, Any]) -> dict[str, int]:
    """The device's OLink ports' :data:`PORT_FIGURES` summed."""
    ports = device.get("olink", {})
    return {key: sum(port[key] for port in ports.values()) for key, _ in PORT_FIGURES}
