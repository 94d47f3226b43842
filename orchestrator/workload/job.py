"""A scenario's ``job:`` block -> a :class:`~emulators.model.job.JobPlan`.

The loader has checked the block against the schema and converted its times to picoseconds; here the
block is checked against the model and the GPU servers (every problem a :class:`JobError` naming the
key under ``job`` and what to change), the ranks are placed (:mod:`.placement`), layers and micro-batches
split over stages and replicas, and each rank's program written (:mod:`.schedule`).
:func:`analytic_bytes` gives the traffic the programs must add up to, from the closed forms alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from emulators.ccl.nccl import MAX_GROUPS
from emulators.ccl.settings import NcclSettings
from emulators.model.job import (
    DEFAULT_WATCHDOG_PS,
    DP,
    EP,
    MAX_COLLECTIVES,
    MAX_RANKS,
    MAX_SERIALS,
    MAX_STEPS,
    MAX_TAGS,
    NCCL,
    PP,
    RING,
    TP,
    JobPlan,
    RankPlace,
)
from emulators.model.scenario import DeviceSpec
from emulators.model.units import SIZE, TIME, format_bytes
from orchestrator.errors import KeyPath, listing
from orchestrator.workload.hardware import GPU_SERVER_KIND, PS_PER_S, effective_flops_per_s, gpus_of
from orchestrator.workload.models import MODELS, ModelSpec
from orchestrator.workload.placement import (
    EDP,
    PP_ACROSS_SITES,
    RANK_MAP,
    RANK_ORDERS,
    Layout,
    gpu_slots,
    ordered_servers,
    parse_slot,
    scale_up_problem,
)
from orchestrator.workload.schedule import (
    TOKEN_BYTES,
    CollectiveIds,
    Schedule,
    StageSizes,
    programs,
    sizes_by_stage,
    stage_parameters,
)

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
UNIFORM, BY_COMPUTE = "uniform", "compute"
MODEL_OVERRIDES = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "experts", "experts_per_token")


DEFAULT_RESTART_PS = 30 * 10**12  # reload the checkpoint, set communicators up again
DEFAULT_DETECT_PS = 10**12  # a collective library's watchdog notices the failed rank


class JobError(ValueError):
    """A problem with the job block: the key path under ``job`` and what to change."""

    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def build_job(job: Mapping[str, Any], devices: Sequence[DeviceSpec], sites: Sequence[str],
              supernode_of: Mapping[tuple[str, int], int] | None = None) -> JobPlan:
    """The plan of a schema-valid job block (times in ps) on the scenario's devices; ``supernode_of``
    says which GPUs OLink joins into which supernode (:func:`~.placement.scale_up_domains`)."""
    model = resolve_model(job["model"], job.get("model_overrides", {}))
    parallel = job["parallel"]
    tp, pp, dp, ep = parallel["tp"], parallel["pp"], parallel["dp"], parallel.get("ep", 1)
    _check_parallel(model, tp, pp, dp, ep)
    placement = job.get("placement", PP_ACROSS_SITES)
    order = RANK_ORDERS[RANK_MAP if isinstance(placement, dict) else placement]
    layout = Layout(tp, pp, dp, ep, order, moe=model.experts > 1)
    if layout.size > MAX_RANKS:
        raise JobError(("parallel",), f"tp x pp x dp = {layout.size} ranks; a job may have at most {MAX_RANKS}")
    by_name = {device.name: device for device in devices}
    servers = _servers(job, devices, sites, by_name)
    if isinstance(placement, dict):
        ranks = _mapped_ranks(placement["rank_map"], layout, servers, by_name)
        used = dict.fromkeys(place.device for place in ranks)  # in the order the map first names them
        servers = [by_name[name] for name in used]
    else:
        ranks = _placed_ranks(layout, servers, supernode_of or {})
    split = {PP: UNIFORM, DP: UNIFORM} | dict(job.get("split", {}))
    layers = _layers_per_stage(model, layout, ranks, by_name, split[PP])
    micro_batches = _micro_batches(job, layout, ranks, by_name, layers, split[DP])
    _check_limits(job, layout, micro_batches)

    micro_batch, sequence = job.get("micro_batch", 1), job["sequence"]
    dtype = job.get("dtype", "bf16")
    stages = sizes_by_stage(model, layers, micro_batch=micro_batch, sequence=sequence, dtype_bytes=DTYPE_BYTES[dtype],
                            tp=tp, ep=ep)
    _check_stage_sizes(model, stages, layout, ranks, by_name)
    schedule = Schedule(stages, micro_batches, job.get("overlap_pp", True), job.get("stagger_dp", False))
    expected = collectives_per_iteration(layout, schedule)
    if expected > MAX_COLLECTIVES:
        raise JobError(("micro_batch",), (
            f"the job needs {expected} collectives per iteration, more than the {MAX_COLLECTIVES} a message id can "
            "number; use fewer micro-batches (a larger micro_batch or a smaller global_batch)"))
    if len(layout.group_list) > MAX_GROUPS:
        raise JobError(("parallel",), (
            f"the job has {len(layout.group_list)} collective groups; each is an NCCL communicator and at most "
            f"{MAX_GROUPS} can be told apart: use fewer ranks"))
    ids = CollectiveIds()
    rank_programs = programs(layout, schedule, ids)
    assert len(ids) == expected, (len(ids), expected)

    parameters = [stage_parameters(model, n, p == 0, p == pp - 1) for p, n in enumerate(layers)]
    checkpoint = job.get("checkpoint", {})
    tokens = job["global_batch"] * sequence
    info: dict[str, Any] = {
        "model_overrides": dict(job.get("model_overrides", {})),
        "global_batch": job["global_batch"],
        "micro_batch": micro_batch,
        "sequence": sequence,
        "dtype": dtype,
        "dtype_bytes": DTYPE_BYTES[dtype],
        "placement": RANK_MAP if isinstance(placement, dict) else placement,
        "rank_order": list(order),
        "servers": [server.name for server in servers],
        "overlap_pp": schedule.overlap_pp,
        "stagger_dp": schedule.stagger_dp,
        "split": split,
        "layers_per_stage": list(layers),
        "micro_batches_per_replica": list(micro_batches),
        "parameters_per_stage": [sum(dataclasses.astuple(params)) for params in parameters],
        "expert_parameters_per_stage": [params.expert for params in parameters],
        "groups": {dim: list(span) for dim, span in layout.group_ranges.items()},
        "collectives_per_iteration": expected,
        "flops_per_micro_batch_by_stage": [s.forward_flops + s.backward_flops for s in stages],
    }
    plan = JobPlan(
        model=model.name,
        parallel={TP: tp, PP: pp, DP: dp, EP: ep},
        ranks=ranks,
        groups=layout.group_list,
        programs=rank_programs,
        iterations=job.get("iterations", 1),
        tokens_per_iteration=tokens,
        flops_per_iteration=model.training_flops_per_token(sequence) * tokens,
        start_ps=job.get("start", 0),
        algorithm=job.get("algorithm", RING),
        checkpoint_every=checkpoint.get("every", 0),
        checkpoint_save_ps=checkpoint.get("save", 0),
        restart=checkpoint.get("restart", True),
        restart_ps=checkpoint.get("restart_time", DEFAULT_RESTART_PS),
        detect_ps=checkpoint.get("detect", DEFAULT_DETECT_PS),
        **transport_fields(job),
        info=info,
    )
    sent = analytic_bytes(plan)
    info["bytes_sent_per_iteration"] = sent
    info["bytes_sent_per_rank"] = {dim: round(total / layout.size) for dim, total in sent.items()}
    return plan


def transport_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's transport, NCCL settings and watchdog from a job (or collective test) block."""
    nccl = dict(spec.get("nccl", {}))
    settings = NcclSettings.from_options(nccl)
    if settings.buffsize < settings.steps:
        raise JobError(("nccl", "buffsize"), (
            f"{settings.buffsize} bytes do not make {settings.steps} slots (steps); give at least one byte a slot"))
    return {"transport": spec.get("transport", NCCL), "nccl": nccl,
            "watchdog_ps": spec.get("watchdog_timeout", DEFAULT_WATCHDOG_PS)}


