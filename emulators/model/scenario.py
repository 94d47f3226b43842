"""The resolved scenario: pure data with every unit converted to integers (ps, bps, bytes, mm).

The orchestrator parses and validates scenario files into these frozen dataclasses; hosts receive
them as JSON (``scenario_to_dict``/``scenario_from_dict``) and build their devices from them. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from emulators.model.faults import LinkChange, change_from_dict
from emulators.model.job import JobPlan

FIBER_DELAY_PS_PER_M = 4900  # light in fiber: 4.9 ns per metre


@dataclass(frozen=True)
class Endpoint:
    device: str
    port: str

    def __str__(self) -> str:
        return f"{self.device}/{self.port}"


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    kind: str
    site: str | None
    ports: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkSpec:
    name: str
    a: Endpoint
    z: Endpoint
    rate_bps: int
    length_mm: int
    ber: float = 0.0
    delay_ps_per_m: int = FIBER_DELAY_PS_PER_M

    @property
    def propagation_ps(self) -> int:
        return propagation_ps(self.length_mm, self.delay_ps_per_m)


def propagation_ps(length_mm: int, delay_ps_per_m: int = FIBER_DELAY_PS_PER_M) -> int:
    return length_mm * delay_ps_per_m // 1000


RAW = "raw"
RDMA = "rdma"
RDMA_PRIORITY = 3  # the lossless class RDMA traffic runs in by default


@dataclass(frozen=True)
class FlowSpec:
    """A flow a tester sends. ``raw``: ``count`` frames of ``frame_bytes`` at ``rate_bps``, no
    transport. ``rdma``: one message of ``message_bytes`` payload over a reliable connection from the
    NIC owning ``src`` to the NIC owning ``dst``; ``rate_bps`` caps it (0: as fast as the transport
    allows); frames are the NIC's chunks, so ``frame_bytes`` and ``count`` are 0."""

    name: str
    src: Endpoint
    dst: Endpoint
    rate_bps: int
    frame_bytes: int
    start_ps: int
    count: int
    priority: int = 0
    transport: str = RAW
    message_bytes: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str  # file path (or "<string>") for error messages
    seed: int
    duration_ps: int
    sample_interval_ps: int
    sites: tuple[str, ...]
    devices: tuple[DeviceSpec, ...]  # sorted by name: a device's index is its stable id
    links: tuple[LinkSpec, ...]
    flows: tuple[FlowSpec, ...]
    faults: tuple[LinkChange, ...]  # the timeline: written faults expanded into link changes
    job: JobPlan | None = None  # a training job the GPU servers run (orchestrator.workload makes it)
    # what the loader accepted but found meaningless, one line each ("<source>: faults[3]: expands to no link ...");
    # not sent to hosts nor kept in results
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def device(self, name: str) -> DeviceSpec:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    def device_id(self, name: str) -> int:
        for i, d in enumerate(self.devices):
            if d.name == name:
                return i
        raise KeyError(name)


def scenario_to_dict(s: Scenario) -> dict[str, Any]:
    """The scenario as JSON-ready builtins, fields in declaration order; ``warnings`` stay behind."""
    # the faults and the job encode themselves: keep them out of the generic pass
    out: dict[str, Any] = msgspec.to_builtins(replace(s, faults=(), job=None))
    del out["warnings"]
    out["faults"] = [f.to_dict() for f in s.faults]
    out["job"] = s.job.to_dict() if s.job is not None else None
    return out


def scenario_from_dict(d: dict[str, Any]) -> Scenario:
    scenario = msgspec.convert({**d, "faults": (), "job": None}, Scenario)
    return replace(scenario, faults=tuple(change_from_dict(f) for f in d["faults"]),
                   job=JobPlan.from_dict(d["job"]) if d.get("job") else None)

