"""Partition plans and the clock they imply, on the in-process backend."""

from __future__ import annotations

import json

import pytest

from orchestrator.partition import PartitionError, plan_partition
from orchestrator.results import deterministic_view
from orchestrator.scenario.loader import load_scenario, parse_scenario
from tests.helpers import run_text, two_testers

THREE_SITES = """
name: p
duration: 1ms
devices:
  a1: {kind: tester, site: a, ports: [x, y]}
  a2: {kind: tester, site: a, ports: [x]}
  b1: {kind: tester, site: b, ports: [x]}
  w:  {kind: tester, ports: [x]}
links:
  - {name: in-a, a: a1/x, z: a2/x, rate: 100G, length: 0m}
  - {name: a-b, a: a1/y, z: b1/x, rate: 100G, length: 50km}
  - {name: b-w, a: w/x, z: a2/x, rate: 100G, length: 2km}
"""


def test_site_partition_cuts_only_links_between_sites():
    text = THREE_SITES.replace("  - {name: b-w, a: w/x, z: a2/x, rate: 100G, length: 2km}\n", "")
    plan = plan_partition(parse_scenario(text), "site")
    assert plan.hosts == {"a": ("a1", "a2"), "b": ("b1",), "wan": ("w",)}
    assert plan.cut_links == ("a-b",)
    assert plan.lookahead_ps == 50_000 * 4_900_000 // 1000


def test_lookahead_is_the_shortest_cut_link_over_the_whole_timeline():
    text = two_testers(length="100km", faults="  - {at: 1ms, link: l, length: 20km}")
    plan = plan_partition(parse_scenario(text), "device")
    assert plan.lookahead_ps == 20_000_000 * 4900 // 1000


def test_single_partition_has_no_lookahead():
    plan = plan_partition(parse_scenario(two_testers()), "single")
    assert plan.hosts == {"all": ("ta", "tb")} and plan.lookahead_ps is None and plan.cut_links == ()


def test_zero_latency_cut_is_rejected_with_a_clear_message():
    with pytest.raises(PartitionError) as e:
        plan_partition(parse_scenario(THREE_SITES.replace("- {name: b-w, a: w/x, z: a2/x, rate: 100G, length: 2km}\n",
                                                          "")), "device")
    assert "in-a" in str(e.value) and "0 ps" in str(e.value) and "a1" in str(e.value)


def test_unknown_partition_lists_the_choices():
    with pytest.raises(PartitionError, match="single, site, device"):
        plan_partition(parse_scenario(two_testers()), "rack")


@pytest.mark.parametrize("partition", ["site", "device"])
def test_default_scenario_is_identical_in_every_partition_in_process(partition):
    scenario = load_scenario("scenarios/testers.yaml")
    from orchestrator.run import run_scenario

    single = run_scenario(scenario, "single")
    other = run_scenario(scenario, partition)
    assert other["run"]["windows"] > single["run"]["windows"]
    assert json.dumps(deterministic_view(other)) == json.dumps(deterministic_view(single))


def test_window_count_follows_the_lookahead():
    # one frame a millisecond over a 100 km link (490 µs lookahead): windows jump across idle time
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 524288000, frame: 64KiB, count: 5}"
    r = run_text(two_testers(length="100km", flows=flows, duration="6ms"), partition="device")
    assert r["flows"]["f"]["rx_frames"] == 5
    # each frame costs ~2 windows (send, then arrival); idle gaps cost none
    assert 5 <= r["run"]["windows"] <= 16