# --- the model and its parallel shape ------------------------------------------------------------


def resolve_model(name: str, overrides: Mapping[str, int]) -> ModelSpec:
    """A model of the zoo with any shape overrides (e.g. fewer layers for a quick run)."""
    model = MODELS.get(name)
    if model is None:
        raise JobError(("model",), f"unknown model {name!r}; known models: {listing(MODELS)}")
    if not overrides:
        return model
    shape: dict[str, Any] = {key: overrides[key] for key in MODEL_OVERRIDES if key in overrides}
    model = dataclasses.replace(model, **shape)
    if model.hidden % model.heads:
        raise JobError(("model_overrides",), (
            f"hidden {model.hidden} is not a whole number of heads ({model.heads}); make hidden a multiple of heads"))
    if model.kv_heads and model.heads % model.kv_heads:
        raise JobError(("model_overrides", "kv_heads"), (
            f"{model.heads} heads do not group into {model.kv_heads} kv_heads; make heads a multiple of kv_heads"))
    if model.experts_per_token > model.experts:
        raise JobError(("model_overrides", "experts_per_token"), (
            f"{model.experts_per_token} is more than the model's {model.experts} experts; lower it"))
    return model


def model_of(plan: JobPlan) -> ModelSpec:
    """The model a plan trains, with the overrides its job gave."""
    return resolve_model(plan.model, plan.info.get("model_overrides", {}))


