"""Per-rank programs for one training iteration: 1F1B pipeline, Megatron TP/PP/DP/EP traffic.

Compute: the model's training FLOPs per token, spread evenly over its layers (embeddings and output
head included in that average), times the micro-batch's tokens and the stage's layers, divided by tp.
A micro-batch's forward is one compute op (1/3 of its FLOPs) and its backward another (the rest, so the
two sum exactly to the rounded total). No optimizer-step FLOPs: the step is elementwise and small.

Traffic per micro-batch and stage (Megatron without sequence parallelism):

- TP: two all-reduces of b*s*h bytes per layer in the forward and two in the backward, as ONE all-reduce
  after each F and each B, on the compute stream (it blocks compute), skipped when tp = 1;
- EP: dispatch and combine all-to-alls per layer, as ONE all-to-all after each F and B (after TP);
- PP: each rank sends its 1/tp shard of the activation (scatter/gather) to its peer on the next stage
  after F, and the gradient to the previous stage after B; sends on their own streams (overlap_pp) or
  on the compute stream; receives on ``recv-fwd`` / ``recv-bwd`` in micro-batch order;
- DP: after the last B, an all-reduce of the stage's gradients over the DP group (experts' over the
  expert-DP group); with stagger_dp a reduce-scatter that waits for a token from the next stage and
  passes one on when done (last stage first), and the all-gather at the start of the next iteration,
  stage after stage (a token from the previous stage), in pieces paced with the chunks of the first
  micro-batch's forward (chunk j computes once piece j, its layers' parameters, is here). Only one
  stage's DP group is on the network at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emulators.model.job import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    COLLECTIVE,
    COMPUTE,
    DP,
    EP,
    PP,
    RECV,
    REDUCE_SCATTER,
    SEND,
    TP,
    Op,
)
from orchestrator.workload.models import ModelSpec
from orchestrator.workload.placement import EDP, Layout

COMPUTE_STREAM, DP_STREAM = "compute", "dp"
TOKEN_BYTES = 64  # the stagger token: "my reduce-scatter is done, your turn"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_div(a: int, b: int) -> int:
    """a / b rounded to the nearest integer (halves up), in integers."""
    return (2 * a + b) // (2 * b)


@dataclass(frozen=True)
class StageParameters:
    dense: int  # everything but the experts: attention, norms, router, embeddings / head on the ends
    expert: int  # MoE experts (0 for dense models)


def stage_parameters(model: ModelSpec, layers: int, first: bool, last: bool) -> StageParameters:
    """The parameters a stage holds: its layers, plus the input embedding (and learned positions) on the
    first stage and the output head (none if tied to the embedding) and final norm on the last. Summed
    over the stages this is ``model.parameters()``."""
    moe = model.experts > 1
    expert_per_layer = model.experts * model.expert_parameters() if moe else 0
    dense = layers * (model.layer_parameters() - expert_per_layer)
    table = model.vocab * model.hidden
    if first:
        dense += table + model.learned_positions * model.hidden
    if last:
        dense += (0 if model.tied_embeddings else table) + model.hidden * (2 if model.biases else 1)
    return StageParameters(dense, layers * expert_per_layer)


@dataclass(frozen=True)
class StageSizes:
    """What one rank of a stage computes and sends per micro-batch, and its gradients."""

    layers: int
    forward_flops: int
    backward_flops: int
    tp_bytes: int  # the all-reduce after each F and each B
    pp_bytes: int  # the activation (gradient) shard sent to the next (previous) stage
    ep_bytes: int  # the all-to-all after each F and each B
    dp_bytes: int  # the gradient buffer over the DP group (with ep = 1 it includes the experts)
    expert_dp_bytes: int  # the experts' gradient buffer over the expert-DP group (ep > 1)


def stage_sizes(
    model: ModelSpec, layers: int, first: bool, last: bool, *, micro_batch: int, sequence: int, dtype_bytes: int,
    tp: int, ep: int,
) -> StageSizes:
    tokens = micro_batch * sequence
    flops = _round_div(model.training_flops_per_token(sequence) * layers * tokens, model.layers * tp)
    forward = flops // 3
    activation = tokens * model.hidden * dtype_bytes
    params = stage_parameters(model, layers, first, last)
    dense_bytes = _ceil_div(params.dense, tp) * dtype_bytes
    expert_bytes = _ceil_div(params.expert, tp * ep) * dtype_bytes
    moe = model.experts > 1
    return StageSizes(
        layers=layers,
        forward_flops=forward,
        backward_flops=flops - forward,
        tp_bytes=2 * layers * activation,
        pp_bytes=activation // tp,  # the job checks that tp divides the hidden size
        ep_bytes=2 * layers * activation * model.experts_per_token // tp if moe else 0,
        dp_bytes=dense_bytes + (expert_bytes if ep == 1 else 0),
        expert_dp_bytes=expert_bytes if ep > 1 else 0,
    )


def one_f_one_b(stage: int, stages: int, micro_batches: int) -> list[tuple[str, int]]:
    """The compute order of a stage: min(P - s - 1, M) warm-up forwards, then F/B alternating, then the
    remaining backwards. [("F", 0), ("F", 1), ("B", 0), ...]."""
    warmup = min(stages - stage - 1, micro_batches)
    order = [("F", m) for m in range(warmup)]
    for m in range(micro_batches - warmup):
        order += [("F", warmup + m), ("B", m)]
    order += [("B", m) for m in range(micro_batches - warmup, micro_batches)]
    return order


def split_evenly(total: int, pieces: int) -> list[int]:
    """``total`` in ``pieces`` integers that differ by at most one, the larger first."""
    base, extra = divmod(total, pieces)
    return [base + (1 if j < extra else 0) for j in range(pieces)]


class CollectiveIds:
    """Collective ids, unique in the iteration and equal on every member: one per (group, label),
    numbered in the order first asked for."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, str], int] = {}

    def __call__(self, group: int, label: str) -> int:
        return self._ids.setdefault((group, label), len(self._ids))

    def __len__(self) -> int:
        return len(self._ids)


