"""The Ethernet switch's option defaults: what a leaf or spine does unless a device's options say otherwise.
Its kind (kind.py) declares them and the model (switch.py) runs on them; gateways and OTN nodes start from them."""

from __future__ import annotations

from typing import Any

from emulators.kernel.vtime import PS_PER_MS

SWITCH_LATENCY_PS = 600_000  # a switch pipeline's forwarding latency unless a device's options say otherwise
KIB = 1024
MIB = 1024 * KIB

# every option's value unless a device's options say otherwise (the schema below says what each means)
DEFAULTS: dict[str, Any] = {
    "role": "leaf", "mode": "roce", "buffer": 64 * MIB, "latency": SWITCH_LATENCY_PS,
    "pfc": True, "lossless_priorities": [3], "pfc_xoff": 512 * KIB, "lossy_alpha": 1.0,
    "ecn": True, "ecn_kmin": 128 * KIB, "ecn_kmax": 1 * MIB, "ecn_pmax": 0.1,
    "gse_container": 64 * KIB, "gse_credit": 1 * MIB,
    "reconvergence": 50 * PS_PER_MS,
}
XON_BELOW_XOFF = 128 * KIB
# Default sizes in bytes were set for 64 KiB frames (HEADROOM_FRAME_BYTES, the NIC's default chunk). A frame is the
# emulation's grain: queues move a frame at a time, so with larger chunks (``rdma.chunk``) the
# buffer and the PFC and ECN thresholds grow to span as many frames as at 64 KiB — otherwise one
# 1 MiB frame in a queue would pass XOFF and Kmax at once and PFC and ECN would fire on every
# frame, and per-port reservations would outgrow the buffer. Written values stay.
# A GSE source leaf holds a request/grant round trip of data per NIC port in its destination queues
# before it may send: XOFF toward the NIC must sit above that, or PFC throttles a flow the grants
# would carry at line rate.
# ECN is off: the destination leaf's scheduler keeps its egress backlog small, and marking that
# backlog would only make DCQCN slow senders the grants already pace.
GSE_DEFAULTS = {"pfc_xoff": 2 * MIB, "ecn": False}
