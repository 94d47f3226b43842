"""The scale-out fabric experiments in scenarios/fabric/, run as written, with their figures checked
against physics: line rate minus headers, PFC losslessness, go-back-N cost per error, retry budget,
ECMP collisions vs GSE spraying, dual-plane failover."""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from emulators.kernel.vtime import PS_PER_MS, PS_PER_S, PS_PER_US
from emulators.rdma.settings import PACKET_OVERHEAD_BYTES
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario, parse_scenario

FABRIC = Path(__file__).resolve().parents[2] / "scenarios" / "fabric"
GBPS = 10**9
PAYLOAD_SHARE = 4096 / (4096 + PACKET_OVERHEAD_BYTES)
LINE = 400 * GBPS
MIB = 2**20


@functools.cache
def run(name: str, seed: int | None = None) -> dict[str, Any]:
    return run_scenario(load_scenario(FABRIC / f"{name}.yaml", seed))


def rates(results: dict[str, Any], device: str, counter: str) -> list[tuple[int, float]]:
    """(sample start, bits per second) between consecutive samples of a counter."""
    s = results["timeseries"][device]
    t, v = s["t_ps"], s[counter]
    return [(t[i], (v[i + 1] - v[i]) * 8 * PS_PER_S / (t[i + 1] - t[i])) for i in range(len(t) - 1)]


def test_back_to_back_goodput_is_within_one_percent_of_line_rate_minus_headers() -> None:
    write = run("back-to-back")["flows"]["write"]
    assert write["state"] == "complete" and write["undelivered_bytes"] == 0
    assert abs(write["goodput_bps"] / (LINE * PAYLOAD_SHARE) - 1) < 0.01


def test_incast_with_pfc_is_lossless_and_keeps_the_bottleneck_busy() -> None:
    results = run("incast-pfc")
    leaf = results["devices"]["dc-leaf0"]["counters"]
    flows = [f for name, f in results["flows"].items() if name.startswith("incast-")]
    assert len(flows) == 8 and all(f["state"] == "complete" and f["undelivered_bytes"] == 0 for f in flows)
    assert leaf["drop_headroom_frames"] == leaf["drop_lossy_frames"] == 0
    assert sum(f["retx_bytes"] for f in flows) == 0
    assert leaf["pfc_xoff_sent"] > 0 and leaf["pfc_xon_sent"] > 0
    # the bottleneck (leaf port down0 toward dc-s0) is busy while all eight send
    first_done = min(f["completion_ps"] for f in flows)
    busy = [r for t, r in rates(results, "dc-leaf0", "down0.tx_bytes") if t + 500 * PS_PER_US <= first_done]
    assert len(busy) >= 6 and min(busy) >= 0.98 * LINE, busy
    # conservation: what the receiver got is what was sent, once
    assert sum(f["rx_payload_bytes"] for f in flows) == 8 * 32 * MIB


def test_incast_without_pfc_drops_and_recovers_with_go_back_n() -> None:
    results = run("incast-no-pfc")
    leaf = results["devices"]["dc-leaf0"]["counters"]
    flows = [f for name, f in results["flows"].items() if name.startswith("incast-")]
    assert leaf["pfc_xoff_sent"] == 0 and leaf["drop_lossy_frames"] > 0
    assert sum(f["retx_bytes"] for f in flows) > 0 and sum(f["naks_received"] for f in flows) > 0
    # nothing is lost silently: past the retry budget every QP has either delivered its whole
    # message exactly once or reported an error, and most finish within the first RTOs
    assert all(f["state"] == "error" or (f["state"] == "complete" and f["undelivered_bytes"] == 0) for f in flows)
    assert sum(f["state"] == "complete" for f in flows) >= 6
    assert max(f["timeouts"] for f in flows) >= 1  # a resend dropped again waits for the timer
    # and go-back-N resends at least what the switch dropped (payload of the dropped frames)
    dropped_payload = leaf["drop_lossy_bytes"] * 4096 // (4096 + PACKET_OVERHEAD_BYTES)
    assert sum(f["retx_bytes"] for f in flows) >= dropped_payload


