"""The measured bound of a mixed GPU pool: homogeneous sub-pools of the same job, run by the testbed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emulators.gpu_server.gpus import ASSUMED_MFU_SOURCE, GPU_TYPES, LLAMA3_H100
from emulators.model.scenario import Scenario
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import parse_scenario, scenario_schema
from orchestrator.subpools import gpu_kinds, homogeneous, job_block, measured_pool_efficiency, subpool_bound
from orchestrator.workload.job import build_job
from orchestrator.workload.placement import scale_up_domains

TRIAL_C = Path(__file__).parents[2] / "scenarios" / "trial-c"


def two_servers(fast: str, slow: str, rate: str = "400G", scale_up: str = "", job: str = "") -> str:
    """Two GPU servers of 2 GPUs (options ``fast`` and ``slow``) on one switch, and a small DP job over
    their 4 GPUs, micro-batches split by compute."""
    devices = "".join(
        f"  {name}: {{kind: gpu_server, ports: [nic0, nic1], options: {{gpus: 2, {gpu}{scale_up}, "
        f"rdma: {{chunk: 1MiB}}}}}}\n" for name, gpu in (("fast", fast), ("slow", slow)))
    links = "".join(f"  - {{name: {s}.nic{g}, a: {s}/nic{g}, z: sw/{s}{g}, rate: {rate}, length: 3m}}\n"
                    for s in ("fast", "slow") for g in range(2))
    return f"""version: 0
