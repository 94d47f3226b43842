"""A closed-form estimate of a scenario's training iteration: FLOPs, bandwidths and latencies, no emulation.

Printed beside every emulated result, it says what the network costs on paper. Compute times are the
device's (:func:`~orchestrator.workload.hardware.compute_ps`); each hop's bandwidth and latency come from
:mod:`orchestrator.workload.network`, and collectives take their textbook closed forms
(:mod:`orchestrator.workload.collective_times`).

The 1F1B pipeline with P stages and M micro-batches takes (M - 1) T + the first micro-batch's trip down
and back, where T is the steady-state period: the slowest stage's F + B with its blocking collectives
(and blocking sends), a stage's send stream, or a round trip's latency spread over the micro-batches in
flight. DP follows each stage's last backward; staggered, the stages' reduce-scatters run one after the
other and the all-gather is paced with the next forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emulators.model.job import DP, EP, PP, TP
from emulators.model.scenario import Scenario
from orchestrator.workload.collective_times import CollectiveTimes
from orchestrator.workload.hardware import PS_PER_S, compute_ps
from orchestrator.workload.job import model_of
from orchestrator.workload.network import RankNetwork
from orchestrator.workload.placement import EDP, Layout
from orchestrator.workload.schedule import TOKEN_BYTES, StageSizes, sizes_by_stage

ASSUMPTIONS = (
    "compute: each forward/backward op takes round(flops x 1e12 / (peak x MFU)) ps; FLOPs spread evenly over "
    "layers; no optimizer-step FLOPs",
    "TP all-reduces and EP all-to-alls block the compute stream; inside a server they run on a non-blocking "
    "scale-up mesh at the GPU's scale-up bandwidth, without contention between groups",
    "OLink (GPUs of one supernode): per-GPU bandwidth = port rate x 256/272 summed over planes; latency = one-way "
    "path delay + one chunk stored and forwarded per switch; in-network collectives when one switch per plane with "
    "in_network reaches every member; no credit stalls, replays or contention between groups",
    "across servers: NIC goodput = line rate x mtu/(mtu+82) summed over planes (shared by GPUs that share a "
    "NIC); latency = one-way path delay + one chunk's serialisation per hop; no congestion control, queueing, "
    "PFC or loss",
    "between sites: the max-flow capacity between the two sites' GPU servers is shared equally by the "
    "messages crossing it in the same phase (all TP, all EP, all PP, all DP, or one stage's staggered DP)",
    "fabric contention inside a site is not modelled; other flows and faults are ignored",
    "1F1B: (M-1) x T + the first micro-batch's way down and back; T = max(slowest stage's F+B with blocking "
    "communication, a send stream's time per message, the round trip from a stage to the last one over the "
    "P-s micro-batches in flight)",
    "DP starts after each stage's last backward (all stages at once, sharing the WAN); staggered: reduce-"
    "scatters stage after stage (last stage first), then at the next iteration's start all-gathers stage after "
    "stage (first stage first), in pieces paced with the chunks of the first forward",
    "checkpoint saves are reported per iteration but not added to the iteration time",
)


def one_f_one_b_ps(forward_ps: Sequence[float], backward_ps: Sequence[float], micro_batches: int) -> float:
    """The pipeline without communication: (M - 1) max_s(t_f + t_b) + sum_s(t_f + t_b)."""
    stage = [f + b for f, b in zip(forward_ps, backward_ps, strict=True)]
    return (micro_batches - 1) * max(stage) + sum(stage)


@dataclass
class StageTimes:
    """One stage of one replica, per micro-batch (the slowest of its TP ranks)."""

    forward_ps: float = 0.0
    backward_ps: float = 0.0
    tp_ps: float = 0.0  # one TP all-reduce (after F, and again after B)
    ep_ps: float = 0.0  # one EP all-to-all (after F, and again after B)
    send_forward_ps: float = 0.0  # to the next stage: until the data is there
    send_backward_ps: float = 0.0  # to the previous stage
    hold_forward_ps: float = 0.0  # the same sends, until they complete (acked) and free their stream
    hold_backward_ps: float = 0.0


def estimate(scenario: Scenario) -> dict[str, Any]:
    """The closed-form iteration time of the scenario's job, and what it is made of (times in ps).
    ValueError when there is no job, the plan was not generated from a job block, or ranks on different
    servers have no path between their NICs."""
    plan = scenario.job
    if plan is None:
        raise ValueError(f"{scenario.source}: the scenario has no job: block; add one to estimate it")
    if "layers_per_stage" not in plan.info:
        raise ValueError(f"{scenario.source}: the job plan was not made by orchestrator.workload (its info has no "
                         "layers per stage), so there is nothing to estimate it from")
    model, info = model_of(plan), plan.info
    tp, pp, dp, ep = (plan.parallel[k] for k in (TP, PP, DP, EP))
    layout = Layout(tp, pp, dp, ep, tuple(info["rank_order"]), moe=model.experts > 1)
    sizes = sizes_by_stage(model, info["layers_per_stage"], micro_batch=info["micro_batch"],
                           sequence=info["sequence"], dtype_bytes=info["dtype_bytes"], tp=tp, ep=ep)
    micro = info["micro_batches_per_replica"]
    network = RankNetwork(scenario, plan)
    coll = CollectiveTimes(network, plan.algorithm)
    overlap, stagger = info["overlap_pp"], info["stagger_dp"] and dp > 1

    stages = _stage_times(layout, sizes, network, coll)
    pipelines = [pipeline(stages[d], micro[d], overlap) for d in range(dp)]
    pipeline_ps = max(p["pipeline_ps"] for p in pipelines)
    finish = [max(p["finish_ps"][s] for p in pipelines) for s in range(pp)]

    # DP: each stage's gradient sync, after its last backward; experts' over the expert-DP groups
    by_stage = {(dim, s): [g for g in layout.groups[dim] if layout.coordinates(g[0])[2] == s]
                for dim in (DP, EDP) for s in range(pp)}
    buffers = {DP: [s.dp_bytes for s in sizes], EDP: [s.expert_dp_bytes for s in sizes]}
    everyone = [g for groups in by_stage.values() for g in groups]

    def dp_time(collective: str, stage: int, share: dict[tuple[str, str], float], scale: float = 1.0) -> float:
        """The stage's DP collectives, one after the other on its dp stream (the slowest group of each)."""
        return sum(max((coll.time(collective, buffers[dim][stage] * scale, g, share) for g in by_stage[(dim, stage)]),
                       default=0.0) for dim in (DP, EDP))

    exposed_gather = 0.0
    if not stagger:
        share = coll.phase(DP, everyone)
        dp_stage = [dp_time("all-reduce", s, share) for s in range(pp)]
        dp_end = max(finish[s] + dp_stage[s] for s in range(pp))
    else:
        def token(a: int, b: int) -> float:  # from stage a to stage b: "the network is yours"
            return max(coll.p2p(TOKEN_BYTES, layout.rank(t, d, a), layout.rank(t, d, b), {})
                       for t in range(tp) for d in range(dp))

        dp_stage, done = [0.0] * pp, 0.0
        for s in reversed(range(pp)):  # reduce-scatters: the last stage first, one stage at a time
            share = coll.phase(DP, by_stage[(DP, s)] + by_stage[(EDP, s)])
            rs = dp_time("reduce-scatter", s, share)
            done = max(finish[s], done + (token(s + 1, s) if s < pp - 1 else 0.0)) + rs
            dp_stage[s] = rs
        gathered = 0.0  # all-gathers at the next iteration's start: the first stage first, one at a time
        for s in range(pp):
            share = coll.phase(DP, by_stage[(DP, s)] + by_stage[(EDP, s)])
            pieces = max(1, min(pp - s, min(micro)))
            piece = dp_time("all-gather", s, share, 1 / pieces)
            dp_stage[s] += pieces * piece
            start = gathered + (token(s - 1, s) if s > 0 else 0.0)
            forward = max(st[s].forward_ps for st in stages)
            fill = max(sum(st[k].forward_ps + st[k].tp_ps + st[k].ep_ps + st[k].send_forward_ps for k in range(s))
                       for st in stages)  # when F(0) would start anyway
            chunk_end = fill
            for j in range(pieces):  # chunk j of F0 after piece j and chunk j - 1
                chunk_end = max(chunk_end, start + (j + 1) * piece) + forward / pieces
            exposed_gather = max(exposed_gather, chunk_end - (fill + forward))
            gathered = start + pieces * piece
        dp_end = done
    iteration = exposed_gather + max(pipeline_ps, dp_end)

    seconds = iteration / PS_PER_S
    gpus = len(plan.ranks)
    compute = max(micro[d] * (stages[d][s].forward_ps + stages[d][s].backward_ps) for d in range(dp) for s in range(pp))
    comm = {
        TP: max(micro[d] * 2 * stages[d][s].tp_ps for d in range(dp) for s in range(pp)),
        PP: max(micro[d] * (stages[d][s].send_forward_ps + stages[d][s].send_backward_ps)
                for d in range(dp) for s in range(pp)),
        DP: max(dp_stage),
        EP: max(micro[d] * 2 * stages[d][s].ep_ps for d in range(dp) for s in range(pp)),
    }
    save = plan.checkpoint_save_ps / plan.checkpoint_every if plan.checkpoint_every else 0
    return {
        "iteration_time_ps": round(iteration),
        "compute_ps": round(compute),
        "bubble_ps": round(max(p["bubble_ps"] for p in pipelines)),
        "pipeline_ps": round(pipeline_ps),
        "dp_tail_ps": round(max(0.0, dp_end - pipeline_ps)),
        "exposed_all_gather_ps": round(exposed_gather),
        "comm_ps": {dim: round(value) for dim, value in comm.items()},
        "tokens_per_gpu_per_s": plan.tokens_per_iteration / seconds / gpus,
        "mfu_effective": plan.flops_per_iteration / seconds / sum(g.peak_flops_per_s for g in network.gpu),
        "gpus": gpus,
        "stages": [
            {
                "layers": sizes[s].layers,
                "forward_ps": round(max(st[s].forward_ps for st in stages)),
                "backward_ps": round(max(st[s].backward_ps for st in stages)),
                "tp_ps": round(max(st[s].tp_ps for st in stages)),
                "ep_ps": round(max(st[s].ep_ps for st in stages)),
                "send_forward_ps": round(max(st[s].send_forward_ps for st in stages)),
                "send_backward_ps": round(max(st[s].send_backward_ps for st in stages)),
                "dp_ps": round(dp_stage[s]),
            }
            for s in range(pp)
        ],
        "replicas": [{"micro_batches": micro[d], "pipeline_ps": round(pipelines[d]["pipeline_ps"]),
                      "period_ps": round(pipelines[d]["period_ps"])} for d in range(dp)],
        "site_capacity_bps": {f"{a}->{b}": round(bps) for (a, b), bps in sorted(network.capacities.items())},
        "checkpoint_ps_per_iteration": round(save),
        "assumptions": list(ASSUMPTIONS),
    }