def aggregate_share(results: dict[str, Any]) -> float:
    """Aggregate throughput (the sum of every flow's delivery rate) over the ideal: every flow at
    line rate minus headers, which a non-blocking fabric allows a permutation."""
    flows = [f for name, f in results["flows"].items() if name.startswith("perm-")]
    assert len(flows) == 16 and all(f["state"] == "complete" and f["undelivered_bytes"] == 0 for f in flows)
    return sum(f["rx_goodput_bps"] for f in flows) / (len(flows) * LINE * PAYLOAD_SHARE)


SEEDS = (1, 2, 3)


def test_permutation_gse_reaches_95_percent_of_ideal_where_ecmp_collides() -> None:
    roce = [aggregate_share(run("permutation-roce", seed)) for seed in SEEDS]
    gse = [aggregate_share(run("permutation-gse", seed)) for seed in SEEDS]
    assert min(gse) >= 0.95, gse
    assert max(roce) < min(gse) and sum(roce) / len(roce) < 0.95, roce
    # ECMP collisions: in every seed some uplink carries two flows, while spraying spreads evenly
    for seed in SEEDS:
        hashed = [uplink_bytes(run("permutation-roce", seed), leaf) for leaf in range(4)]
        assert any(max(u) >= 2 * 32 * MIB for u in hashed), hashed
        for leaf in range(4):
            sprayed = uplink_bytes(run("permutation-gse", seed), leaf)
            assert max(sprayed) < 1.05 * min(sprayed), sprayed


def uplink_bytes(results: dict[str, Any], leaf: int) -> list[int]:
    ports = results["devices"][f"dc-leaf{leaf}"]["ports"]
    return [ports[f"up{j}"]["tx_bytes"] for j in range(4)]


def test_go_back_n_loss_matches_a_round_trip_per_error_and_grows_with_length() -> None:
    flows = run("ber-go-back-n")["flows"]
    loss = {}
    for name, km in (("near", 10), ("far", 50)):
        f = flows[name]
        assert f["state"] == "complete" and f["undelivered_bytes"] == 0 and f["naks_received"] > 5
        round_trip_ps = 2 * km * 1000 * 4900
        in_flight = LINE * PAYLOAD_SHARE * round_trip_ps / (8 * PS_PER_S)
        assert f["retx_bytes"] == pytest.approx(f["naks_received"] * in_flight, rel=0.05)
        loss[km] = 1 - f["goodput_bps"] / (LINE * PAYLOAD_SHARE)
        # the analytic loss: errors per second x a round trip each, over the transfer time
        errors_per_s = f["naks_received"] / (f["fct_ps"] / PS_PER_S)
        assert loss[km] == pytest.approx(errors_per_s * round_trip_ps / PS_PER_S, rel=0.1)
    assert loss[50] > 2 * loss[10]


def test_link_down_longer_than_the_retry_budget_errors_the_qp_shorter_recovers() -> None:
    results = run("link-down")
    flows = results["flows"]
    assert flows["long"]["state"] == "error" and flows["short"]["state"] == "complete"
    [error] = [e for e in results["qp_events"] if e["kind"] == "qp_error"]
    assert error["flow"] == "long" and error["device"] == "long-a"
    budget = 4 * 200 * PS_PER_US  # rto x (retries + 1)
    assert 2 * PS_PER_MS + budget - 20 * PS_PER_US < error["at_ps"] <= 2 * PS_PER_MS + budget
    assert flows["short"]["undelivered_bytes"] == 0 and flows["short"]["timeouts"] >= 2


def test_dual_plane_failure_halves_throughput_without_qp_error_and_recovers() -> None:
    results = run("dual-plane")
    write = results["flows"]["write"]
    assert write["state"] == "complete" and write["undelivered_bytes"] == 0 and write["failovers"] == 1
    assert [e["kind"] for e in results["qp_events"]] == ["failover", "restored"]
    by_time = dict(rates(results, "dc-s2", "rdma_rx_payload_bytes"))
    full = 2 * LINE * PAYLOAD_SHARE
    assert by_time[1 * PS_PER_MS] == pytest.approx(full, rel=0.01)
    assert by_time[4 * PS_PER_MS] == pytest.approx(full / 2, rel=0.01)
    assert by_time[8 * PS_PER_MS] == pytest.approx(full, rel=0.01)


