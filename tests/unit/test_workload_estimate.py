"""The closed-form estimate: compute alone is FLOPs / (peak x MFU) exactly, a pipeline without
communication is (M + P - 1)(t_f + t_b), collectives follow the ring closed forms over the scale-up
mesh, the NICs and the site-to-site cut; and the GPU facts every part of the testbed shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.gpu_server.gpus import GPU_TYPES
from emulators.model.scenario import DeviceSpec, Scenario
from orchestrator import cli
from orchestrator.scenario.loader import parse_scenario
from orchestrator.workload.collective_times import (
    all_to_all_ps,
    in_network_ps,
    p2p_ps,
    ring_all_reduce_ps,
    ring_reduce_scatter_ps,
    scale_up_ring_ps,
)
from orchestrator.workload.estimate import StageTimes, estimate, one_f_one_b_ps, pipeline
from orchestrator.workload.hardware import compute_ps, gpu_of, nic_ports_of
from orchestrator.workload.job import model_of
from orchestrator.workload.schedule import sizes_by_stage

GOODPUT = 4096 / (4096 + 82)  # RoCEv2 payload per wire byte at the default MTU
CHUNK_BITS = (64 * 1024 + 16 * 82) * 8  # one 64 KiB chunk on the wire: 16 packets with their overhead
SMALL_JOB = """\
job:
  model: llama2-7b
  model_overrides: {layers: 2}
  parallel: {tp: 1, pp: 1, dp: 1}
  global_batch: 4
  sequence: 128
