"""Supernodes end to end, from the scenarios in scenarios/supernode/: incast, bit errors around the
FEC threshold, ring against in-network all-reduce, a MoE job inside a supernode against the same job
over the scale-out fabric, and a supernode job in every partition."""

from __future__ import annotations

import pytest

from emulators.gpu_server.collectives import bytes_sent
from emulators.model.scenario import FIBER_DELAY_PS_PER_M
from emulators.olink import spec
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario, parse_scenario

RATE = 3_600_000_000_000
PAYLOAD_RATE = RATE * spec.PACKET_PAYLOAD / spec.PACKET_BYTES


def run(name: str) -> dict:
    return run_scenario(load_scenario(f"scenarios/supernode/{name}.yaml"))


def olink_totals(results: dict, key: str, kind: str) -> int:
    return sum(port[key] for device in results["devices"].values() if device["kind"] == kind
               for port in device.get("olink", {}).values())


def test_fifteen_to_one_incast_inside_a_supernode_is_lossless_with_the_bottleneck_busy():
    results = run("incast")
    job = results["job"]
    assert job["status"] == "completed"
    switch = results["devices"]["sn-sw"]
    assert all(p["drop_frames"] == 0 and p["lost_frames"] == 0 for p in switch["ports"].values())
    assert olink_totals(results, "replayed_frames", "olink") == 0
    # the port toward GPU 0 (sn-s0/olink0) carried 15 x 64 MiB of payload at the link's payload rate
    assert job["collective_test"]["algbw_bps"] >= 0.98 * PAYLOAD_RATE
    bottleneck = switch["ports"]["p0"]
    assert bottleneck["tx_bytes"] * 8e12 / RATE / job["iteration_time_ps"] >= 0.98
    assert olink_totals(results, "credit_stalls", "gpu_server") > 0


def test_bit_errors_below_the_fec_threshold_cost_nothing_and_above_it_cost_replays():
    clean, below, above = run("ring-allreduce"), run("ber-below-fec"), run("ber-above-fec")
    assert below["job"]["iterations"] == clean["job"]["iterations"]
    assert olink_totals(below, "crc_errors", "olink") == olink_totals(below, "replayed_frames", "gpu_server") == 0
    port = above["devices"]["sn-s0"]["olink"]["olink0"]
    assert port["replayed_frames"] > 0 and above["devices"]["sn-sw"]["olink"]["p0"]["crc_errors"] > 0
    # the replays are what the ring lost: its slowest hop carries them on top of its data
    assert above["job"]["iteration_time_ps"] > clean["job"]["iteration_time_ps"]


def test_ring_all_reduce_matches_the_closed_form_and_in_network_moves_half_the_bytes_in_about_half_the_time():
    ring, innet = run("ring-allreduce"), run("in-network-allreduce")
    n, size = 16, 256 << 20
    piece = size // n
    frame_ps = spec.wire_bytes(spec.DEFAULT_CHUNK) * 8 * 10**12 // RATE
    one_way = frame_ps + 2 * 2 * FIBER_DELAY_PS_PER_M + spec.DEFAULT_LATENCY_PS
    closed = 2 * (n - 1) * (piece * 8e12 / PAYLOAD_RATE + one_way)
    assert ring["job"]["iteration_time_ps"] == pytest.approx(closed, rel=0.01)
    ring_bytes = ring["job"]["bytes"]["tp"]["scale_up"] / n
    innet_bytes = innet["job"]["bytes"]["tp"]["scale_up"] / n
    assert ring_bytes == bytes_sent("all-reduce", size, n)
    assert innet_bytes == size
    assert innet_bytes / ring_bytes == pytest.approx(n / (2 * (n - 1)))
    assert innet["job"]["iteration_time_ps"] / ring["job"]["iteration_time_ps"] == pytest.approx(
        n / (2 * (n - 1)), rel=0.02)


def test_moe_job_with_ep_inside_a_supernode_is_not_slower_than_over_the_fabric():
    inside, outside = run("moe-ep-in-supernode"), run("moe-ep-scale-out")
    assert inside["job"]["status"] == outside["job"]["status"] == "completed"
    assert inside["job"]["bytes"]["ep"]["fabric"] == 0 < outside["job"]["bytes"]["ep"]["fabric"]
    assert inside["job"]["iteration_time_ps"] <= outside["job"]["iteration_time_ps"]


SUPERNODE_JOB = """version: 0
name: supernode-job
duration: 30ms
supernodes:
  sn: {gpus: 16, server_options: {gpus: 8, olink: {chunk: 256KiB}}}
job:
  model: llama2-7b
  model_overrides: {layers: 2}
  parallel: {tp: 8, pp: 2, dp: 1}
  global_batch: 2
  micro_batch: 1
  sequence: 256
  iterations: 2
faults:
  - {at: 0s, link: sn-s1.olink3, ber: 8e-4}
"""


@pytest.mark.parametrize("partition", ["device"])
def test_a_sixteen_gpu_supernode_job_is_identical_in_every_partition(partition):
    scenario = parse_scenario(SUPERNODE_JOB)
    single = run_scenario(scenario)
    assert single["job"]["status"] == "completed"
    assert single["job"]["bytes"]["pp"]["scale_up"] > 0  # the stages talk over OLink
    assert olink_totals(single, "replayed_frames", "gpu_server") + olink_totals(single, "replayed_frames", "olink") > 0
    assert deterministic_view(run_scenario(scenario, partition=partition)) == deterministic_view(single)


def test_a_two_tier_supernode_costs_the_ring_only_its_hops_across_leaves():
    one_tier = """version: 0
name: ring-16
duration: 20ms
supernodes:
  sn: {gpus: 16, server_options: {gpus: 4}}
collective_test: {op: all-reduce, bytes: 64MiB}
"""
    flat = run_scenario(parse_scenario(one_tier))
    tiered = run_scenario(parse_scenario(one_tier.replace("gpus: 16,", "gpus: 16, radix: 8,")))
    assert tiered["job"]["status"] == "completed"
    spines = [d for name, d in tiered["devices"].items() if name.startswith("sn-sp")]
    assert len(spines) == 4 and all(d["counters"]["forwarded_frames"] > 0 for d in spines)
    # 4 of the ring's 16 hops cross leaves; on each, a step's last frame crosses two more switches
    n, frame_ps = 16, spec.wire_bytes(spec.DEFAULT_CHUNK) * 8 * 10**12 // RATE
    extra_hop = spec.DEFAULT_LATENCY_PS + frame_ps + 2 * 2 * FIBER_DELAY_PS_PER_M
    extra = tiered["job"]["iteration_time_ps"] - flat["job"]["iteration_time_ps"]
    steps = 2 * (n - 1)
    assert 0 < extra <= steps * 2 * extra_hop * 4 / n * 1.2
