"""The measured upper bound of a mixed GPU pool: what each homogeneous sub-pool reaches on its own.

A job's GPUs are of one *kind* when their servers resolve to the same GPU figures (the options in
:data:`~emulators.gpu_server.gpus.GPU_OPTIONS`: type, peak, MFU, scale-up bandwidth and latency).
The *homogeneous sub-pool* of a kind is the same scenario (topology, faults, flows, the same job
block: model, parallel shape, batch, placement, splits) with every server of the job given that
kind's GPU options, so the whole job runs on GPUs of that kind. It keeps the size of the mixed job,
not the size of the kind's share of it, because a job shape (tp x pp x dp) runs on exactly that
many GPUs: a pool of only the kind's GPUs could not run it. Splits by compute then fall back to even
ones (every GPU is alike). Its measured throughput T_k (tokens/s) is what that kind of GPU reaches
per GPU, times the job's GPUs, with the job's communication on the same network: weighted by the
kind's share of the mixed job's GPUs (n_k / N), it is what those n_k GPUs contribute when they work
at their own pace. A mixed pool cannot do better than every kind at its own pace, so

    bound = sum over kinds of T_k x n_k / N

is its measured upper bound, and the mixed run's tokens/s over it the *measured* pool efficiency:
beside ``job.pool_efficiency`` (throughput over the pooled GPUs' peak x MFU), which charges the job
for its communication too, this one charges it only for what mixing the kinds costs.

The variant is built from the resolved scenario alone: the loader keeps no job block, but the plan
records every key of one (:func:`job_block`), so the job is rebuilt on the variant's servers with
the builder the loader uses. No file is read again, scenarios held in memory work alike, and
fabrics and supernodes are already expanded into the servers whose options change.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from emulators.gpu_server.gpus import DEFAULT_GPU, GPU_OPTIONS, TERA, GpuHardware, hardware_of, mfu_source
from emulators.model.job import JobPlan
from emulators.model.scenario import DeviceSpec, Scenario
from orchestrator.workload.job import build_job
from orchestrator.workload.placement import RANK_MAP, scale_up_domains


@dataclasses.dataclass(frozen=True)
class GpuKind:
    """GPUs that resolve to the same figures, and where the job has them."""

    options: dict[str, Any]  # the GPU options (GPU_OPTIONS) of its first server, as the scenario gives them
    hardware: GpuHardware
    servers: tuple[str, ...]  # the job's servers of this kind, in rank order
    gpus: int  # ranks of the job on them


def gpu_kinds(scenario: Scenario) -> list[GpuKind]:
    """The kinds of GPU the scenario's job runs on, in the order its ranks first reach them."""
    plan = scenario.job
    if plan is None:
        return []
    by_rank = [hardware_of(scenario.device(place.device).options) for place in plan.ranks]
    options_of: dict[GpuHardware, dict[str, Any]] = {}
    servers_of: dict[GpuHardware, dict[str, None]] = {}  # an ordered set
    for place, hardware in zip(plan.ranks, by_rank, strict=True):
        options = scenario.device(place.device).options
        options_of.setdefault(hardware, {key: options[key] for key in GPU_OPTIONS if key in options})
        servers_of.setdefault(hardware, {})[place.device] = None
    gpus = Counter(by_rank)
    return [GpuKind(options, hardware, tuple(servers_of[hardware]), gpus[hardware])
            for hardware, options in options_of.items()]


def job_block(plan: JobPlan) -> dict[str, Any]:
    """The job block, as the loader hands it to :func:`~orchestrator.workload.job.build_job` (times in
    ps), that builds ``plan`` again on the same servers. ValueError for a plan no job block made."""
    info = plan.info
    if "global_batch" not in info:
        raise ValueError("the job was not generated from a job block (a collective test or a plan written by "
                         "hand); only a training job has sub-pools to measure")
    placement = info["placement"]
    if placement == RANK_MAP:
        placement = {"rank_map": [f"{place.device}:{place.gpu}" for place in plan.ranks]}
    return {
        "model": plan.model,
        "model_overrides": dict(info["model_overrides"]),
        "parallel": dict(plan.parallel),
        "global_batch": info["global_batch"],
        "micro_batch": info["micro_batch"],
        "sequence": info["sequence"],
        "dtype": info["dtype"],
        "iterations": plan.iterations,
        "servers": list(info["servers"]),
        "placement": placement,
        "overlap_pp": info["overlap_pp"],
        "stagger_dp": info["stagger_dp"],
        "split": dict(info["split"]),
        "algorithm": plan.algorithm,
        "checkpoint": {"every": plan.checkpoint_every, "save": plan.checkpoint_save_ps, "restart": plan.restart,
                       "restart_time": plan.restart_ps, "detect": plan.detect_ps},
        "transport": plan.transport,
        "nccl": dict(plan.nccl),
        "watchdog_timeout": plan.watchdog_ps,
        "start": plan.start_ps,
    }


