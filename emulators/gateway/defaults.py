"""The gateway's option defaults and the job's traffic classes it knows: its kind (kind.py) declares them and
its model (device.py) runs on them."""

from __future__ import annotations

from typing import Any

from emulators.ethernet.defaults import DEFAULTS as SWITCH_DEFAULTS
from emulators.ethernet.defaults import MIB
from emulators.kernel.vtime import PS_PER_US

GATEWAY_LATENCY_PS = 2_000_000
GIB = 1024 * MIB

# The job's traffic classes: what the servers mark, and where the gateway lifts mice to.
DP_PRIORITY = 3
PP_PRIORITY = 4
MICE_PRIORITY = 5

GATEWAY_DEFAULTS: dict[str, Any] = SWITCH_DEFAULTS | {
    "buffer": 4 * GIB,  # deep: holds several WAN bandwidth-delay products
    "latency": GATEWAY_LATENCY_PS,
    "ecn": False,  # congestion toward the WAN is signalled by fast CNPs
    "lossless_priorities": [DP_PRIORITY, PP_PRIORITY, MICE_PRIORITY],
    # per ingress port and priority: push back only after a burst, and resume (at xon) with more
    # than a drain-rate round trip still queued on a 300 km WAN, so the WAN never idles in between
    "pfc_xoff": 128 * MIB,
    "pfc_xon": 96 * MIB,
    "wan_ports": None,  # None: ports toward an OTN node, another gateway or another site
    "fast_cnp": True,
    "fast_cnp_threshold": 4 * MIB,
    "fast_cnp_interval": 50 * PS_PER_US,
    "elephant_bytes": 10 * MIB,
    "mice_first": True,
    "path_info": True,
}