"""


def scenario(text: str) -> Scenario:
    return parse_scenario("duration: 1s\n" + text, "scenarios/estimate.yaml")


# --- hardware ------------------------------------------------------------------------------------


def test_gpu_of_takes_the_type_and_its_overrides() -> None:
    plain = DeviceSpec("s", "gpu_server", None, ("n0",), {})
    h100 = GPU_TYPES["h100"]
    assert gpu_of(plain) == (h100.peak_tflops * 1e12, h100.mfu, h100.scale_up_bps, h100.scale_up_latency_ps)
    tuned = DeviceSpec("s", "gpu_server", None, ("n0",), {"gpu": "l20", "tflops": 100, "mfu": 0.5,
                                                          "scale_up_bandwidth": 10**12, "scale_up_latency": 7})
    assert gpu_of(tuned) == (100e12, 0.5, 10**12, 7)
    with pytest.raises(ValueError, match="unknown GPU type 'x'; known types: h100"):
        gpu_of(DeviceSpec("s", "gpu_server", None, ("n0",), {"gpu": "x"}))


def test_compute_ps_rounds_to_the_nearest_picosecond() -> None:
    assert compute_ps(10**12, 1e12, 1.0) == 10**12  # one TFLOP/s: a FLOP per picosecond
    assert compute_ps(3, 2e12, 1.0) == 2  # 1.5 ps, rounded half to even
    assert compute_ps(10**15, 989.4e12, 0.4) == round(10**15 * 1e12 / (989.4e12 * 0.4))


def test_each_gpu_has_its_own_nic_bonded_or_not() -> None:
    spec = DeviceSpec("s", "gpu_server", None, ("a0", "b0", "a1", "b1"),
                      {"gpus": 2, "nics": {"nic0": ["a0", "b0"], "nic1": ["a1", "b1"]}})
    assert nic_ports_of(spec, 1) == ("a1", "b1")
    single = DeviceSpec("s", "gpu_server", None, ("n0", "n1"), {"gpus": 2})
    assert nic_ports_of(single, 0) == ("n0",) and nic_ports_of(single, 5) == ()


# --- closed forms --------------------------------------------------------------------------------


def test_ring_closed_forms() -> None:
    gib, bps = 2**30, 400e9
    assert ring_all_reduce_ps(gib, 8, bps, 0) == pytest.approx(2 * 7 / 8 * gib * 8 / bps * 1e12)
    assert ring_all_reduce_ps(gib, 8, bps, 1000) == pytest.approx(2 * 7 * (gib / 8 * 8 / bps * 1e12 + 1000))
    assert ring_reduce_scatter_ps(gib, 8, bps, 1000) == pytest.approx(ring_all_reduce_ps(gib, 8, bps, 1000) / 2)
    assert all_to_all_ps(gib, 4, bps, 1000) == pytest.approx(3 / 4 * gib * 8 / bps * 1e12 + 1000)
    assert p2p_ps(gib, bps, 1000) == pytest.approx(gib * 8 / bps * 1e12 + 1000)
    assert ring_all_reduce_ps(gib, 1, bps, 1000) == 0


@pytest.mark.parametrize("overlap", [True, False])
def test_one_f_one_b_without_communication_is_m_plus_p_minus_1_slots(overlap: bool) -> None:
    stages = [StageTimes(forward_ps=10.0, backward_ps=20.0)] * 4
    result = pipeline(stages, micro_batches=8, overlap=overlap)
    assert result["pipeline_ps"] == (8 + 4 - 1) * 30
    assert result["bubble_ps"] == (4 - 1) * 30
    assert result["finish_ps"] == [330, 310, 290, 270]  # each stage's last backward
    uneven = [StageTimes(10.0, 20.0), StageTimes(20.0, 40.0)]
    assert pipeline(uneven, 5, overlap)["pipeline_ps"] == one_f_one_b_ps([10, 20], [20, 40], 5) == 4 * 60 + 90


def test_a_long_round_trip_sets_the_pace_when_sends_overlap() -> None:
    # two stages, 1 ms of compute per micro-batch each, 5 ms to cross: the round trip rules
    stages = [StageTimes(300.0, 700.0, send_forward_ps=5000.0, hold_forward_ps=5000.0),
              StageTimes(300.0, 700.0, send_backward_ps=5000.0, hold_backward_ps=5000.0)]
    result = pipeline(stages, micro_batches=10, overlap=True)
    assert result["period_ps"] == (2000 + 10000) / 2  # F/B of both stages and both crossings, 2 in flight
    assert result["pipeline_ps"] == 9 * 6000 + 12000
    blocking = pipeline(stages, micro_batches=10, overlap=False)
    assert blocking["period_ps"] == 6000  # the send holds each stage's compute stream
    # a send holds its stream until acknowledged: a round trip, not just the way there
    acked = [StageTimes(300.0, 700.0, send_forward_ps=5000.0, hold_forward_ps=9000.0),
             StageTimes(300.0, 700.0, send_backward_ps=5000.0, hold_backward_ps=9000.0)]
    assert pipeline(acked, micro_batches=10, overlap=False)["period_ps"] == 10000


# --- whole scenarios -----------------------------------------------------------------------------


def test_compute_only_is_flops_over_peak_times_mfu() -> None:
    exact = scenario("devices:\n  g: {kind: gpu_server, ports: [n0], options: {gpus: 1, tflops: 1, mfu: 1}}\n"
                     + SMALL_JOB)
    assert exact.job is not None
    result = estimate(exact)
    assert result["iteration_time_ps"] == exact.job.flops_per_iteration  # 1 TFLOP/s: one FLOP per ps
    assert result["compute_ps"] == result["iteration_time_ps"] and result["bubble_ps"] == 0
    assert result["comm_ps"] == {"tp": 0, "pp": 0, "dp": 0, "ep": 0}
    assert result["mfu_effective"] == pytest.approx(1.0)
    h100 = scenario("devices:\n  g: {kind: gpu_server, ports: [n0], options: {gpus: 1}}\n" + SMALL_JOB)
    assert h100.job is not None
    ideal = h100.job.flops_per_iteration * 1e12 / (989.4e12 * GPU_TYPES["h100"].mfu)  # the type's defaults
    assert abs(estimate(h100)["iteration_time_ps"] - ideal) <= 4  # 4 micro-batches, 2 roundings each
    assert estimate(h100)["tokens_per_gpu_per_s"] == pytest.approx(4 * 128 / (ideal / 1e12))


def test_a_pipeline_on_a_fast_mesh_is_m_plus_p_minus_1_slots() -> None:
    text = ("devices:\n  g: {kind: gpu_server, ports: [n0, n1, n2, n3], options: {gpus: 4, "
            "scale_up_bandwidth: 1000000T, scale_up_latency: 0}}\n"
            + SMALL_JOB.replace("pp: 1", "pp: 4").replace("layers: 2", "layers: 4").replace("global_batch: 4",
                                                                                             "global_batch: 8"))
    result = estimate(scenario(text))
    stage = result["stages"][0]
    slot = stage["forward_ps"] + stage["backward_ps"]
    assert all(s["forward_ps"] + s["backward_ps"] == slot for s in result["stages"])
    assert result["iteration_time_ps"] == pytest.approx((8 + 4 - 1) * slot, rel=1e-6)
    assert result["bubble_ps"] == pytest.approx(3 * slot, rel=1e-6)


def test_tp_all_reduce_runs_on_the_scale_up_mesh() -> None:
    text = ("devices:\n  g: {kind: gpu_server, ports: [n0, n1, n2, n3, n4, n5, n6, n7]}\n"
            + SMALL_JOB.replace("tp: 1", "tp: 8"))
    result = estimate(scenario(text))
    nbytes = 2 * 2 * 128 * 4096 * 2  # 2 all-reduces per layer as one, 2 layers, b*s*h bf16
    h100 = GPU_TYPES["h100"]
    assert result["stages"][0]["tp_ps"] == round(ring_all_reduce_ps(nbytes, 8, h100.scale_up_bps,
                                                                     h100.scale_up_latency_ps))


def test_dp_all_reduce_between_servers_rides_the_nics() -> None:
    text = """\
