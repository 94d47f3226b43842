"""The wire form of a resolved scenario and its job (what hosts receive as JSON): its shape, and the
round trip back to an equal scenario."""

from __future__ import annotations

import json

import pytest

from emulators.model.faults import LinkBer, LinkState
from emulators.model.job import COLLECTIVE, COMPUTE, DP, JobPlan, Op, RankPlace
from emulators.model.scenario import (
    DeviceSpec,
    Endpoint,
    FlowSpec,
    LinkSpec,
    Scenario,
    scenario_from_dict,
    scenario_to_dict,
)
from orchestrator.scenario.loader import load_scenario

PLAN = JobPlan(
    model="toy", parallel={"tp": 1, "pp": 1, "dp": 2, "ep": 1},
    ranks=(RankPlace("gpu0", 0), RankPlace("gpu1", 0)), groups=((0, 1),),
    programs=((Op(COMPUTE, "compute", flops=10), Op(COLLECTIVE, "dp", (0,), nbytes=64, collective="all-reduce",
                                                     group=0, cid=0, dim=DP)),) * 2,
    iterations=1, tokens_per_iteration=8, flops_per_iteration=40, info={"note": ["a", 1]},
)
SCENARIO = Scenario(
    name="toy", source="<string>", seed=1, duration_ps=10**9, sample_interval_ps=10**6, sites=("a",),
    devices=(DeviceSpec("gpu0", "gpu-server", "a", ("nic0",), {"gpus": 1}),
             DeviceSpec("gpu1", "gpu-server", None, ("nic0",))),
    links=(LinkSpec("l0", Endpoint("gpu0", "nic0"), Endpoint("gpu1", "nic0"), 400 * 10**9, 2000),),
    flows=(FlowSpec("f0", Endpoint("gpu0", "nic0"), Endpoint("gpu1", "nic0"), 10**9, 1500, 0, 3),),
    faults=(LinkState(0, 5, "l0", "down"), LinkBer(1, 7, "l0", 1e-9)),
    job=PLAN, warnings=("not sent",),
)


def test_the_wire_form_keeps_its_keys_order_and_compact_ops() -> None:
    wire = json.loads(json.dumps(scenario_to_dict(SCENARIO)))
    assert list(wire) == ["name", "source", "seed", "duration_ps", "sample_interval_ps", "sites", "devices",
                          "links", "flows", "faults", "job"]
    assert wire["devices"][1] == {"name": "gpu1", "kind": "gpu-server", "site": None, "ports": ["nic0"],
                                  "options": {}}
    assert wire["links"][0] == {"name": "l0", "a": {"device": "gpu0", "port": "nic0"},
                                "z": {"device": "gpu1", "port": "nic0"}, "rate_bps": 400 * 10**9,
                                "length_mm": 2000, "ber": 0.0, "delay_ps_per_m": 4900}
    assert wire["faults"][1] == {"index": 1, "at_ps": 7, "link": "l0", "state": None, "rate_bps": None,
                                 "ber": 1e-9, "length_mm": None}
    # an op travels as its kind, its stream and the fields it does not leave at their default
    assert wire["job"]["programs"][0] == [
        {"kind": "compute", "stream": "compute", "flops": 10},
        {"kind": "collective", "stream": "dp", "deps": [0], "nbytes": 64, "collective": "all-reduce", "group": 0,
         "cid": 0, "dim": "dp"}]
    assert wire["job"]["ranks"] == [{"device": "gpu0", "gpu": 0}, {"device": "gpu1", "gpu": 0}]


def test_the_round_trip_gives_an_equal_scenario_without_warnings() -> None:
    back = scenario_from_dict(json.loads(json.dumps(scenario_to_dict(SCENARIO))))
    assert back == SCENARIO
    assert back.warnings == ()
    assert back.job is not None
    assert isinstance(back.devices[0].ports, tuple) and isinstance(back.job.programs[0][1].deps, tuple)
    assert JobPlan.from_dict(PLAN.to_dict()) == PLAN


@pytest.mark.parametrize("path", ["scenarios/default.yaml", "scenarios/cross-traffic.yaml",
                                  "scenarios/fabric/dual-plane.yaml"])
def test_scenario_files_survive_the_round_trip(path: str) -> None:
    scenario = load_scenario(path)
    text = json.dumps(scenario_to_dict(scenario))
    back = scenario_from_dict(json.loads(text))
    assert back == scenario
    assert json.dumps(scenario_to_dict(back)) == text  # no value changes type on the way (0 stays 0)
