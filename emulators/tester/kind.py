"""The traffic test set declares itself (emulators.tester.device)."""

from __future__ import annotations

from emulators.kinds import DeviceKind
from emulators.kinds import unit_option as _unit
from emulators.rdma.options import NICS_OPTION, RDMA_OPTIONS_SCHEMA, check_nic_options
from emulators.tester.defaults import DEFAULTS, SMALLEST_FRAME_BYTES

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
    sends_flows=True,
    check=check_nic_options,
    paths="emulators.rdma.openconfig:NIC_PATHS",
)
