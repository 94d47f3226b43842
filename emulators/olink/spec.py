"""What the GPU server, the OLink switch, the scenario helpers and the estimator agree on: port
names, packet format, and the settings with their defaults.

A GPU server's scale-up ports are named ``olink<g>`` (GPU g, one plane) or ``olink<g>-<p>`` (GPU g,
plane p from 0); every other port is a NIC port. A message on OLink travels as frames of up to
``chunk`` payload bytes; each frame is a run of packets of up to 256 payload bytes, each with a
16-byte header (a header flit per 256-byte data packet, as on GPU buses).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

KIND = "olink"
PORT_PREFIX = "olink"
PACKET_PAYLOAD = 256  # payload bytes per OLink packet
PACKET_HEADER = 16  # header bytes per packet
PACKET_BYTES = PACKET_PAYLOAD + PACKET_HEADER  # the wire size of a full packet: a frame's mtu

DEFAULT_LATENCY_PS = 250_000  # port to port through an OLink switch
DEFAULT_CHUNK = 64 * 1024  # payload bytes per frame: the emulation's grain on OLink
DEFAULT_CREDIT = 1024 * 1024  # receive buffer per port and virtual channel, announced as credit
DEFAULT_REPLAY_BUFFER = 2 * 1024 * 1024  # frames sent and not yet acknowledged, per port
DEFAULT_VCS = 2  # virtual channels: 0 for point-to-point data, 1 for in-network collectives
DATA_VC, COLLECTIVE_VC = 0, 1
# light FEC: RS(272, 257) over 10-bit symbols corrects 7 symbol errors per codeword
DEFAULT_FEC = (272, 257, 10)

_PORT = re.compile(rf"^{PORT_PREFIX}(\d+)(?:-(\d+))?$")


def scale_up_port(gpu: int, plane: int, planes: int) -> str:
    """The name of GPU ``gpu``'s port on ``plane`` of a server with ``planes`` OLink planes."""
    return f"{PORT_PREFIX}{gpu}" if planes == 1 else f"{PORT_PREFIX}{gpu}-{plane}"


def parse_port(name: str) -> tuple[int, int] | None:
    """(gpu, plane) of a scale-up port name, None for any other port."""
    m = _PORT.match(name)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def is_scale_up_port(name: str) -> bool:
    return parse_port(name) is not None


def scale_up_ports(ports: Iterable[str]) -> dict[int, list[str]]:
    """GPU -> its scale-up ports in plane order, for a GPU server with these ports."""
    found: dict[int, list[tuple[int, str]]] = {}
    for name in ports:
        parsed = parse_port(name)
        if parsed is not None:
            found.setdefault(parsed[0], []).append((parsed[1], name))
    return {gpu: [name for _, name in sorted(planes)] for gpu, planes in sorted(found.items())}


def wire_bytes(payload: int) -> int:
    """Bytes on the wire for ``payload`` bytes of one frame: each packet adds its header."""
    return payload + PACKET_HEADER * max(1, -(-payload // PACKET_PAYLOAD))


# Receive buffers and replay buffers are counted in frames in hardware; their defaults here hold at
# least this many of the scenario's largest OLink frames, so a coarser grain keeps the same dynamics.
CREDIT_FRAMES = 16  # 1 MiB at the default 64 KiB chunk
REPLAY_FRAMES = 32


def largest_chunk(devices: Iterable[Any]) -> int:
    """The largest OLink frame payload any GPU server of the scenario sends (its ``olink.chunk``)."""
    return max((int(d.options.get("olink", {}).get("chunk", DEFAULT_CHUNK)) for d in devices
                if d.kind == "gpu_server"), default=DEFAULT_CHUNK)


def _olink_options(kind: str, options: Mapping[str, Any]) -> Mapping[str, Any]:
    return options if kind == KIND else options.get("olink", {})


def credit(kind: str, options: Mapping[str, Any], chunk: int) -> int:
    """The receive buffer per virtual channel a device announces on its OLink ports: as written, or
    the default, raised to hold CREDIT_FRAMES frames of ``chunk`` payload."""
    written = _olink_options(kind, options).get("credit")
    return int(written) if written is not None else max(DEFAULT_CREDIT, CREDIT_FRAMES * wire_bytes(chunk))


def replay_timeout(kind: str, options: Mapping[str, Any]) -> int | None:
    """A device's replay timeout on its OLink ports as written (ps), or None: derived from each
    link's rate and length, and following them when they change."""
    written = _olink_options(kind, options).get("replay_timeout")
    return int(written) if written else None


def replay_buffer(kind: str, options: Mapping[str, Any], chunk: int) -> int:
    """A device's replay buffer per OLink port: as written, or the default raised to REPLAY_FRAMES frames."""
    written = _olink_options(kind, options).get("replay_buffer")
    return int(written) if written is not None else max(DEFAULT_REPLAY_BUFFER, REPLAY_FRAMES * wire_bytes(chunk))