name: two-kinds
duration: 1s
devices:
{devices}  sw: {{kind: switch, ports: [fast0, fast1, slow0, slow1]}}
links:
{links}job:
  model: llama2-7b
  model_overrides: {{layers: 2}}
  parallel: {{tp: 1, pp: 1, dp: 4}}
  global_batch: 8
  micro_batch: 1
  sequence: 1024
  iterations: 2
  split: {{dp: compute}}
{job}"""


MIXED = two_servers("gpu: h100", "gpu: l20")
# so near and fast that the gradients' all-reduce costs nothing measurable beside the compute
IDLE = two_servers("gpu: h100", "gpu: l20", rate="100000T", scale_up=", scale_up_bandwidth: 100000T, "
                   "scale_up_latency: 0s")


class Recorder:
    """run_scenario, remembering what it ran."""

    def __init__(self) -> None:
        self.ran: list[Scenario] = []

    def __call__(self, scenario: Scenario) -> dict[str, Any]:
        self.ran.append(scenario)
        return run_scenario(scenario)


def test_one_kind_of_gpu_has_no_subpools() -> None:
    run = Recorder()
    assert subpool_bound(parse_scenario(two_servers("gpu: l20", "gpu: l20")), run) is None
    # another spelling of the same figures is the same kind
    assert subpool_bound(parse_scenario(two_servers("gpu: h100", "gpu: h100, mfu: 0.43")), run) is None
    assert run.ran == []


def test_kinds_are_told_apart_by_any_gpu_figure() -> None:
    kinds = gpu_kinds(parse_scenario(two_servers("gpu: h20", "gpu: h20, tflops: 512")))
    assert [(k.options, k.servers, k.gpus) for k in kinds] == [
        ({"gpu": "h20"}, ("fast",), 2), ({"gpu": "h20", "tflops": 512}, ("slow",), 2)]


def test_a_homogeneous_subpool_is_the_same_job_on_one_kind_with_even_splits() -> None:
    mixed = parse_scenario(MIXED)
    assert mixed.job is not None and mixed.job.info["micro_batches_per_replica"] == [3, 3, 1, 1]
    fast, slow = gpu_kinds(mixed)
    for kind in (fast, slow):
        variant = homogeneous(mixed, kind)
        assert variant.job is not None
        assert [d.options for d in variant.devices if d.kind == "gpu_server"] == [
            {"gpus": 2, "rdma": {"chunk": 2**20}} | kind.options] * 2
        assert variant.links == mixed.links and variant.job.ranks == mixed.job.ranks
        assert variant.job.info["micro_batches_per_replica"] == [2, 2, 2, 2]
        assert variant.job.flops_per_iteration == mixed.job.flops_per_iteration
    # a pool of the slower GPUs gets as much longer to finish as they are slower, in as many samples
    slower = (989.4 * GPU_TYPES["h100"].mfu) / (119.5 * GPU_TYPES["l20"].mfu)
    stretched = homogeneous(mixed, slow)
    assert stretched.duration_ps == pytest.approx(mixed.duration_ps * slower, abs=1)
    assert stretched.sample_interval_ps == pytest.approx(mixed.sample_interval_ps * slower, abs=1)
    same = homogeneous(mixed, fast)
    assert (same.duration_ps, same.sample_interval_ps) == (mixed.duration_ps, mixed.sample_interval_ps)


def test_two_kinds_bound_the_pool_by_their_subpools_measured_throughput() -> None:
    mixed = parse_scenario(MIXED)
    run = Recorder()
    bound = subpool_bound(mixed, run)
    assert bound is not None and bound["gpus"] == 4
    fast, slow = bound["kinds"]
    assert (fast["gpu"], fast["options"], fast["servers"], fast["gpus"]) == ("h100", {"gpu": "h100"}, ["fast"], 2)
    assert fast["mfu_source"] == LLAMA3_H100
    assert (slow["gpu"], slow["servers"], slow["gpus"], slow["mfu_source"]) == ("l20", ["slow"], 2, ASSUMED_MFU_SOURCE)
    assert len(run.ran) == 2
    for entry, variant in zip(bound["kinds"], run.ran, strict=True):
        direct = run_scenario(variant)["job"]  # the variant run on its own (runs are deterministic)
        assert entry["tokens_per_s"] == direct["tokens_per_gpu_per_s"] * 4
        assert entry["iteration_time_ps"] == direct["iteration_time_ps"]
        assert entry["share_tokens_per_s"] == entry["tokens_per_s"] * 2 / 4
    assert bound["bound_tokens_per_s"] == pytest.approx(fast["tokens_per_s"] / 2 + slow["tokens_per_s"] / 2)
    assert fast["tokens_per_s"] > slow["tokens_per_s"]
    # the mixed pool, split by compute, does not beat the bound its own GPUs set
    job = run_scenario(mixed)["job"]
    assert 0 < measured_pool_efficiency(job, bound) <= 1
    json.dumps(bound)  # a results.json figure


def test_without_communication_cost_a_subpool_runs_at_peak_times_mfu() -> None:
    mixed = parse_scenario(IDLE)
    assert mixed.job is not None
    bound = subpool_bound(mixed, run_scenario)
    assert bound is not None
    plan = mixed.job
    for entry in bound["kinds"]:
        seconds = plan.flops_per_iteration / (4 * entry["peak_tflops"] * 1e12 * entry["mfu"])
        assert entry["tokens_per_s"] == pytest.approx(plan.tokens_per_iteration / seconds, rel=0.02)
    assert [entry["mfu"] for entry in bound["kinds"]] == [GPU_TYPES["h100"].mfu, GPU_TYPES["l20"].mfu]


def test_a_collective_test_has_no_subpools() -> None:
    text = MIXED[:MIXED.index("job:")] + "collective_test: {op: all-reduce, bytes: 1MiB}\n"
    assert subpool_bound(parse_scenario(text), run_scenario) is None


# --- the job block a plan records ----------------------------------------------------------------


def test_the_job_block_of_a_plan_names_every_key_a_job_block_has() -> None:
    plan = parse_scenario(MIXED).job
    assert plan is not None
    assert set(job_block(plan)) == set(scenario_schema()["properties"]["job"]["properties"])


EVERY_KEY = two_servers("gpu: h100", "gpu: l20", job=(
    "  placement: {rank_map: [slow:1, fast:0, slow:0, fast:1]}\n"
    "  checkpoint: {every: 1, save: 1ms, restart: false, detect: 2s}\n  start: 1ms\n  transport: ideal\n"
    "  watchdog_timeout: 5s\n  stagger_dp: true\n  overlap_pp: false\n  nccl: {buffsize: 1MiB}\n"))


@pytest.mark.parametrize("text", [
    pytest.param(MIXED, id="mixed"),
    pytest.param(EVERY_KEY, id="every-key"),
    *(pytest.param(path.read_text(), id=path.stem) for path in sorted(TRIAL_C.glob("*.yaml"))),
])
def test_the_job_block_of_a_plan_builds_the_same_plan(text: str) -> None:
    scenario = parse_scenario(text)
    assert scenario.job is not None
    again = build_job(job_block(scenario.job), scenario.devices, scenario.sites, scale_up_domains(scenario))
    assert again == scenario.job