def _check_parallel(model: ModelSpec, tp: int, pp: int, dp: int, ep: int) -> None:
    if dp % ep:
        raise JobError(("parallel", "ep"), f"{ep} does not divide dp = {dp}; EP groups are ep consecutive DP replicas")
    if ep > 1 and model.experts == 1:
        raise JobError(("parallel", "ep"), (
            f"{model.name} has no experts, so ep must be 1; expert parallelism needs a mixture-of-experts model"))
    if model.experts % ep:
        raise JobError(("parallel", "ep"), (
            f"{model.name}'s {model.experts} experts do not split over {ep} EP ranks; make ep divide {model.experts}"))
    kv_heads = model.kv_heads or model.heads
    if model.heads % tp or kv_heads % tp:
        raise JobError(("parallel", "tp"), (
            f"{model.name}'s {model.heads} attention heads ({kv_heads} key/value heads) do not split over {tp} TP "
            f"ranks; make tp divide both"))
    if model.layers < pp:
        raise JobError(("parallel", "pp"), (
            f"{model.name} has {model.layers} layers, fewer than {pp} pipeline stages; every stage needs a layer: "
            f"lower pp"))


# --- servers and ranks ---------------------------------------------------------------------------


def _servers(
    job: Mapping[str, Any], devices: Sequence[DeviceSpec], sites: Sequence[str], by_name: Mapping[str, DeviceSpec]
) -> list[DeviceSpec]:
    if "servers" not in job:
        servers = ordered_servers(devices, sites)
        if not servers:
            raise JobError((), f"the scenario has no {GPU_SERVER_KIND} devices; a job runs on their GPUs: add some")
        return servers
    servers = []
    for index, name in enumerate(job["servers"]):
        device = by_name.get(name)
        if device is None or device.kind != GPU_SERVER_KIND:
            known = listing(d.name for d in ordered_servers(devices, sites))
            what = f"no device named {name!r}" if device is None else f"device {name!r} is a {device.kind}"
            raise JobError(("servers", index), f"{what}, not a {GPU_SERVER_KIND}; GPU servers: {known}")
        servers.append(device)
    return servers


def _placed_ranks(layout: Layout, servers: Sequence[DeviceSpec],
                  supernode_of: Mapping[tuple[str, int], int]) -> tuple[RankPlace, ...]:
    """Rank r on the r-th GPU of the servers; TP groups must each stay inside one server or supernode,
    and EP groups inside a supernode that could hold them."""
    slots = gpu_slots(servers)
    if len(slots) != layout.size:
        counts = ", ".join(f"{s.name}: {gpus_of(s)}" for s in servers[:6]) + (", ..." if len(servers) > 6 else "")
        raise JobError(("parallel",), (
            f"tp x pp x dp = {layout.tp} x {layout.pp} x {layout.dp} = {layout.size} GPUs, but the {len(servers)} "
            f"servers have {len(slots)} ({counts}); the job uses every GPU of its servers: change parallel, or list "
            "the servers to use under job.servers"))
    problem = scale_up_problem(layout, slots, supernode_of)
    if problem is not None:
        raise JobError(("parallel", problem[0]), problem[1])
    return tuple(slots)