def _stage_times(layout: Layout, sizes: Sequence[StageSizes], network: RankNetwork,
                 coll: CollectiveTimes) -> list[list[StageTimes]]:
    """Per replica, per stage: compute and the per-micro-batch communication, each phase sharing the WAN."""
    tp, pp, dp = layout.tp, layout.pp, layout.dp
    tp_share = coll.phase(TP, layout.groups[TP])
    ep_share = coll.phase(EP, layout.groups[EP])
    pairs = [(layout.rank(t, d, s), layout.rank(t, d, s + 1)) for t in range(tp) for d in range(dp)
             for s in range(pp - 1)]
    pp_share = network.shared(network.hop(a, b) for pair in pairs for a, b in (pair, pair[::-1]))
    stages = [[StageTimes() for _ in range(pp)] for _ in range(dp)]
    for d in range(dp):
        for s in range(pp):
            stage, size = stages[d][s], sizes[s]
            for t in range(tp):
                rank = layout.rank(t, d, s)
                gpu = network.gpu[rank]
                stage.forward_ps = max(stage.forward_ps, compute_ps(size.forward_flops, gpu.peak_flops_per_s, gpu.mfu))
                stage.backward_ps = max(stage.backward_ps,
                                        compute_ps(size.backward_flops, gpu.peak_flops_per_s, gpu.mfu))
                if layout.group_of(TP, rank) >= 0:
                    group = layout.group_list[layout.group_of(TP, rank)]
                    stage.tp_ps = max(stage.tp_ps, coll.time("all-reduce", size.tp_bytes, group, tp_share))
                if layout.group_of(EP, rank) >= 0:
                    group = layout.group_list[layout.group_of(EP, rank)]
                    stage.ep_ps = max(stage.ep_ps, coll.time("all-to-all", size.ep_bytes, group, ep_share))
                if s < pp - 1:
                    nxt = layout.rank(t, d, s + 1)
                    stage.send_forward_ps = max(stage.send_forward_ps, coll.p2p(size.pp_bytes, rank, nxt, pp_share))
                    stage.hold_forward_ps = max(stage.hold_forward_ps,
                                                coll.p2p_held(size.pp_bytes, rank, nxt, pp_share))
                if s > 0:
                    prev = layout.rank(t, d, s - 1)
                    stage.send_backward_ps = max(stage.send_backward_ps,
                                                 coll.p2p(size.pp_bytes, rank, prev, pp_share))
                    stage.hold_backward_ps = max(stage.hold_backward_ps,
                                                 coll.p2p_held(size.pp_bytes, rank, prev, pp_share))
    return stages


