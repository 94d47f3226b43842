"""Training jobs end to end: generated programs on GPU servers through the emulated network,
checked against closed forms (the estimator's and the physics')."""

from __future__ import annotations

import pytest

from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import parse_scenario
from orchestrator.workload.estimate import estimate
from orchestrator.workload.job import analytic_bytes

SMALL_MODEL = "model_overrides: {layers: 4}"


def one_server(gpus: int, job: str, options: str = "") -> str:
    return f"""version: 0
name: one-server
duration: 20s
devices:
  s0: {{kind: gpu_server, ports: [], options: {{gpus: {gpus}{options}}}}}
links: []
job:
{job}
"""


def test_compute_only_job_takes_flops_over_peak_times_mfu():
    text = one_server(1, f"""  model: llama2-7b
  {SMALL_MODEL}
  parallel: {{tp: 1, pp: 1, dp: 1}}
  global_batch: 4
  micro_batch: 1
  sequence: 1024
  iterations: 2""", ", gpu: h100, mfu: 0.5")
    scenario = parse_scenario(text)
    assert scenario.job is not None
    results = run_scenario(scenario)
    ideal_ps = scenario.job.flops_per_iteration / (989.4e12 * 0.5) * 1e12
    ops = len(scenario.job.programs[0])  # each compute op rounds to a whole picosecond
    for iteration in results["job"]["iterations"]:
        assert abs(iteration["time_ps"] - ideal_ps) <= ops
    assert results["job"]["estimate"]["iteration_time_ps"] == pytest.approx(ideal_ps, abs=ops)


def test_1f1b_without_communication_cost_takes_the_analytic_time():
    # four stages on one server whose mesh is so fast and near that sends cost nothing measurable
    micro, stages = 8, 4
    text = one_server(4, f"""  model: llama2-7b
  {SMALL_MODEL}
  parallel: {{tp: 1, pp: {stages}, dp: 1}}
  global_batch: {micro}
  micro_batch: 1
  sequence: 1024
  iterations: 1""", ", mfu: 0.4, scale_up_bandwidth: 100000T, scale_up_latency: 0s")
    scenario = parse_scenario(text)
    assert scenario.job is not None
    results = run_scenario(scenario)
    forward, backward = (op for op in scenario.job.programs[0] if op.kind == "compute" and op.label.endswith("0"))
    t_f = round(forward.flops / (989.4e12 * 0.4) * 1e12)
    t_b = round(backward.flops / (989.4e12 * 0.4) * 1e12)
    analytic = (micro + stages - 1) * (t_f + t_b)
    assert results["job"]["iteration_time_ps"] == pytest.approx(analytic, rel=1e-4)
    bubble = (stages - 1) * (t_f + t_b)
    assert results["job"]["iteration_time_ps"] - micro * (t_f + t_b) == pytest.approx(bubble, rel=1e-3)


def pipeline_servers(stages: int, job: str, rate: str = "100G") -> str:
    """One single-GPU server per pipeline stage on a switch: PP crosses the fabric."""
    devices = "".join(f"  s{k}: {{kind: gpu_server, ports: [nic0], options: {{gpus: 1, rdma: {{chunk: 1MiB}}}}}}\n"
                      for k in range(stages))
    ports = ", ".join(f"p{k}" for k in range(stages))
    links = "".join(f"  - {{name: l{k}, a: s{k}/nic0, z: sw/p{k}, rate: {rate}, length: 10m}}\n" for k in range(stages))
    return (f"version: 0\nname: pipeline\nduration: 30s\ndevices:\n{devices}  sw: {{kind: switch, ports: [{ports}]}}\n"
            f"links:\n{links}job:\n{job}\n")


def test_overlapping_pp_sends_saves_what_the_closed_form_predicts():
    # four stages: the middle ones send both ways each micro-batch, so blocking sends lengthen the
    # steady state beyond what the pipeline's round trip already costs
    def job(overlap: bool) -> str:
        return f"""  model: llama2-7b
  {SMALL_MODEL}
  parallel: {{tp: 1, pp: 4, dp: 1}}
  global_batch: 8
  micro_batch: 1
  sequence: 4096
  iterations: 1
  overlap_pp: {str(overlap).lower()}"""

    emulated, estimated = {}, {}
    for overlap in (True, False):
        scenario = parse_scenario(pipeline_servers(4, job(overlap)))
        emulated[overlap] = run_scenario(scenario)["job"]["iteration_time_ps"]
        estimated[overlap] = estimate(scenario)["iteration_time_ps"]
    predicted = estimated[False] - estimated[True]
    assert predicted > 0.02 * estimated[True]  # a difference worth testing
    assert emulated[False] - emulated[True] == pytest.approx(predicted, rel=0.25)


def test_bytes_per_dimension_match_the_analytic_volumes():
    # 2 servers x 4 GPUs: TP 2 inside a server, EP 2 and DP 2 across the pair of replicas, PP 2
    text = f"""version: 0
name: volumes
duration: 30s
fabrics:
  f: {{leaves: 1, spines: 0, servers_per_leaf: 2, server_rate: 400G, server_kind: gpu_server,
      server_options: {{gpus: 4, rdma: {{chunk: 1MiB}}}}}}
job:
  model: mixtral-8x7b
  {SMALL_MODEL}
  parallel: {{tp: 2, pp: 2, dp: 2, ep: 2}}
  global_batch: 4
  micro_batch: 1
  sequence: 512
  iterations: 2
"""
    scenario = parse_scenario(text)
    assert scenario.job is not None
    results = run_scenario(scenario)
    assert results["job"]["status"] == "completed"
    analytic = analytic_bytes(scenario.job)
    measured = {dim: sum(by_class.values()) for dim, by_class in results["job"]["bytes_per_iteration"].items()}
    for dim in ("tp", "pp", "dp", "ep"):
        assert analytic[dim] > 0
        # ring pieces are ceil(S/n): at most n-1 bytes more per piece than the closed form
        assert measured[dim] == pytest.approx(analytic[dim], rel=1e-6), dim


TWO_SITES = """version: 0
name: two-sites
duration: 2s
fabrics:
  dc1: &site {leaves: 1, spines: 1, servers_per_leaf: 1, server_rate: 100G, server_kind: gpu_server,
              server_options: {gpus: 2, rdma: {chunk: 256KiB}}}
  dc2: *site
wan:
  line_rate: 100G
  clients: 1
  pairs:
    - {a: dc1, b: dc2, length: 100km}
job:
  model: llama2-7b
  model_overrides: {layers: 2}
  parallel: {tp: 1, pp: 2, dp: 2}
  global_batch: 4
  micro_batch: 1
  sequence: 256
  iterations: 2
  placement: pp-across-sites
"""


def test_a_two_site_job_is_identical_in_every_partition():
    scenario = parse_scenario(TWO_SITES)
    single = run_scenario(scenario)
    assert single["job"]["status"] == "completed"
    assert single["job"]["bytes_per_iteration"]["pp"]["wan"] > 0
    for partition in ("site", "device"):
        assert deterministic_view(run_scenario(scenario, partition=partition)) == deterministic_view(single), partition