devices:
  a: {kind: gpu_server, ports: [n0], options: {gpus: 1}}
  b: {kind: gpu_server, ports: [n0], options: {gpus: 1}}
links:
  - {a: a/n0, z: b/n0, rate: 400G, length: 0}
""" + SMALL_JOB.replace("dp: 1", "dp: 2")
    s = scenario(text)
    assert s.job is not None
    result = estimate(s)
    gradient = s.job.info["parameters_per_stage"][0] * 2
    latency = CHUNK_BITS * 1e12 / 400e9  # back to back: one chunk's serialisation, no propagation
    assert result["stages"][0]["dp_ps"] == round(2 * (2 - 1) * (gradient / 2 * 8e12 / (400e9 * GOODPUT) + latency))
    assert result["dp_tail_ps"] == result["stages"][0]["dp_ps"]  # nothing to hide it behind


WAN = """\
sites: [dc1, dc2]
devices:
  a: {kind: gpu_server, site: dc1, ports: [n0, n1], options: {gpus: 2}}
  b: {kind: gpu_server, site: dc2, ports: [n0, n1], options: {gpus: 2}}
  sw1: {kind: switch, site: dc1, ports: [p0, p1, up]}
  sw2: {kind: switch, site: dc2, ports: [p0, p1, up]}
links:
  - {a: a/n0, z: sw1/p0, rate: 400G, length: 1m}
  - {a: a/n1, z: sw1/p1, rate: 400G, length: 1m}
  - {a: b/n0, z: sw2/p0, rate: 400G, length: 1m}
  - {a: b/n1, z: sw2/p1, rate: 400G, length: 1m}
  - {name: wan, a: sw1/up, z: sw2/up, rate: 100G, length: 10km}
