"""The OTN node's option defaults: its kind (kind.py) declares them and its model (node.py) runs on them."""

from __future__ import annotations

from typing import Any

from emulators.ethernet.defaults import DEFAULTS as SWITCH_DEFAULTS
from emulators.ethernet.defaults import MIB

OTN_LATENCY_PS = 5_000_000  # forwarding latency unless a device's options say otherwise: mapping and FEC
OTN_DEFAULTS: dict[str, Any] = SWITCH_DEFAULTS | {
    "latency": OTN_LATENCY_PS,  # client mapping + FEC encode/decode
    "ecn": False,  # the gateway manages WAN congestion; the node is a lossless pipe
    "pfc": True,
    "lossless_priorities": [3, 4, 5],
    "buffer": 1024 * MIB,  # a lossless 800G line over 300 km needs ~294 MB of headroom per priority
    # a line-rate stream of chunks holds rate x latency + 2 chunks (8.5 MiB at 800G): no XOFF for that
    "pfc_xoff": 16 * MIB,
}
