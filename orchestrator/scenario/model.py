"""The resolved scenario model. It lives in :mod:`emulators.model.scenario` (pure data, shared with the
device hosts); this module re-exports it for the scenario loader."""

from emulators.model.scenario import (
    FIBER_DELAY_PS_PER_M,
    DeviceSpec,
    Endpoint,
    FlowSpec,
    LinkSpec,
    Scenario,
    propagation_ps,
    scenario_from_dict,
    scenario_to_dict,
)

__all__ = [
    "FIBER_DELAY_PS_PER_M",
    "DeviceSpec",
    "Endpoint",
    "FlowSpec",
    "LinkSpec",
    "Scenario",
    "propagation_ps",
    "scenario_from_dict",
    "scenario_to_dict",
]