"""


def test_messages_crossing_sites_share_the_cut() -> None:
    s = scenario(WAN + SMALL_JOB.replace("pp: 1, dp: 1", "pp: 2, dp: 2"))
    result = estimate(s)
    assert result["site_capacity_bps"] == {"dc1->dc2": round(100e9 * GOODPUT), "dc2->dc1": round(100e9 * GOODPUT)}
    activation = 128 * 4096 * 2
    one_way = 2 * 4900 + 10_000 * 4900 + 2 * 600_000  # fibre, and the two switches' latency
    serialisation = CHUNK_BITS * 1e12 * (2 / 400e9 + 1 / 100e9)
    both_replicas = 100e9 * GOODPUT / 2  # the two replicas' activations cross at once
    expected = activation * 8e12 / both_replicas + one_way + serialisation
    assert result["stages"][0]["send_forward_ps"] == round(expected)
    assert result["stages"][1]["send_backward_ps"] == round(expected)


def test_staggered_dp_takes_the_wan_one_stage_at_a_time() -> None:
    job = SMALL_JOB.replace("pp: 1, dp: 1", "pp: 2, dp: 2") + "  placement: dp-across-sites\n"
    together = estimate(scenario(WAN + job))
    staggered = estimate(scenario(WAN + job + "  stagger_dp: true\n"))
    # alone on the WAN each stage's reduce-scatter gets all of it: half an all-reduce at twice the share
    for s in range(2):
        assert staggered["stages"][s]["dp_ps"] < together["stages"][s]["dp_ps"]
    assert staggered["exposed_all_gather_ps"] > 0
    assert together["exposed_all_gather_ps"] == 0


def test_the_cli_prints_the_estimate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("duration: 1s\n" + WAN + SMALL_JOB.replace("pp: 1, dp: 1", "pp: 2, dp: 2"))
    assert cli.main(["estimate", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("estimate of scenario job: llama2-7b, TP 1 x PP 2 x DP 2 (EP 1) on 4 GPUs")
    assert "tokens per GPU per second" in out and "site capacity dc1 -> dc2: 98.037 Gb/s" in out
    assert cli.main(["estimate", str(path), "--json"]) == 0
    assert '"iteration_time_ps"' in capsys.readouterr().out
    bare = tmp_path / "bare.yaml"
    bare.write_text("duration: 1s\n")
    assert cli.main(["estimate", str(bare)]) == 2
    assert "has no job: block; add one to estimate it" in capsys.readouterr().err


# --- OLink supernodes ----------------------------------------------------------------------------

PAYLOAD = 256 / 272  # OLink payload per wire byte: 256-byte packets, a 16-byte header each
OLINK_CHUNK_BITS = (64 * 1024 + 256 * 16) * 8  # one 64 KiB frame on the wire
SWITCH_PS = 250_000  # an OLink switch, port to port
TP_BYTES = 2 * 2 * 128 * 4096 * 2  # SMALL_JOB's TP all-reduce: 2 per layer as one, 2 layers, b*s*h bf16


def supernode(options: str = "") -> str:
    return f"supernodes:\n  sn: {{gpus: 16, rate: 1.6T, length: 2m{options}}}\n"


def test_olink_closed_forms() -> None:
    gib, bps = 2**30, 1e12
    assert scale_up_ring_ps("all-reduce", gib, 16, bps, 100) == pytest.approx(30 * (gib / 16 * 8e12 / bps + 100))
    assert scale_up_ring_ps("all-reduce", 100, 16, bps, 0) == 30 * 7 * 8  # ceil(100 / 16) = 7 bytes a step
    assert scale_up_ring_ps("reduce-scatter", gib, 16, bps, 100) == scale_up_ring_ps("all-gather", gib, 16, bps, 100)
    assert scale_up_ring_ps("all-gather", gib, 16, bps, 100) == pytest.approx(15 * (gib / 16 * 8e12 / bps + 100))
    assert in_network_ps("all-reduce", gib, 16, bps, 100) == pytest.approx(gib * 8e12 / bps + 200)
    assert in_network_ps("reduce-scatter", gib, 16, bps, 100) == pytest.approx(gib * 8e12 / bps + 100)
    assert in_network_ps("all-gather", gib, 16, bps, 100) == pytest.approx(15 / 16 * gib * 8e12 / bps + 100)
    assert in_network_ps("all-reduce", gib, 1, bps, 100) == scale_up_ring_ps("all-reduce", gib, 1, bps, 100) == 0


def test_tp_across_the_servers_of_a_supernode_rings_over_the_switch() -> None:
    result = estimate(scenario(supernode() + SMALL_JOB.replace("tp: 1", "tp: 16")))
    bps = 1.6e12 * PAYLOAD
    # GPU -> switch -> GPU: 2 m of cable each way, the switch, a chunk stored and forwarded there
    latency = 2 * 2 * 4900 + SWITCH_PS + OLINK_CHUNK_BITS * 1e12 / 1.6e12
    assert result["stages"][0]["tp_ps"] == round(2 * 15 * (TP_BYTES / 16 * 8e12 / bps + latency))


def test_an_in_network_switch_reduces_the_buffer_sent_once() -> None:
    ring = estimate(scenario(supernode() + SMALL_JOB.replace("tp: 1", "tp: 16")))["stages"][0]["tp_ps"]
    in_network = estimate(scenario(supernode(", switch_options: {in_network: true}")
                                   + SMALL_JOB.replace("tp: 1", "tp: 16")))["stages"][0]["tp_ps"]
    latency = 2 * 2 * 4900 + SWITCH_PS + OLINK_CHUNK_BITS * 1e12 / 1.6e12
    assert in_network == round(TP_BYTES * 8e12 / (1.6e12 * PAYLOAD) + 2 * latency)
    assert ring / in_network > 1.8  # a ring sends 2(g-1)/g of the buffer, and pays 30 latencies


def test_planes_add_up_and_two_tiers_cross_three_switches() -> None:
    job = SMALL_JOB.replace("tp: 1", "tp: 16")
    two_planes = estimate(scenario(supernode(", planes: 2, rate: 800G").replace("rate: 1.6T, ", "") + job))
    latency = 2 * 2 * 4900 + SWITCH_PS + OLINK_CHUNK_BITS * 1e12 / 800e9  # each plane's frames at 800G
    assert two_planes["stages"][0]["tp_ps"] == round(30 * (TP_BYTES / 16 * 8e12 / (1.6e12 * PAYLOAD) + latency))
    # leaves of 4 GPUs: a ring crosses leaf, spine and leaf between GPUs 3 and 4
    two_tiers = estimate(scenario(supernode(", tiers: 2, radix: 8") + job))
    latency = 4 * 2 * 4900 + 3 * SWITCH_PS + 3 * OLINK_CHUNK_BITS * 1e12 / 1.6e12
    assert two_tiers["stages"][0]["tp_ps"] == round(30 * (TP_BYTES / 16 * 8e12 / (1.6e12 * PAYLOAD) + latency))


def test_ep_inside_a_server_with_olink_ports_rides_its_switch() -> None:
    text = ("supernodes:\n  sn: {gpus: 8, rate: 1T, length: 1m, switch_options: {latency: 100ns}}\n"
            "job:\n  model: mixtral-8x7b\n  model_overrides: {layers: 2}\n  parallel: {tp: 1, pp: 1, dp: 8, ep: 8}\n"
            "  global_batch: 8\n  sequence: 128\n")
    s = scenario(text)
    assert s.job is not None and {p.device for p in s.job.ranks} == {"sn-s0"}
    info = s.job.info
    size = sizes_by_stage(model_of(s.job), info["layers_per_stage"], micro_batch=1, sequence=128, dtype_bytes=2,
                          tp=1, ep=8)[0]
    latency = 2 * 4900 + 100_000 + OLINK_CHUNK_BITS * 1e12 / 1e12
    result = estimate(s)
    assert result["stages"][0]["ep_ps"] == round(all_to_all_ps(size.ep_bytes, 8, 1e12 * PAYLOAD, latency))
    # the DP all-reduce (dp / ep = 1: no expert-DP groups) rides the switch too, as a ring: no in_network
    assert result["stages"][0]["dp_ps"] == round(scale_up_ring_ps("all-reduce", size.dp_bytes, 8, 1e12 * PAYLOAD,
                                                                  latency))