@dataclass(frozen=True)
class Schedule:
    """How the job runs, beyond its shape: what the program generator needs besides the layout."""

    stages: tuple[StageSizes, ...]
    micro_batches: tuple[int, ...]  # per DP replica
    overlap_pp: bool
    stagger_dp: bool

    def all_gather_pieces(self, stage: int) -> int:
        """Pieces of a stage's staggered all-gather, and chunks of its first forward: as many as the
        stage has micro-batches in flight, the same on every replica (the fewest micro-batches bound it)."""
        return max(1, min(len(self.stages) - stage, min(self.micro_batches)))


class _Program:
    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(self, op: Op) -> int:
        self.ops.append(op)
        return len(self.ops) - 1


def programs(layout: Layout, schedule: Schedule, ids: CollectiveIds) -> tuple[tuple[Op, ...], ...]:
    """One iteration's program for every rank, in rank order."""
    return tuple(_rank_program(layout, schedule, ids, rank) for rank in range(layout.size))


def _rank_program(layout: Layout, schedule: Schedule, ids: CollectiveIds, rank: int) -> tuple[Op, ...]:
    t, d, p = layout.coordinates(rank)
    stages = len(schedule.stages)
    size = schedule.stages[p]
    micro_batches = schedule.micro_batches[d]
    tp_group, ep_group = layout.group_of(TP, rank), layout.group_of(EP, rank)
    dp_groups = [(g, label) for g, label in ((layout.group_of(DP, rank), "dp"), (layout.group_of(EDP, rank), "edp"))
                 if g >= 0]
    dp_bytes = {"dp": size.dp_bytes, "edp": size.expert_dp_bytes}
    prog = _Program()
    send_fwd, send_bwd = ("send-fwd", "send-bwd") if schedule.overlap_pp else (COMPUTE_STREAM, COMPUTE_STREAM)
    stagger = schedule.stagger_dp and bool(dp_groups)

    # staggered DP: this iteration's all-gather of the parameters reduce-scattered in the last one,
    # stage after stage (a token from the previous stage hands the network on), in pieces paced with
    # the first micro-batch's forward: chunk j of F0 computes once piece j (its layers) is here
    token_tag = 2 * micro_batches  # after every activation (2m) and gradient (2m + 1) tag
    gathered: list[list[int]] = []
    if stagger:
        pieces = schedule.all_gather_pieces(p)
        shares = {label: split_evenly(dp_bytes[label], pieces) for _, label in dp_groups}
        start: tuple[int, ...] = ()
        if p > 0:
            start = (prog.add(Op(RECV, DP_STREAM, nbytes=TOKEN_BYTES, peer=layout.rank(t, d, p - 1),
                                 tag=token_tag + 1, dim=DP, label="ag-token")),)
        for j in range(pieces):
            gathered.append([
                prog.add(Op(COLLECTIVE, DP_STREAM, start, collective=ALL_GATHER, group=g,
                            cid=ids(g, f"{label}-ag{j}"), nbytes=shares[label][j], dim=DP, label=f"{label}-ag{j}"))
                for g, label in dp_groups
            ])
        if p < stages - 1:
            prog.add(Op(SEND, DP_STREAM, (gathered[-1][-1],), nbytes=TOKEN_BYTES, peer=layout.rank(t, d, p + 1),
                        tag=token_tag + 1, dim=DP, label="ag-token"))

    def blocking_collectives(last: int, phase: str) -> int:
        """TP all-reduce, then EP all-to-all, after a forward or backward: they hold the compute stream."""
        if tp_group >= 0:
            last = prog.add(Op(COLLECTIVE, COMPUTE_STREAM, (last,), collective=ALL_REDUCE, group=tp_group,
                               cid=ids(tp_group, f"tp-{phase}"), nbytes=size.tp_bytes, dim=TP, label=f"tp-{phase}"))
        if ep_group >= 0:
            last = prog.add(Op(COLLECTIVE, COMPUTE_STREAM, (last,), collective=ALL_TO_ALL, group=ep_group,
                               cid=ids(ep_group, f"ep-{phase}"), nbytes=size.ep_bytes, dim=EP, label=f"ep-{phase}"))
        return last

    forward_done: dict[int, int] = {}
    last = -1
    for kind, m in one_f_one_b(p, stages, micro_batches):
        deps: list[int] = []
        if kind == "F":
            if p > 0:
                deps.append(prog.add(Op(RECV, "recv-fwd", nbytes=size.pp_bytes, peer=layout.rank(t, d, p - 1),
                                        tag=2 * m, dim=PP, label=f"recv-F{m}")))
            if m == 0 and gathered:  # F0 in chunks, each after its layers' parameters are gathered
                chunks = split_evenly(size.forward_flops, len(gathered))
                for j, (pieces_j, flops) in enumerate(zip(gathered, chunks, strict=True)):
                    compute = prog.add(Op(COMPUTE, COMPUTE_STREAM, tuple(deps + pieces_j), flops=flops,
                                          label=f"F0.{j}"))
                    deps = [compute]
            else:
                compute = prog.add(Op(COMPUTE, COMPUTE_STREAM, tuple(deps), flops=size.forward_flops, label=f"F{m}"))
            last = forward_done[m] = blocking_collectives(compute, f"F{m}")
            if p < stages - 1:
                prog.add(Op(SEND, send_fwd, (last,), nbytes=size.pp_bytes, peer=layout.rank(t, d, p + 1), tag=2 * m,
                            dim=PP, label=f"send-F{m}"))
        else:
            deps.append(forward_done[m])
            if p < stages - 1:
                deps.append(prog.add(Op(RECV, "recv-bwd", nbytes=size.pp_bytes, peer=layout.rank(t, d, p + 1),
                                        tag=2 * m + 1, dim=PP, label=f"recv-B{m}")))
            compute = prog.add(Op(COMPUTE, COMPUTE_STREAM, tuple(deps), flops=size.backward_flops, label=f"B{m}"))
            last = blocking_collectives(compute, f"B{m}")
            if p > 0:
                prog.add(Op(SEND, send_bwd, (last,), nbytes=size.pp_bytes, peer=layout.rank(t, d, p - 1),
                            tag=2 * m + 1, dim=PP, label=f"send-B{m}"))

    if not stagger:
        for g, label in dp_groups:
            prog.add(Op(COLLECTIVE, DP_STREAM, (last,), collective=ALL_REDUCE, group=g, cid=ids(g, f"{label}-ar"),
                        nbytes=dp_bytes[label], dim=DP, label=f"{label}-ar"))
        return tuple(prog.ops)
    deps = [last]
    if p < stages - 1:  # wait until the next stage's DP traffic is off the network
        deps.append(prog.add(Op(RECV, DP_STREAM, nbytes=TOKEN_BYTES, peer=layout.rank(t, d, p + 1), tag=token_tag,
                                dim=DP, label="dp-token")))
    for g, label in dp_groups:
        last = prog.add(Op(COLLECTIVE, DP_STREAM, tuple(deps), collective=REDUCE_SCATTER, group=g,
                           cid=ids(g, f"{label}-rs"), nbytes=dp_bytes[label], dim=DP, label=f"{label}-rs"))
        deps = [last]
    if p > 0:
        prog.add(Op(SEND, DP_STREAM, (last,), nbytes=TOKEN_BYTES, peer=layout.rank(t, d, p - 1), tag=token_tag,
                    dim=DP, label="dp-token"))
    return tuple(prog.ops)


def sizes_by_stage(
    model: ModelSpec, layers: Sequence[int], *, micro_batch: int, sequence: int, dtype_bytes: int, tp: int, ep: int,
) -> tuple[StageSizes, ...]:
    last = len(layers) - 1
    return tuple(
        stage_sizes(model, n, s == 0, s == last, micro_batch=micro_batch, sequence=sequence, dtype_bytes=dtype_bytes,
                    tp=tp, ep=ep)
        for s, n in enumerate(layers)
    )
