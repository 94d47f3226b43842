"""Device kinds known to the testbed: the one place a kind name maps to its model class.

Each kind declares the JSON Schema of its ``options`` mapping. Option values that carry units say so
with ``"x-unit"`` (``rate``, ``size``, ``length``, ``time``, ``ber``); the scenario loader converts them
to integers (bps, bytes, mm, ps) before any device sees them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceKind:
    name: str
    summary: str
    options_schema: dict[str, Any]
    class_path: str  # "module:Class", imported only when a device of this kind is built

    def load_class(self) -> type:
        module, _, attr = self.class_path.partition(":")
        cls: type = getattr(importlib.import_module(module), attr)
        return cls


DEVICE_KINDS: dict[str, DeviceKind] = {
    "tester": DeviceKind(
        name="tester",
        summary="traffic test set: sends configured flows, measures throughput, latency, loss, order",
        options_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mtu": {"x-unit": "size", "description": "bytes per packet on the wire (default 4096)"},
                "buffer": {"x-unit": "size", "description": "egress queue limit per port (default 64MiB)"},
            },
        },
        class_path="emulators.tester.device:Tester",
    ),
}
