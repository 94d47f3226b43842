"""What a device kind declares about itself, in its own package (``emulators/<package>/kind.py``).

A kind declares the JSON Schema of its ``options`` mapping, whether it forwards, its default latency,
where its model class is, the checks the schema cannot express, and its hooks: the lines it adds to a
run's text summary, its OpenConfig paths (gNMI) and whether the report plots its buffer. The loader,
the CLI summary, gNMI and the report ask the kind (through :mod:`emulators.registry`) instead of
holding a copy of what it knows.

Option values that carry units say so with ``"x-unit"`` (``rate``, ``size``, ``length``, ``time``,
``ber``); the scenario loader converts them to integers (bps, bytes, mm, ps) before any device sees them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emulators.model.scenario import DeviceSpec, LinkSpec
from emulators.openconfig import NO_PATHS, DevicePaths

# a problem a check finds: (key path, what is wrong); inside the options for an options check, of the expanded
# scenario for a scenario check
Problem = tuple[tuple[str | int, ...], str]
# checks the schema cannot express, on options already in integer units: (options, the device's ports)
OptionsCheck = Callable[[dict[str, Any], tuple[str, ...]], Problem | None]
# checks across the whole scenario, on devices and links already resolved: (devices, links) -> (key path of
# the expanded scenario, problem) or None; every kind's runs on every scenario (a kind checks what touches it)
ScenarioCheck = Callable[[tuple[DeviceSpec, ...], tuple[LinkSpec, ...]], Problem | None]
# a device's lines in the text summary, from its name and its entry in results.json
DeviceLines = Callable[[str, dict[str, Any]], list[str]]
# a kind's lines over all its devices' entries in results.json, in device order
TotalLines = Callable[[list[dict[str, Any]]], list[str]]


@dataclass(frozen=True)
class SummaryLines:
    """What a kind adds to the text summary of a run. Kinds of a lower ``rank`` come first; within a
    rank, every device's lines in results order, then each kind's totals in registry order."""

    rank: int
    device: DeviceLines | None = None
    total: TotalLines | None = None


@dataclass(frozen=True)
class DeviceKind:
    name: str
    summary: str
    options_schema: dict[str, Any]
    class_path: str  # "module:Class", imported only when a device of this kind is built
    forwards: bool = False  # switches: frames pass through them toward other devices
    sends_flows: bool = False  # the scenario's flows: are sent and received by devices of this kind
    portless: bool = False  # a device of this kind may have no port (it talks only inside itself)
    # option -> its value unless a device's options say otherwise, in integer units; options whose default
    # depends on the device's surroundings (a link's delay, the GPU type, the frame size) say so in the schema
    defaults: Mapping[str, Any] = field(default_factory=dict)
    check: OptionsCheck | None = None
    check_scenario: ScenarioCheck | None = None
    summary_lines: SummaryLines | None = None
    # "module:object" of its OpenConfig paths beyond every device's system and interfaces (a
    # DevicePaths), imported only when gNMI reads or sets a device of this kind
    paths: str = ""
    buffer_plot: bool = False  # the report plots its shared buffer and its ports' queues

    @property
    def latency_ps(self) -> int:
        """A forwarding device's latency unless its options say otherwise: its declared ``latency`` default."""
        return int(self.defaults.get("latency", 0))

    def load_class(self) -> type:
        cls: type = load_object(self.class_path)
        return cls

    def load_paths(self) -> DevicePaths[Any]:
        if not self.paths:
            return NO_PATHS
        paths: DevicePaths[Any] = load_object(self.paths)
        return paths


def own_defaults(model_defaults: Mapping[str, Any], options_schema: dict[str, Any]) -> dict[str, Any]:
    """The defaults of a kind's own options, from its model's table (which may hold settings its options do not
    offer: a gateway forwards like a switch, as a leaf in RoCE mode)."""
    return {name: value for name, value in model_defaults.items() if name in options_schema["properties"]}


def load_object(ref: str) -> Any:
    """The object a ``"module:object"`` reference names, importing its module."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# timers that fire again and again: below a microsecond they would schedule an event every few picoseconds
TIMER_LEAST = "1us"


def unit_option(unit: str, description: str, nonzero: bool = False, least: str | None = None) -> dict[str, Any]:
    """An option with a unit; ``nonzero``: the loader refuses 0 (``x-nonzero``); ``least``: the smallest value
    it takes, written with a unit (``x-min``), where less would flood the run with events or frames."""
    return ({"x-unit": unit, "description": description} | ({"x-nonzero": True} if nonzero else {})
            | ({"x-min": least} if least is not None else {}))
