"""The scale-across experiments in scenarios/wan/: sites joined by gateways and OTN nodes, with
figures checked against physics (latency sums, go-back-N per error, protection gaps, retry budgets,
Flex-O rates) and determinism between partitions."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from emulators.kernel.vtime import PS_PER_MS, PS_PER_S, PS_PER_US, serialization_ps
from emulators.rdma.settings import PACKET_OVERHEAD_BYTES, NicSettings
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario, parse_scenario

WAN = Path(__file__).resolve().parents[2] / "scenarios" / "wan"
GBPS = 10**9
PAYLOAD_SHARE = 4096 / (4096 + PACKET_OVERHEAD_BYTES)
FIBER_PS_PER_M = 4900
RTO_PS = NicSettings().rto_ps
RETRY_BUDGET_PS = RTO_PS * (NicSettings().retries + 1)


@functools.cache
def run(name: str, partition: str = "single") -> dict[str, Any]:
    return run_scenario(load_scenario(WAN / f"{name}.yaml"), partition)


def rates(results: dict[str, Any], device: str, counter: str) -> dict[int, float]:
    """Sample start -> bits per second of a counter between consecutive samples."""
    s = results["timeseries"][device]
    t, v = s["t_ps"], s[counter]
    return {t[i]: (v[i + 1] - v[i]) * 8 * PS_PER_S / (t[i + 1] - t[i]) for i in range(len(t) - 1)}


def test_goodput_falls_with_ber_as_go_back_n_predicts_and_the_qp_errors_at_the_high_end() -> None:
    flows = run("ber-sweep")["flows"]
    order = ["ber-12", "ber-11", "ber-10", "ber-9", "ber-8", "ber-7"]
    goodputs = [flows[name]["goodput_bps"] for name in order]
    assert goodputs == sorted(goodputs, reverse=True) and goodputs[-1] < goodputs[0] / 50
    round_trip_ps = 2 * 300_000 * FIBER_PS_PER_M
    in_flight = 400 * GBPS * PAYLOAD_SHARE * round_trip_ps / (8 * PS_PER_S)
    clean = flows["ber-12"]
    assert clean["retx_bytes"] == 0 and clean["state"] == "complete"
    for name in ("ber-9", "ber-8"):
        f = flows[name]
        assert f["state"] == "complete" and f["undelivered_bytes"] == 0
        # each error delays the end by a round trip, and resends at most a round trip of data (less
        # when the message ends sooner: 256 MiB is under two round trips at this rate)
        assert f["fct_ps"] == pytest.approx(clean["fct_ps"] + f["naks_received"] * round_trip_ps, rel=0.02)
        assert 0 < f["retx_bytes"] <= f["naks_received"] * in_flight * 1.02
    # almost every packet hit: retransmissions keep failing and the retry budget runs out
    high = flows["ber-4"]
    assert high["state"] == "error" and high["timeouts"] == NicSettings().retries + 1
    assert high["error"]["at_ps"] == pytest.approx(RETRY_BUDGET_PS, rel=0.01)


def test_one_way_latency_across_300_km_is_the_sum_of_propagation_and_device_latencies() -> None:
    probe = run("latency-300km")["flows"]["probe"]
    links_m = [3, 30, 10, 300_000, 10, 30, 3]  # server, leaf-gateway, gateway-OTN, the line, and back
    serialisation = len(links_m) * serialization_ps(4096, 400 * GBPS)  # store and forward at every hop
    devices = 2 * (600 * 1000 + 2 * PS_PER_US + 5 * PS_PER_US)  # leaf, gateway, OTN node on each side
    expected = sum(links_m) * FIBER_PS_PER_M + serialisation + devices
    assert probe["latency_ps"]["min"] == probe["latency_ps"]["max"] == expected
    assert probe["unaccounted_bytes"] == 0 and probe["lost_bytes"] == 0


def test_a_deep_gateway_buffer_keeps_the_wan_lossless_where_switches_drop() -> None:
    deep, plain = run("lossless-gateway"), run("lossless-switch")
    write = deep["flows"]["write"]
    assert write["state"] == "complete" and write["retx_bytes"] == 0 and write["undelivered_bytes"] == 0
    edge = deep["devices"]["edge-dc2"]
    drops = [k for k, v in edge["counters"].items() if k.startswith("drop_") and v]
    assert not drops and edge["counters"]["pfc_xoff_sent"] > 0
    # the far edge held its XOFF threshold plus what the WAN still carried after it paused: the
    # excess rate (400G in, 200G out) for a round trip of 100 km
    round_trip_ps = 2 * 100_000 * FIBER_PS_PER_M
    xoff = edge["settings"]["pfc_xoff_bytes"]
    in_flight = (400 - 200) * GBPS * round_trip_ps // (8 * PS_PER_S)
    assert edge["counters"]["buffer_peak_bytes"] == pytest.approx(xoff + in_flight, rel=0.03)
    # and the WAN kept the receiver's 200G link busy: goodput near 200G minus headers
    assert write["rx_goodput_bps"] >= 0.98 * 200 * GBPS * PAYLOAD_SHARE
    # plain switches pause too, but a round trip in flight overflows a normal headroom
    lost = plain["devices"]["edge-dc2"]["counters"]
    assert lost["drop_headroom_frames"] > 0 and plain["flows"]["write"]["retx_bytes"] > 0


def test_fast_cnp_reacts_in_microseconds_where_end_to_end_takes_a_wan_round_trip() -> None:
    fast, e2e = run("fast-cnp")["flows"]["write"], run("e2e-cnp")["flows"]["write"]
    assert fast["first_rate_cut_ps"] > 0 and e2e["first_rate_cut_ps"] > 0
    round_trip_ps = 2 * 100_000 * FIBER_PS_PER_M
    # the WAN queue builds from the start at 300G of excess: 4 MiB takes about 110 us
    assert fast["first_rate_cut_ps"] < 200 * PS_PER_US
    assert e2e["first_rate_cut_ps"] - fast["first_rate_cut_ps"] >= 0.9 * round_trip_ps
    # marks keep coming for a round trip after each cut, so the end-to-end loop overshoots: more
    # cuts, a deeper floor, and less delivered by the end than with fast CNP
    assert fast["state"] == "complete"
    assert e2e["rate_cuts"] > fast["rate_cuts"] and e2e["min_rate_bps"] < fast["min_rate_bps"]
    assert e2e["rx_payload_bytes"] < fast["rx_payload_bytes"]


def test_a_1plus1_working_cut_loses_frames_only_in_the_switch_gap_and_rdma_recovers() -> None:
    results = run("protection-1plus1")
    write, probe = results["flows"]["write"], results["flows"]["probe"]
    assert write["state"] == "complete" and write["undelivered_bytes"] == 0
    assert not [e for e in results["qp_events"] if e["kind"] == "qp_error"]
    # the probe sends 4 KiB every 32.768 us: it lost what was on the 300 km fibre when it was cut
    # (1.47 ms of frames) and what it sent in the 50 ms before the switch
    per_frame_ps = 4096 * 8 * PS_PER_S // GBPS
    on_fibre = 300_000 * FIBER_PS_PER_M // per_frame_ps
    gap_frames = 50 * PS_PER_MS // per_frame_ps
    assert abs(probe["lost_bytes"] // 4096 - (gap_frames + on_fibre)) <= 2
    # latency after the switch is the protection path's: 20 km longer (plus at most a few bulk
    # frames the probe waited behind on the way)
    longer = probe["latency_ps"]["max"] - probe["latency_ps"]["min"]
    assert 20_000 * FIBER_PS_PER_M <= longer <= 20_000 * FIBER_PS_PER_M + 10 * PS_PER_US
    [switch] = [e for e in results["devices"]["otn-dc1"]["protection_events"]]
    assert switch["at_ps"] == 5 * PS_PER_MS + 50 * PS_PER_MS
    # the NICs were told: the write's window now covers the longer round trip
    assert write["protection_switches_told"] >= 1


@pytest.mark.parametrize(("name", "survives"), [("ason-fast", True), ("ason-slow", False)])
def test_ason_restoration_within_the_retry_budget_recovers_and_beyond_it_errors(name: str, survives: bool) -> None:
    results = run(name)
    write = results["flows"]["write"]
    errors = [e for e in results["qp_events"] if e["kind"] == "qp_error"]
    if survives:
        assert write["state"] == "complete" and write["undelivered_bytes"] == 0 and not errors
        assert write["timeouts"] >= 1
    else:
        assert write["state"] == "error"
        [error] = errors
        # the last acknowledgement came just before the cut at 2 ms, then rto x (retries + 1) passed
        assert 2 * PS_PER_MS + RETRY_BUDGET_PS - 5 * PS_PER_MS < error["at_ps"] <= 2 * PS_PER_MS + RETRY_BUDGET_PS


def test_throughput_follows_a_flex_o_resize_under_load() -> None:
    results = run("flexo-resize")
    by_time = rates(results, "gw-dc2", "dc0.tx_bytes")
    assert by_time[7 * PS_PER_MS] == pytest.approx(800 * GBPS, rel=0.03)  # 8 x 100G
    assert by_time[15 * PS_PER_MS] == pytest.approx(400 * GBPS, rel=0.03)  # resized to 4 x 100G at 10 ms
    assert by_time[27 * PS_PER_MS] == pytest.approx(800 * GBPS, rel=0.03)  # back at 20 ms
    assert all(f["state"] == "complete" for f in results["flows"].values())


def test_a_bulk_transfer_over_300_km_is_identical_in_single_and_site_partitions() -> None:
    scenario = replace(load_scenario(WAN / "bulk-300km.yaml"), duration_ps=8 * PS_PER_MS)
    single = run_scenario(scenario, "single")
    site = run_scenario(scenario, "site")
    assert site["run"]["lookahead_ps"] == 300_000 * FIBER_PS_PER_M and site["run"]["cut_links"] == ["wan-dc1-dc2"]
    assert deterministic_view(single) == deterministic_view(site)


def test_cooperative_protection_survives_two_cuts() -> None:
    results = run("cooperative")
    write = results["flows"]["write"]
    assert write["state"] == "complete" and write["undelivered_bytes"] == 0
    assert not [e for e in results["qp_events"] if e["kind"] == "qp_error"]
    events = results["devices"]["otn-dc1"]["protection_events"]
    # 1+1 moves to protection 50 ms after the first cut; after the second cut the restored working
    # path (up at 300 ms) takes over once its 50 ms hold-off has passed
    assert [(e["at_ps"], e["to"]) for e in events] == [(55 * PS_PER_MS, "dc2-p"), (255 * PS_PER_MS, "dc2-w")]
    assert write["protection_switches_told"] == 2


def test_an_on_demand_lightpath_carries_traffic_only_after_its_setup_time() -> None:
    flows = run("lightpath-on-demand")["flows"]
    early, late = flows["early"], flows["late"]
    assert early["state"] == late["state"] == "complete"
    # posted before the path existed: lost, and resent when the timer fired (5 ms + 67.1 ms)
    assert early["timeouts"] == 1 and early["first_rx_ps"] > 5 * PS_PER_MS + RTO_PS
    # posted after setup (21 ms): at line rate straight away
    assert late["timeouts"] == 0 and late["first_rx_ps"] < 25 * PS_PER_MS + PS_PER_MS


RESTORED_LONGER = """
name: restored-longer
duration: 15ms
fabrics:
  dc1: {leaves: 1, spines: 0, servers_per_leaf: 1, server_rate: 400G, server_options: {buffer: 4GiB}}
  dc2: {leaves: 1, spines: 0, servers_per_leaf: 1, server_rate: 100G}
