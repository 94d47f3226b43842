"""The traffic test set declares itself (emulators.tester.device)."""

from __future__ import annotations

from emulators.kinds import DeviceKind
from emulators.kinds import unit_option as _unit
from emulators.rdma.options import NICS_OPTION, RDMA_OPTIONS_SCHEMA, check_nic_options

DEFAULTS = {"mtu": 4096}  # bytes per packet of raw flows: RoCE's largest MTU
SMALLEST_FRAME_BYTES = 64  # the smallest Ethernet frame: no packet, and so no frame a device sends, is smaller

TESTER = DeviceKind(
    name="tester",
    summary="traffic test set: sends configured flows (raw or over RDMA), measures throughput, latency, loss",
    options_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mtu": _unit("size", "bytes per packet on the wire for raw flows (default 4096; at least 64B, "
                         "the smallest Ethernet frame)", nonzero=True, least=f"{SMALLEST_FRAME_BYTES}B"),
            "buffer": _unit("size", "egress queue limit per port (default 64MiB)", nonzero=True),
            "rdma": RDMA_OPTIONS_SCHEMA,
            "nics": NICS_OPTION,
        },
    },
    class_path="emulators.tester.device:Tester",
    defaults=DEFAULTS,
    check=check_nic_options,
    paths="emulators.rdma.openconfig:NIC_PATHS",
)