def _mapped_ranks(
    rank_map: Sequence[str], layout: Layout, servers: Sequence[DeviceSpec], by_name: Mapping[str, DeviceSpec]
) -> tuple[RankPlace, ...]:
    path: KeyPath = ("placement", "rank_map")
    if len(rank_map) != layout.size:
        raise JobError(path, (
            f"has {len(rank_map)} entries for tp x pp x dp = {layout.size} ranks; give one server:gpu per rank"))
    allowed = {server.name for server in servers}
    seen: dict[RankPlace, int] = {}
    ranks = []
    for rank, text in enumerate(rank_map):
        name, gpu = parse_slot(text)
        device = by_name.get(name)
        if device is None or device.kind != GPU_SERVER_KIND:
            kind = "no device" if device is None else f"a {device.kind}"
            raise JobError((*path, rank), f"{name!r} is {kind}, not a {GPU_SERVER_KIND}; give server:gpu of one")
        if name not in allowed:
            raise JobError((*path, rank), f"server {name!r} is not in job.servers; add it there or map elsewhere")
        if gpu >= gpus_of(device):
            raise JobError((*path, rank), (
                f"server {name!r} has {gpus_of(device)} GPUs (0..{gpus_of(device) - 1}); GPU {gpu} does not exist"))
        place = RankPlace(name, gpu)
        if place in seen:
            raise JobError((*path, rank), f"{text} is already rank {seen[place]}'s; each GPU runs one rank")
        seen[place] = rank
        ranks.append(place)
    return tuple(ranks)