wan:
  line_rate: 400G
  pairs:
    - {a: dc1, b: dc2, length: 100km, restoration: {after: 1ms, length: 1000km}}
flows:
  - {name: bulk, src: dc1-s0/nic, dst: dc2-s0/nic, rate: 400G, frame: 64KiB, for: 10ms, priority: 3, start: 3ms}
faults:
  - {at: 1ms, wan: dc1-dc2, cut: working}
"""


def test_pfc_headroom_follows_a_restored_longer_path_so_the_wan_stays_lossless() -> None:
    """The restored route is ten times longer: its round trip in flight must fit the new headroom."""
    results = run_scenario(parse_scenario(RESTORED_LONGER, "<restored-longer>"))
    for node in ("otn-dc1", "otn-dc2", "gw-dc1", "gw-dc2"):
        counters = results["devices"][node]["counters"]
        assert not {k: v for k, v in counters.items() if k.startswith("drop_") and v}, node
    far = results["devices"]["otn-dc2"]
    round_trip_ps = 2 * 1_000_000 * FIBER_PS_PER_M
    assert far["settings"]["pfc_headroom_bytes"]["dc1-w"] > 400 * GBPS * round_trip_ps // (8 * PS_PER_S)
    bulk = results["flows"]["bulk"]
    assert bulk["unaccounted_bytes"] == 0 and bulk["lost_bytes"] == 0