def pipeline(stages: Sequence[StageTimes], micro_batches: int, overlap: bool) -> dict[str, Any]:
    """1F1B for one replica: its duration, steady-state period, fill/drain, and when each stage's last
    backward ends."""
    pp = len(stages)
    # per micro-batch, what holds each stage's compute stream, forward and backward
    fwd = [s.forward_ps + s.tp_ps + s.ep_ps + (0.0 if overlap else s.hold_forward_ps) for s in stages]
    bwd = [s.backward_ps + s.tp_ps + s.ep_ps + (0.0 if overlap else s.hold_backward_ps) for s in stages]
    # what a micro-batch waits for between stages on top of that (overlapped sends)
    down = [stages[s].send_forward_ps if overlap else 0.0 for s in range(pp - 1)]
    up = [stages[s + 1].send_backward_ps if overlap else 0.0 for s in range(pp - 1)]
    busy = [f + b for f, b in zip(fwd, bwd, strict=True)]
    period = max(busy)
    for s in range(pp):
        if overlap:  # a send stream passes one message at a time
            period = max(period, stages[s].hold_forward_ps if s < pp - 1 else 0.0,
                         stages[s].hold_backward_ps if s > 0 else 0.0)
        loop = sum(busy[s:]) + sum(down[s:]) + sum(up[s:])  # stage s -> last stage -> stage s
        period = max(period, loop / (pp - s))
    fill = sum(busy) + sum(down) + sum(up)
    pipeline = (micro_batches - 1) * period + fill
    finish = [pipeline - sum(bwd[k] + up[k] for k in range(s)) for s in range(pp)]
    return {"pipeline_ps": pipeline, "period_ps": period, "bubble_ps": pipeline - micro_batches * period,
            "finish_ps": finish}
