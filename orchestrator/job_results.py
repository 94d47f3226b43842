"""The training job's figures of merit, from what the GPU servers measured (results.json ``job``).

Every GPU server keeps the same replica of the job's control-plane state (interruptions,
checkpoints), so any one of them speaks for the job; each reports the ranks it ran.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from emulators.model.job import DIMENSIONS
from emulators.model.scenario import Scenario
from orchestrator.fault_impact import MAX_PS, analyse_faults, whole_ps
from orchestrator.workload.collective_test import bandwidths
from orchestrator.workload.estimate import estimate

LINK_CLASSES = ("scale_up", "fabric", "wan")


def job_results(scenario: Scenario, devices: dict[str, Any]) -> dict[str, Any] | None:
    plan = scenario.job
    if plan is None:
        return None
    ranks: dict[str, Any] = {}
    bound_flops = 0.0  # the pooled GPUs' FLOP/s at their MFU: what no schedule can beat
    volumes = {dim: dict.fromkeys(LINK_CLASSES, 0) for dim in DIMENSIONS}
    per_iteration = {dim: dict.fromkeys(LINK_CLASSES, 0) for dim in DIMENSIONS}
    replica: dict[str, Any] | None = None
    for name in sorted(devices):
        measured = devices[name].get("job")
        if not measured:
            continue
        ranks.update(measured["ranks"])
        bound_flops += len(measured["ranks"]) * measured["peak_tflops"] * measured["mfu"] * 1e12
        for totals, counted in ((volumes, measured["bytes"]), (per_iteration, measured["iteration_bytes"])):
            for dim, by_class in counted.items():
                for link_class, n in by_class.items():
                    totals[dim][link_class] += n
        replica = replica or measured
    gpus = len(plan.ranks)
    interruptions = replica["interruptions"] if replica else []
    iterations = _iterations(ranks, gpus, plan.start_ps, interruptions)
    times = [it["time_ps"] for it in iterations]
    median = int(statistics.median(times)) if times else None  # None: no iteration completed, no figure
    last_attempt = len(interruptions)
    finished = any(it["attempt"] == last_attempt and it["iteration"] == plan.iterations - 1 for it in iterations)
    if replica and replica["stopped"]:
        status = "stopped"
    elif len(ranks) == gpus and finished:
        status = "completed"
    else:
        status = "incomplete"
    span = (iterations[-1]["end_ps"] - plan.start_ps) if iterations else 0
    comm = [r["comm_ps"] for r in ranks.values()]
    exposed = [r["exposed_ps"] for r in ranks.values()]
    timeline_iteration = min(1, plan.iterations - 1)
    test = plan.info.get("collective_test")
    extra = {"collective_test": test | bandwidths(test, median or 0)} if test else {}
    return extra | {
        "model": plan.model,
        "parallel": plan.parallel,
        "gpus": gpus,
        "iterations_planned": plan.iterations,
        "status": status,
        "iterations": iterations,
        # the median: a checkpoint save or a restart in one iteration does not skew it
        "iteration_time_ps": median,
        "tokens_per_gpu_per_s": _ratio(plan.tokens_per_iteration * 10**12, (median or 0) * gpus),
        # throughput over the pooled GPUs' upper bound (Trial C's figure of merit)
        "pool_efficiency": _ratio(plan.flops_per_iteration * 1e12, (median or 0) * bound_flops),
        "communication_share": _ratio(sum(comm), len(comm) * span) if median else None,
        # the share of time a rank communicates with nothing to compute, in a median iteration (the
        # run's time, aborted attempts included, is the denominator, so interruptions do not inflate it)
        "exposed_communication_ps": (round(sum(exposed) * median / (len(exposed) * span))
                                     if median and exposed and span else None),
        "bytes": volumes,  # over the whole run
        "bytes_per_iteration": per_iteration,  # in the timeline's iteration
        "interruptions": interruptions,
        "lost_ps": sum(i["lost_ps"] or 0 for i in interruptions),
        "checkpoints": replica["checkpoints"] if replica else [],
        "timeline": {
            "iteration": timeline_iteration,
            "ranks": {r: ranks[r]["timeline"] for r in sorted(ranks, key=int)},
        },
        "estimate": _estimate(scenario),
        "info": plan.info,
    }


def _estimate(scenario: Scenario) -> dict[str, Any]:
    """The closed form's headline figures, printed beside the emulated ones (none for a plan written by
    hand rather than generated from a job block)."""
    try:
        result = estimate(scenario)
    except ValueError:
        return {}
    keys = ("iteration_time_ps", "compute_ps", "bubble_ps", "dp_tail_ps", "tokens_per_gpu_per_s", "mfu_effective",
            "comm_ps")
    return {key: result[key] for key in keys if key in result}


def equivalent_compute(results: dict[str, Any], baseline: dict[str, Any], source: str) -> None:
    """Add to ``results`` the equivalent compute against ``baseline`` (another run's results): its
    iteration time over this one's. ValueError when either has no iteration time to compare."""
    reference = baseline_iteration_ps(baseline, source)
    job = results.get("job")
    if not job or not job["iteration_time_ps"]:
        raise ValueError(f"{source}: this run completed no iteration of a training job to compare")
    job["baseline"] = {"source": source, "iteration_time_ps": reference}
    job["equivalent_compute"] = reference / job["iteration_time_ps"]
    analyse_faults(results)  # every iteration, the worst one and each fault, against the baseline now


def baseline_iteration_ps(baseline: Any, source: str) -> int:
    """The median iteration time of another run's results (read from a file: anything may be there);
    ValueError unless it is a positive whole number of picoseconds."""
    job = baseline.get("job") if isinstance(baseline, dict) else None
    written = job.get("iteration_time_ps") if isinstance(job, dict) else None
    if not written:
        raise ValueError(f"{source}: no completed iteration of a training job to compare with")
    time_ps = whole_ps(written)
    if time_ps is None:
        raise ValueError(f"{source}: job.iteration_time_ps is {repr(written)[:40]}, not a whole number of "
                         f"picoseconds from 1 to {MAX_PS - 1}")
    return time_ps


def _ratio(numerator: float, denominator: float) -> float | None:
    """A figure of merit; None where it has no meaning (nothing to divide by) or no finite value."""
    if denominator <= 0:
        return None
    value = numerator / denominator
    return value if math.isfinite(value) else None


def _iterations(ranks: dict[str, Any], gpus: int, start_ps: int,
                interruptions: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Iterations every rank completed, in the order they ended: an iteration ends when its last rank
    finishes it, and starts when the one before it ended (or when its attempt began), as a training
    loop's log counts time per step."""
    ends: dict[tuple[int, int], list[int]] = {}
    for record in ranks.values():
        for iteration, attempt, _, end in record["iterations"]:
            ends.setdefault((attempt, iteration), []).append(end)
    attempt_start: dict[int, int] = {0: start_ps}
    for k, interruption in enumerate(interruptions):
        if interruption.get("resumed_ps") is not None:
            attempt_start[k + 1] = interruption["resumed_ps"]
    complete = sorted(((max(v), a, i) for (a, i), v in ends.items() if len(v) == gpus))
    out: list[dict[str, int]] = []
    previous: dict[int, int] = {}
    for end, attempt, iteration in complete:
        start = previous.get(attempt, attempt_start.get(attempt, start_ps))
        out.append({"iteration": iteration, "attempt": attempt, "start_ps": start, "end_ps": end,
                    "time_ps": end - start})
        previous[attempt] = end
    return out