def homogeneous(scenario: Scenario, kind: GpuKind, index: int = 0) -> Scenario:
    """The scenario with every server of its job given ``kind``'s GPU options and the job rebuilt on them.
    Its duration and sample interval grow by the fastest kind's peak x MFU over this one's (at least 1), so
    a pool of slower GPUs has about the time the mixed run had to finish its iterations."""
    plan = scenario.job
    assert plan is not None, "a scenario without a job has no sub-pools"
    used = {place.device for place in plan.ranks}
    devices = tuple(_with_gpu(device, kind.options) if device.name in used else device
                    for device in scenario.devices)
    topology = dataclasses.replace(scenario, devices=devices, job=None)
    job = build_job(job_block(plan), devices, scenario.sites, scale_up_domains(topology))
    assert job.ranks == plan.ranks, "a server's GPU options moved the job's ranks"
    stretch = max(1.0, max(_speed(k.hardware) for k in gpu_kinds(scenario)) / _speed(kind.hardware))
    return dataclasses.replace(
        topology, name=f"{scenario.name}.subpool{index}-{kind.options.get('gpu', DEFAULT_GPU)}", job=job,
        duration_ps=math.ceil(scenario.duration_ps * stretch),
        sample_interval_ps=math.ceil(scenario.sample_interval_ps * stretch))  # as many samples, not more


def subpool_bound(scenario: Scenario, run: Callable[[Scenario], dict[str, Any]]) -> dict[str, Any] | None:
    """The measured upper bound of the scenario's mixed pool: each kind's homogeneous sub-pool run with
    ``run`` (it returns results.json's content), weighted by the kind's share of the job's GPUs:
    ``{"gpus": N, "kinds": [{"gpu", "options", "peak_tflops", "mfu", "mfu_source", "servers", "gpus": n_k,
    "iteration_time_ps", "tokens_per_s": T_k, "share_tokens_per_s": T_k x n_k / N}, ...],
    "bound_tokens_per_s"}``, kinds in the order the job's ranks reach them. None when the job runs on
    one kind of GPU (or the scenario has no training job). ValueError when a sub-pool completes no
    iteration."""
    plan = scenario.job
    if plan is None or "collective_test" in plan.info:
        return None
    kinds = gpu_kinds(scenario)
    if len(kinds) < 2:
        return None
    gpus = len(plan.ranks)
    entries = []
    for index, kind in enumerate(kinds):
        variant = homogeneous(scenario, kind, index)
        job = run(variant)["job"]
        if not job["tokens_per_gpu_per_s"]:
            raise ValueError(
                f"the homogeneous sub-pool {variant.name} completed no iteration in {variant.duration_ps / 1e12:g} s "
                f"(status {job['status']}); lengthen the scenario's duration")
        tokens_per_s = job["tokens_per_gpu_per_s"] * job["gpus"]
        entries.append({
            "gpu": kind.options.get("gpu", DEFAULT_GPU),
            "options": kind.options,  # the kind's GPU options as the scenario gives them (units resolved)
            "peak_tflops": kind.hardware.peak_flops_per_s / TERA,
            "mfu": kind.hardware.mfu,
            "mfu_source": mfu_source(kind.options),
            "servers": list(kind.servers),
            "gpus": kind.gpus,
            "iteration_time_ps": job["iteration_time_ps"],
            "tokens_per_s": tokens_per_s,  # the homogeneous pool, as large as the mixed job
            "share_tokens_per_s": tokens_per_s * kind.gpus / gpus,
        })
    return {"gpus": gpus, "kinds": entries, "bound_tokens_per_s": sum(e["share_tokens_per_s"] for e in entries)}


def measured_pool_efficiency(job: dict[str, Any], bound: dict[str, Any]) -> float:
    """The mixed run's tokens/s (results.json ``job``) over its sub-pools' bound (:func:`subpool_bound`)."""
    return float(job["tokens_per_gpu_per_s"] * job["gpus"] / bound["bound_tokens_per_s"])


def _with_gpu(device: DeviceSpec, gpu_options: dict[str, Any]) -> DeviceSpec:
    options = {key: value for key, value in device.options.items() if key not in GPU_OPTIONS}
    return dataclasses.replace(device, options=options | gpu_options)


def _speed(hardware: GpuHardware) -> float:
    return hardware.peak_flops_per_s * hardware.mfu


def add_subpool_bound(results: dict[str, Any], scenario: Scenario,
                      run: Callable[[Scenario], dict[str, Any]]) -> bool:
    """For a job on a mixed pool, run its homogeneous sub-pools with ``run`` and add ``job.subpools``
    (:func:`subpool_bound`) and ``job.pool_efficiency_measured`` to ``results``; False (nothing added)
    for a job on one kind of GPU, or one that completed no iteration."""
    job = results.get("job")
    if not job or not job.get("tokens_per_gpu_per_s"):
        return False
    bound = subpool_bound(scenario, run)
    if bound is None:
        return False
    job["subpools"] = bound
    job["pool_efficiency_measured"] = measured_pool_efficiency(job, bound)
    return True