# --- splits --------------------------------------------------------------------------------------


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` in integers proportional to ``weights``, each at least 1, by largest remainder (ties to
    the lower index). Needs total >= len(weights)."""
    quotas = [Fraction(total) * Fraction(w) / Fraction(sum(weights)) for w in weights]
    shares = [max(1, math.floor(q)) for q in quotas]
    while sum(shares) < total:
        i = max(range(len(shares)), key=lambda k: (quotas[k] - shares[k], -k))
        shares[i] += 1
    while sum(shares) > total:  # the minimum of one lifted someone above their quota
        i = max((k for k in range(len(shares)) if shares[k] > 1), key=lambda k: (shares[k] - quotas[k], -k))
        shares[i] -= 1
    return shares


def _compute_of(ranks: Sequence[RankPlace], by_name: Mapping[str, DeviceSpec], path: KeyPath) -> list[float]:
    """Peak x MFU of each rank's GPU."""
    speed: dict[str, float] = {}
    for place in ranks:
        if place.device not in speed:
            try:
                speed[place.device] = effective_flops_per_s(by_name[place.device])
            except ValueError as e:
                raise JobError(path, str(e)) from None
    return [speed[place.device] for place in ranks]


def _layers_per_stage(
    model: ModelSpec, layout: Layout, ranks: Sequence[RankPlace], by_name: Mapping[str, DeviceSpec], split: str
) -> tuple[int, ...]:
    """uniform: layers // pp each, the remainder one more on each of the last stages (the first holds the
    embedding); compute: in proportion to each stage's slowest GPU (peak x MFU)."""
    if split == UNIFORM:
        base, extra = divmod(model.layers, layout.pp)
        return tuple(base + (1 if p >= layout.pp - extra else 0) for p in range(layout.pp))
    speed = _compute_of(ranks, by_name, ("split", "pp"))
    slowest = [min(speed[r] for r in range(layout.size) if layout.coordinates(r)[2] == p) for p in range(layout.pp)]
    return tuple(apportion(model.layers, slowest))


def _micro_batches(
    job: Mapping[str, Any], layout: Layout, ranks: Sequence[RankPlace], by_name: Mapping[str, DeviceSpec],
    layers: Sequence[int], split: str,
) -> tuple[int, ...]:
    """Micro-batches per DP replica. uniform: the same for each; compute: in proportion to each replica's
    pace, which is its slowest stage's: min over stages of (slowest GPU / layers of the stage)."""
    global_batch, micro_batch, dp = job["global_batch"], job.get("micro_batch", 1), layout.dp
    if global_batch % micro_batch:
        raise JobError(("global_batch",), (
            f"{global_batch} sequences are not a whole number of micro-batches of {micro_batch}; make global_batch "
            f"a multiple of micro_batch"))
    total = global_batch // micro_batch
    if split == UNIFORM:
        if total % dp:
            raise JobError(("global_batch",), (
                f"{global_batch} sequences do not split evenly into {dp} replicas of micro-batches of "
                f"{micro_batch}; make global_batch a multiple of micro_batch x dp = {micro_batch * dp}, or use "
                "split: {dp: compute}"))
        return (total // dp,) * dp
    if layout.ep > 1:
        raise JobError(("split", "dp"), (
            "compute needs ep = 1: an EP group's replicas exchange tokens every micro-batch, so they must run the "
            "same number of micro-batches; use dp: uniform"))
    if total < dp:
        raise JobError(("global_batch",), (
            f"{total} micro-batches for {dp} replicas; every replica needs one: raise global_batch to at least "
            f"micro_batch x dp = {micro_batch * dp}"))
    speed = _compute_of(ranks, by_name, ("split", "dp"))
    pace = [Fraction(0)] * dp
    for d in range(dp):
        pace[d] = min(
            Fraction(min(speed[layout.rank(t, d, p)] for t in range(layout.tp))) / layers[p] for p in range(layout.pp)
        )
    return tuple(apportion(total, [float(x) for x in pace]))


# --- limits --------------------------------------------------------------------------------------


def _check_limits(job: Mapping[str, Any], layout: Layout, micro_batches: Sequence[int]) -> None:
    """The message-id fields (program.py) that a job could overflow, each with what to change."""
    for dim, key in ((TP, TP), (DP, DP), (EP, EP), (EDP, DP)):
        for group in layout.groups[dim][:1]:  # groups of a dimension are all the same size
            steps = 2 * (len(group) - 1)
            if steps > MAX_STEPS:
                raise JobError(("parallel", key), (
                    f"{dim} groups of {len(group)} ranks need {steps} ring steps, more than the {MAX_STEPS} a message "
                    f"id can number; use at most {MAX_STEPS // 2 + 1} ranks per group"))
    tags = 2 * max(micro_batches) + 1  # activations 2m, gradients 2m + 1, then the stagger token
    if tags > MAX_TAGS:
        raise JobError(("micro_batch",), (
            f"{max(micro_batches)} micro-batches per replica need {tags} message tags, more than {MAX_TAGS}; "
            "raise micro_batch"))
    iterations = job.get("iterations", 1)
    if iterations >= MAX_SERIALS:
        raise JobError(("iterations",), (
            f"{iterations} iterations: a message id numbers at most {MAX_SERIALS - 1} (restarts included); "
            "run fewer"))


def _check_stage_sizes(model: ModelSpec, stages: Sequence[StageSizes], layout: Layout, ranks: Sequence[RankPlace],
                       by_name: Mapping[str, DeviceSpec]) -> None:
    """Each stage's messages and compute ops within what a scenario may give (a size of 1 TiB, a time of a
    day): past them, model overrides or a long sequence only make a run that never finishes an op."""
    fix = "use a smaller model, micro_batch or sequence, or more TP or PP ranks"
    speed = _compute_of(ranks, by_name, ())
    for p, stage in enumerate(stages):
        for what, nbytes in (("TP all-reduce", stage.tp_bytes), ("PP send", stage.pp_bytes),
                             ("EP all-to-all", stage.ep_bytes), ("DP gradient all-reduce", stage.dp_bytes),
                             ("expert gradient all-reduce", stage.expert_dp_bytes)):
            if nbytes > SIZE.most:
                raise JobError((), (
                    f"stage {p}'s {what} carries {format_bytes(nbytes)}, more than {SIZE.most_text}, the most a size "
                    f"in a scenario may be; {fix}"))
        slowest = min(speed[r] for r in range(layout.size) if layout.coordinates(r)[2] == p)  # FLOP/s
        if stage.backward_flops * PS_PER_S > TIME.most * slowest:
            raise JobError((), (
                f"stage {p}'s backward of one micro-batch ({stage.layers} layers of {model.name}) takes its slowest "
                f"GPU ({slowest / 1e12:.4g} TFLOP/s at its MFU) more than {TIME.most_text}, the longest time a "
                f"scenario may give; {fix}"))


def collectives_per_iteration(layout: Layout, schedule: Schedule) -> int:
    """How many collective instances one iteration has, job-wide (each needs its own id)."""
    micro = schedule.micro_batches
    count = 0
    if layout.tp > 1:
        count += layout.pp * sum(2 * m for m in micro)  # one TP group per (replica, stage), after each F and B
    if layout.ep > 1:
        count += layout.pp * layout.tp * sum(2 * m for m in micro) // layout.ep
    for stage in range(layout.pp):
        groups = sum(len(layout.groups[dim]) for dim in (DP, EDP)) // layout.pp
        per_group = schedule.all_gather_pieces(stage) + 1 if schedule.stagger_dp else 1
        count += groups * per_group
    return count


# --- traffic by the closed forms -----------------------------------------------------------------


def analytic_bytes(plan: JobPlan) -> dict[str, int]:
    """Bytes the whole job's ranks send in one iteration, per dimension, from the model's shapes and the
    closed forms, without reading the programs: a ring all-reduce of S over N ranks sends 2(N-1)/N x S
    per rank, reduce-scatter and all-gather (N-1)/N x S, an all-to-all (N-1)/N x S, a p2p message its
    size. Summed over a group's N ranks, each is a whole number of bytes."""
    model, info = model_of(plan), plan.info
    tp, pp, dp, ep = (plan.parallel[k] for k in (TP, PP, DP, EP))
    layers, micro = info["layers_per_stage"], info["micro_batches_per_replica"]
    dtype = info["dtype_bytes"]
    activation = info["micro_batch"] * info["sequence"] * model.hidden * dtype
    moe = model.experts > 1
    sent = {TP: 0, PP: 0, DP: 0, EP: 0}
    for p, n in enumerate(layers):
        for m in micro:  # each replica's TP group of this stage
            if tp > 1:  # 2 all-reduces per layer forward and 2 backward, b*s*h each
                sent[TP] += m * 4 * n * 2 * (tp - 1) * activation
        if ep > 1:  # per EP group (tp x dp/ep per stage, replicas alike): after each F and B, dispatch + combine
            share = 2 * n * activation * model.experts_per_token // tp  # per layer, of each TP rank's tokens
            sent[EP] += tp * (dp // ep) * 2 * micro[0] * (ep - 1) * share
        # the gradients: what the stage holds, sharded over TP (experts also over EP)
        expert = n * model.experts * model.expert_parameters() if moe else 0
        dense = n * model.layer_parameters() - expert
        if p == 0:
            dense += model.vocab * model.hidden + model.learned_positions * model.hidden
        if p == pp - 1:
            dense += (0 if model.tied_embeddings else model.vocab * model.hidden)
            dense += model.hidden * (2 if model.biases else 1)
        dense_bytes = -(-dense // tp) * dtype
        expert_bytes = -(-expert // (tp * ep)) * dtype
        if ep == 1:
            dense_bytes, expert_bytes = dense_bytes + expert_bytes, 0
        # an all-reduce, or a reduce-scatter + all-gather: 2(N-1) S per group either way
        sent[DP] += tp * 2 * (dp - 1) * dense_bytes
        if ep > 1 and moe:
            sent[DP] += tp * ep * 2 * (dp // ep - 1) * expert_bytes
    sent[PP] += sum(micro) * tp * (pp - 1) * 2 * (activation // tp)  # activation forward, gradient back
    if info["stagger_dp"] and dp > 1:  # a token each way per stage boundary: reduce-scatter, all-gather
        sent[DP] += 2 * (pp - 1) * tp * dp * TOKEN_BYTES
    return sent