@pytest.mark.parametrize("name", ["permutation-roce", "permutation-gse"])
def test_fabric_runs_are_identical_in_single_and_device_partitions(name: str) -> None:
    scenario = replace(load_scenario(FABRIC / f"{name}.yaml"), duration_ps=150 * PS_PER_US)
    single = run_scenario(scenario, "single")
    device = run_scenario(scenario, "device")
    assert len(device["run"]["hosts"]) == 24 and single["events"] > 10_000
    assert deterministic_view(single) == deterministic_view(device)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["incast-pfc", "permutation-gse"])
def test_fabric_runs_are_identical_across_host_processes(name: str) -> None:
    scenario = replace(load_scenario(FABRIC / f"{name}.yaml"), duration_ps=40 * PS_PER_US)
    single = run_scenario(scenario, "single")
    device = run_scenario(scenario, "device", "process")
    assert deterministic_view(single) == deterministic_view(device)
    assert not math.isnan(single["events"])


GSE_FLAPS = """
name: gse-flaps
duration: 40ms
fabrics:
  dc:
    mode: gse
    leaves: 4
    spines: 4
    servers_per_leaf: 4
    server_rate: 400G
    server_options: {rdma: {rto: 1ms}}
traffic:
  - {pattern: permutation, fabric: dc, name: perm, transport: rdma, bytes: 32MiB}
faults:
  - {at: 300us, link: dc-leaf0.up0, state: down}
  - {at: 500us, link: dc-leaf0.up0, state: up}
  - {at: 310us, link: dc-leaf1.up1, state: down}
  - {at: 700us, link: dc-leaf1.up1, state: up}
"""


def test_gse_survives_uplinks_cut_under_load_without_leaking_credit_or_buffer() -> None:
    """Requests, grants and containers lost on cut links (spines keep their routes) cost time, not
    the fabric: every message completes and every queue, buffer and credit drains."""
    results = run_scenario(parse_scenario(GSE_FLAPS, "<gse-flaps>"))
    flows = [f for name, f in results["flows"].items() if name.startswith("perm-")]
    assert all(f["state"] == "complete" and f["undelivered_bytes"] == 0 for f in flows)
    leaves = [results["devices"][f"dc-leaf{i}"]["counters"] for i in range(4)]
    assert all(c["buffer_bytes"] == c["dgsq_bytes"] == c["reorder_bytes"] == 0 for c in leaves)
    assert sum(c["grants_expired"] + c["requests_restated"] for c in leaves) > 0
    spines = [results["devices"][f"dc-spine{j}"]["counters"] for j in range(4)]
    assert sum(c["no_route_frames"] for c in spines) > 0  # the cut really lost frames at the spines


REMOTE_FAILURE = """
name: remote-failure
duration: 150ms
sample_interval: 10ms
fabrics:
  dc:
    leaves: 2
    spines: 2
    servers_per_leaf: 2
    server_rate: 400G
    switch_options: {reconvergence: 20ms}
traffic:
  - {pattern: permutation, fabric: dc, name: perm, transport: rdma, bytes: 64MiB}
faults:
  - {at: 100us, link: dc-leaf1.up0, state: down}
"""


def test_routing_converges_around_a_link_the_source_leaf_cannot_see() -> None:
    """spine0 loses its link to leaf1: leaf0 still hashes flows onto spine0, which has nowhere to send
    them, until routing converges (20 ms); go-back-N's timer then resends over spine1."""
    results = run_scenario(parse_scenario(REMOTE_FAILURE, "<remote-failure>"))
    flows = [f for name, f in results["flows"].items() if name.startswith("perm-")]
    assert all(f["state"] == "complete" and f["undelivered_bytes"] == 0 for f in flows)
    spine0 = results["devices"]["dc-spine0"]["counters"]
    assert spine0["no_route_frames"] > 0  # blackholed before convergence
    assert results["devices"]["dc-leaf0"]["counters"]["reroutes"] == 1
    stuck = [f for f in flows if f["timeouts"]]
    assert stuck and all(f["fct_ps"] > 20 * PS_PER_MS for f in stuck)  # they waited for convergence
