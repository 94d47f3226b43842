"""The job block becomes per-rank programs that fit together: ranks where the placement says, groups
in ring order, sends matched by receives, collectives identical on every member, no deadlock, and
traffic that adds up to the closed forms. Every malformed job fails naming the key and the fix."""

from __future__ import annotations

from collections import Counter, defaultdict
from fractions import Fraction

import pytest

from emulators.model.job import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    COLLECTIVE,
    COMPUTE,
    RECV,
    REDUCE_SCATTER,
    SEND,
    JobPlan,
)
from orchestrator.scenario.loader import ScenarioError, parse_scenario
from orchestrator.workload import job as job_module
from orchestrator.workload.job import analytic_bytes, apportion, model_of
from orchestrator.workload.models import MODELS
from orchestrator.workload.schedule import one_f_one_b, stage_parameters

SOURCE = "scenarios/job.yaml"


def servers(*specs: tuple[str, str, int, str]) -> str:
    """devices and links: YAML for (name, site, gpus, gpu type) GPU servers, one NIC port per GPU, every
    NIC on one switch (a job whose servers talk must have a path between them)."""
    lines = ["devices:"]
    links = ["links:"]
    for name, site, gpus, gpu in specs:
        ports = ", ".join(f"n{g}" for g in range(gpus))
        lines.append(f"  {name}: {{kind: gpu_server, site: {site}, ports: [{ports}], "
                     f"options: {{gpus: {gpus}, gpu: {gpu}}}}}")
        links += [f"  - {{name: {name}-{g}, a: {name}/n{g}, z: sw/{name}-{g}, rate: 400G, length: 3m}}"
                  for g in range(gpus)]
    switch_ports = ", ".join(f"{name}-{g}" for name, _, gpus, _ in specs for g in range(gpus))
    lines.append(f"  sw: {{kind: switch, ports: [{switch_ports}]}}")
    return "\n".join(lines + links) + "\n"


TWO_SITES = "duration: 1s\nsites: [dc1, dc2]\n" + servers(
    ("b", "dc1", 8, "h100"), ("a", "dc1", 8, "h100"), ("d", "dc2", 8, "h100"), ("c", "dc2", 8, "h100"))


def plan_of(job: str, devices: str = TWO_SITES) -> JobPlan:
    plan = parse_scenario(devices + "job:\n" + job, SOURCE).job
    assert plan is not None
    return plan


def job_error(job: str, devices: str = TWO_SITES) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(devices + "job:\n" + job, SOURCE)
    return str(caught.value)


TRIAL_A = """\
  model: llama2-13b
  parallel: {tp: 4, pp: 2, dp: 4}
  global_batch: 64
  sequence: 4096
"""


# --- placement and groups ------------------------------------------------------------------------


def test_pp_across_sites_puts_each_stage_in_one_site() -> None:
    plan = plan_of(TRIAL_A)
    assert plan.info["servers"] == ["a", "b", "c", "d"]  # by site, then name
    assert plan.info["rank_order"] == ["tp", "dp", "pp"]
    stage_of = [r // 16 for r in range(32)]  # rank = t + 4 d + 16 p
    for rank, place in enumerate(plan.ranks):
        assert place.device in (("a", "b") if stage_of[rank] == 0 else ("c", "d"))
    assert plan.ranks[0].device == "a" and plan.ranks[0].gpu == 0 and plan.ranks[9].device == "b"


def test_dp_across_sites_puts_each_replica_in_one_server() -> None:
    plan = plan_of(TRIAL_A + "  placement: dp-across-sites\n")
    assert plan.info["rank_order"] == ["tp", "pp", "dp"]
    for rank, place in enumerate(plan.ranks):  # rank = t + 4 p + 8 d: replica d fills server d
        assert place.device == "abcd"[rank // 8]


def test_groups_are_in_ring_order_and_tp_stays_in_a_server() -> None:
    plan = plan_of(TRIAL_A)
    first, count = plan.info["groups"]["tp"]
    assert count == 8
    for group in plan.groups[first:first + count]:
        assert list(group) == sorted(group) and len(group) == 4
        assert len({plan.ranks[r].device for r in group}) == 1
    first, count = plan.info["groups"]["dp"]
    assert count == 8  # one per (tp index, stage)
    assert plan.groups[first] == (0, 4, 8, 12)
    assert plan.info["groups"]["ep"] == [16, 0]


def test_moe_groups_ep_consecutive_replicas_and_expert_dp_the_rest() -> None:
    devices = "duration: 1s\n" + servers(("a", "dc1", 8, "h100"), ("b", "dc1", 8, "h100"))
    plan = plan_of("""\
  model: mixtral-8x7b
  model_overrides: {layers: 2}
  parallel: {tp: 2, pp: 1, dp: 8, ep: 4}
  global_batch: 16
  sequence: 256
""", devices)
    ranges = plan.info["groups"]
    ep = plan.groups[ranges["ep"][0]:sum(ranges["ep"])]
    edp = plan.groups[ranges["edp"][0]:sum(ranges["edp"])]
    assert (0, 2, 4, 6) in ep and (8, 10, 12, 14) in ep  # replicas 0..3 and 4..7, TP index 0
    assert (0, 8) in edp and (6, 14) in edp  # replica e and e + 4 hold the same experts
    assert len(ep) == 4 and len(edp) == 8


def test_a_rank_map_places_ranks_explicitly() -> None:
    devices = "duration: 1s\n" + servers(("a", "dc1", 2, "h100"), ("b", "dc1", 2, "h100"))
    plan = plan_of("""\
  model: llama2-7b
  parallel: {tp: 4, pp: 1, dp: 1}
  global_batch: 1
  sequence: 128
  placement: {rank_map: ["b:1", "a:0", "b:0", "a:1"]}
""", devices)
    assert [(p.device, p.gpu) for p in plan.ranks] == [("b", 1), ("a", 0), ("b", 0), ("a", 1)]
    assert plan.groups == ((0, 1, 2, 3),)  # TP across servers: the rank map says so


# --- programs ------------------------------------------------------------------------------------


def test_one_f_one_b_warms_up_then_alternates() -> None:
    assert one_f_one_b(0, 4, 5) == [("F", 0), ("F", 1), ("F", 2), ("F", 3), ("B", 0), ("F", 4), ("B", 1),
                                    ("B", 2), ("B", 3), ("B", 4)]
    assert one_f_one_b(3, 4, 2) == [("F", 0), ("B", 0), ("F", 1), ("B", 1)]
    assert one_f_one_b(0, 4, 2) == [("F", 0), ("F", 1), ("B", 0), ("B", 1)]  # warm-up capped at M


def test_compute_flops_of_a_rank_sum_to_its_share() -> None:
    plan = plan_of(TRIAL_A)
    model = MODELS["llama2-13b"]
    per_micro_batch = plan.info["flops_per_micro_batch_by_stage"][0]
    program = plan.programs[0]
    forwards = [op for op in program if op.kind == COMPUTE and op.label.startswith("F")]
    backwards = [op for op in program if op.kind == COMPUTE and op.label.startswith("B")]
    assert len(forwards) == len(backwards) == 16
    assert forwards[0].flops + backwards[0].flops == per_micro_batch
    assert forwards[0].flops == per_micro_batch // 3
    exact = Fraction(model.training_flops_per_token(4096) * 20 * 4096, 40 * 4)
    assert abs(per_micro_batch - exact) <= Fraction(1, 2)
    assert plan.flops_per_iteration == model.training_flops_per_token(4096) * 64 * 4096


def test_stages_hold_every_parameter_once() -> None:
    for model in MODELS.values():
        layers = [model.layers // 4] * 3 + [model.layers - 3 * (model.layers // 4)]
        held = [stage_parameters(model, n, p == 0, p == 3) for p, n in enumerate(layers)]
        assert sum(s.dense + s.expert for s in held) == model.parameters()


def test_stages_wait_for_their_activations_and_gradients() -> None:
    plan = plan_of(TRIAL_A + "  overlap_pp: false\n")
    last_stage = plan.programs[16]
    f0 = next(i for i, op in enumerate(last_stage) if op.label == "F0")
    recv = last_stage[last_stage[f0].deps[0]]
    assert (recv.kind, recv.stream, recv.peer, recv.tag, recv.nbytes) == (RECV, "recv-fwd", 0, 0, 4096 * 5120 * 2 // 4)
    first_stage = plan.programs[0]
    sends = [op for op in first_stage if op.kind == SEND]
    assert {op.stream for op in sends} == {"compute"}  # without overlap the send blocks compute
    assert {op.stream for op in plan_of(TRIAL_A).programs[0] if op.kind == SEND} == {"send-fwd"}


def _check_matched(plan: JobPlan) -> None:
    """Every send has its receive; every collective id means one op, alike on every member of its group."""
    sends: Counter[tuple[int, int, int, int]] = Counter()
    recvs: Counter[tuple[int, int, int, int]] = Counter()
    instances: dict[int, list[tuple[int, str, int, int]]] = defaultdict(list)
    for rank, program in enumerate(plan.programs):
        for index, op in enumerate(program):
            assert all(dep < index for dep in op.deps)
            if op.kind == SEND:
                sends[(rank, op.peer, op.tag, op.nbytes)] += 1
            elif op.kind == RECV:
                recvs[(op.peer, rank, op.tag, op.nbytes)] += 1
            elif op.kind == COLLECTIVE:
                instances[op.cid].append((rank, op.collective, op.group, op.nbytes))
    assert sends == recvs and max(sends.values()) == 1
    assert sorted(instances) == list(range(len(instances)))  # ids 0..n-1, unique in the iteration
    for members in instances.values():
        ranks = sorted(rank for rank, *_ in members)
        kinds = {tuple(rest) for _, *rest in members}
        assert len(kinds) == 1
        assert tuple(ranks) == plan.groups[members[0][2]]


def _run_to_completion(plan: JobPlan) -> None:
    """Run every program with no time at all: an op starts at the head of its stream once its deps are
    done; a receive finishes once its message is sent, a collective once every member reached it. Every
    op must finish, or the programs deadlock."""
    done = [[False] * len(p) for p in plan.programs]
    heads: list[dict[str, list[int]]] = []
    for program in plan.programs:
        streams: dict[str, list[int]] = defaultdict(list)
        for index, op in enumerate(program):
            streams[op.stream].append(index)
        heads.append(streams)
    sent: set[tuple[int, int, int]] = set()
    arrived: dict[int, set[int]] = defaultdict(set)
    progress = True
    while progress:
        progress = False
        for rank, program in enumerate(plan.programs):
            for queue in heads[rank].values():
                while queue:
                    op = program[queue[0]]
                    if not all(done[rank][d] for d in op.deps):
                        break
                    if op.kind == RECV and (op.peer, rank, op.tag) not in sent:
                        break
                    if op.kind == COLLECTIVE:
                        arrived[op.cid].add(rank)
                        if len(arrived[op.cid]) < len(plan.groups[op.group]):
                            break
                    if op.kind == SEND:
                        sent.add((rank, op.peer, op.tag))
                    done[rank][queue.pop(0)] = True
                    progress = True
    stuck = [(rank, plan.programs[rank][q[0]].label) for rank in range(len(done)) for q in heads[rank].values() if q]
    assert not stuck, stuck[:5]


@pytest.mark.parametrize("extra", [
    "",
    "  overlap_pp: false\n",
    "  stagger_dp: true\n",
    "  placement: dp-across-sites\n  stagger_dp: true\n  overlap_pp: false\n",
])
def test_programs_fit_together_and_run_to_the_end(extra: str) -> None:
    plan = plan_of(TRIAL_A.replace("64", "16") + extra)
    _check_matched(plan)
    _run_to_completion(plan)


def test_moe_programs_fit_together() -> None:
    devices = "duration: 1s\n" + servers(("a", "dc1", 8, "h100"), ("b", "dc1", 8, "h100"))
    plan = plan_of("""\
  model: mixtral-8x7b
  model_overrides: {layers: 4}
  parallel: {tp: 2, pp: 2, dp: 4, ep: 2}
  global_batch: 8
  sequence: 256
  stagger_dp: true
""", devices)
    _check_matched(plan)
    _run_to_completion(plan)
    labels = {op.label for op in plan.programs[0]}
    assert {"ep-F0", "edp-rs", "edp-ag0", "dp-rs", "dp-ag0"} <= labels


def test_staggered_dp_hands_a_token_down_the_stages() -> None:
    plan = plan_of(TRIAL_A.replace("64", "16") + "  stagger_dp: true\n")
    first, last = plan.programs[0], plan.programs[16]  # (t 0, d 0) on stage 0 and on stage 1
    assert [op.collective for op in first[:2]] == [ALL_GATHER, ALL_GATHER]  # min(P - s, M) pieces
    assert first[0].nbytes + first[1].nbytes == next(op.nbytes for op in first if op.collective == REDUCE_SCATTER)
    # the first forward in chunks, chunk j after piece j: parameters arrive as the layers need them
    chunks = [i for i, op in enumerate(first) if op.label.startswith("F0.")]
    assert [first[i].label for i in chunks] == ["F0.0", "F0.1"]
    assert 0 in first[chunks[0]].deps and 1 in first[chunks[1]].deps and chunks[0] in first[chunks[1]].deps
    assert sum(first[i].flops for i in chunks) == next(op.flops for op in first if op.label == "F1")
    # all-gathers stage after stage: stage 1 gathers after stage 0 hands it the network
    handed = next(op for op in first if op.kind == SEND and op.label == "ag-token")
    assert first.index(handed) > 1 and 1 in handed.deps and handed.peer == 16
    waits = next(i for i, op in enumerate(last) if op.kind == RECV and op.label == "ag-token")
    assert all(waits in op.deps for op in last if op.collective == ALL_GATHER)
    token = next(op for op in first if op.kind == RECV and op.label == "dp-token")
    rs = next(op for op in first if op.collective == REDUCE_SCATTER)
    assert first.index(token) in rs.deps and token.peer == 16
    send = next(op for op in last if op.kind == SEND and op.label == "dp-token")
    assert last.index(next(op for op in last if op.collective == REDUCE_SCATTER)) in send.deps
    assert not any(op.collective == ALL_REDUCE and op.dim == "dp" for op in first)


# --- traffic -------------------------------------------------------------------------------------


_RING_FACTOR = {ALL_REDUCE: 2, REDUCE_SCATTER: 1, ALL_GATHER: 1, ALL_TO_ALL: 1}


def program_bytes(plan: JobPlan) -> dict[str, int]:
    """What the programs send, counted by the closed forms per op: 2(N-1)/N S for an all-reduce, ..."""
    sent: dict[str, Fraction] = defaultdict(Fraction)
    for program in plan.programs:
        for op in program:
            if op.kind == SEND:
                sent[op.dim] += op.nbytes
            elif op.kind == COLLECTIVE:
                n = len(plan.groups[op.group])
                sent[op.dim] += Fraction(_RING_FACTOR[op.collective] * (n - 1), n) * op.nbytes
    assert all(v.denominator == 1 for v in sent.values())
    return {dim: int(sent.get(dim, 0)) for dim in ("tp", "pp", "dp", "ep")}


@pytest.mark.parametrize(("model", "parallel", "extra"), [
    ("llama2-7b", "{tp: 2, pp: 2, dp: 8}", ""),
    ("llama2-7b", "{tp: 4, pp: 4, dp: 2}", "  stagger_dp: true\n  split: {pp: compute}\n"),
    ("gpt3-175b", "{tp: 8, pp: 2, dp: 2}", "  placement: dp-across-sites\n"),
    ("mixtral-8x7b", "{tp: 2, pp: 2, dp: 8, ep: 4}", "  stagger_dp: true\n"),
    ("mixtral-8x7b", "{tp: 4, pp: 2, dp: 4}", ""),
])
def test_programs_send_what_the_closed_forms_say(model: str, parallel: str, extra: str) -> None:
    plan = plan_of(f"""\
  model: {model}
  model_overrides: {{layers: 4}}
  parallel: {parallel}
  global_batch: 32
  sequence: 512
""" + extra)
    expected = analytic_bytes(plan)
    assert program_bytes(plan) == expected
    assert expected["pp"] > 0 and expected["dp"] > 0
    assert plan.info["bytes_sent_per_iteration"] == expected


def test_analytic_bytes_follow_the_textbook_for_trial_a() -> None:
    plan = plan_of(TRIAL_A)
    model = model_of(plan)
    sent = analytic_bytes(plan)
    activation = 4096 * 5120 * 2
    # TP: 64 micro-batches x 2 stages x 4 all-reduces per layer... as 2 ops of 2 x 20 layers each, 2(4-1) S
    assert sent["tp"] == 64 * 2 * 2 * 2 * (4 - 1) * (2 * 20 * activation)
    assert sent["pp"] == 64 * 2 * activation  # one boundary, forward and backward
    # DP: every parameter's gradient once per TP shard, ring factor 2(N-1) over the 4 replicas
    assert sent["dp"] == pytest.approx(2 * 3 * model.parameters() * 2, rel=1e-6)


# --- splits --------------------------------------------------------------------------------------


def test_apportion_by_largest_remainder_gives_everyone_one() -> None:
    assert apportion(32, [362.05, 119.5, 119.5]) == [19, 7, 6]
    assert apportion(100, [989.4, 312.0]) == [76, 24]
    assert apportion(4, [1000.0, 1.0, 1.0]) == [2, 1, 1]
    assert apportion(3, [1.0, 1.0, 1.0]) == [1, 1, 1]


def test_mixed_pools_split_layers_and_micro_batches_by_compute() -> None:
    devices = "duration: 1s\n" + servers(("fast", "dc1", 4, "l40s"), ("slow", "dc1", 8, "l20"))
    plan = plan_of("""\
  model: llama2-7b
  parallel: {tp: 4, pp: 3, dp: 1}
  global_batch: 8
  sequence: 1024
  split: {pp: compute}
""", devices)
    assert plan.info["layers_per_stage"] == [19, 7, 6]  # 362.05 : 119.5 : 119.5 of 32 layers
    devices = "duration: 1s\n" + servers(("h", "dc1", 1, "h100"), ("x", "dc1", 1, "a100"))
    plan = plan_of("""\
  model: llama2-7b
  model_overrides: {layers: 2}
  parallel: {tp: 1, pp: 1, dp: 2}
  global_batch: 100
  sequence: 128
  split: {dp: compute}
""", devices)
    # peak x MFU: 989.4 x 0.43 : 312 x 0.47 (each type's published MFU) of 100 micro-batches
    assert plan.info["micro_batches_per_replica"] == [74, 26]
    assert sum(op.kind == COMPUTE for op in plan.programs[0]) == 2 * 74
    assert plan.info["split"] == {"pp": "uniform", "dp": "compute"}


def test_uniform_layers_put_the_remainder_on_the_last_stages() -> None:
    plan = plan_of(TRIAL_A.replace("pp: 2, dp: 4", "pp: 8, dp: 1").replace("llama2-13b", "llama2-7b")
                   .replace("64", "8") + "  model_overrides: {layers: 30}\n")
    assert plan.info["layers_per_stage"] == [3, 3, 4, 4, 4, 4, 4, 4]


def test_settings_reach_the_plan() -> None:
    plan = plan_of(TRIAL_A + """\
  iterations: 3
  algorithm: hierarchical
  start: 5ms
  checkpoint: {every: 2, save: 10s, restart: false, restart_time: 30s, detect: 1s}
""")
    assert (plan.iterations, plan.algorithm, plan.start_ps) == (3, "hierarchical", 5 * 10**9)
    assert (plan.checkpoint_every, plan.checkpoint_save_ps, plan.restart, plan.restart_ps, plan.detect_ps) == (
        2, 10 * 10**12, False, 30 * 10**12, 10**12)
    assert plan.tokens_per_iteration == 64 * 4096
    assert JobPlan.from_dict(plan.to_dict()) == plan


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("job", "where", "says"), [
    (TRIAL_A.replace("llama2-13b", "llama3"), "job.model", "known models: llama2-7b, llama2-13b"),
    (TRIAL_A.replace("dp: 4", "dp: 2"), "job.parallel", "16 GPUs, but the 4 servers have 32"),
    (TRIAL_A.replace("tp: 4, pp: 2, dp: 4", "tp: 16, pp: 2, dp: 1").replace("13b", "7b"), "job.parallel.tp",
     "more than the 8 GPUs of a server; TP must stay inside a server"),
    (TRIAL_A.replace("tp: 4, pp: 2, dp: 4", "tp: 3, pp: 2, dp: 4"), "job.parallel.tp", "do not split over 3"),
    (TRIAL_A.replace("64", "62"), "job.global_batch", "multiple of micro_batch x dp = 4"),
    (TRIAL_A + "  micro_batch: 3\n", "job.global_batch", "not a whole number of micro-batches of 3"),
    (TRIAL_A.replace("dp: 4}", "dp: 4, ep: 2}"), "job.parallel.ep", "has no experts, so ep must be 1"),
    (TRIAL_A.replace("pp: 2, dp: 4", "pp: 8, dp: 1") + "  model_overrides: {layers: 4}\n", "job.parallel.pp",
     "4 layers, fewer than 8 pipeline stages"),
    (TRIAL_A + "  servers: [a, x]\n", "job.servers[1]", "no device named 'x', not a gpu_server; GPU servers: a, b"),
    (TRIAL_A + "  placement: across\n", "job.placement", "allowed: pp-across-sites, dp-across-sites"),
    (TRIAL_A + "  split: {pp: fast}\n", "job.split.pp", "allowed: uniform, compute"),
    (TRIAL_A + "  overlap: true\n", "job.overlap", "unknown key (did you mean overlap_pp?)"),
    (TRIAL_A.replace("  sequence: 4096\n", ""), "job.sequence", "required key is missing"),
    (TRIAL_A + "  start: 5\n", "job.start", "has no unit"),
])
def test_job_errors_name_the_key_and_the_fix(job: str, where: str, says: str) -> None:
    message = job_error(job)
    assert message.startswith(f"{SOURCE}: {where}: "), message
    assert says in message, message


def test_moe_errors() -> None:
    devices = "duration: 1s\n" + servers(("a", "dc1", 8, "h100"), ("b", "dc1", 8, "h100"))
    mixtral = "  model: mixtral-8x7b\n  global_batch: 16\n  sequence: 256\n"
    message = job_error(mixtral + "  parallel: {tp: 2, pp: 1, dp: 8, ep: 3}\n", devices)
    assert "job.parallel.ep: 3 does not divide dp = 8" in message
    message = job_error(mixtral + "  parallel: {tp: 1, pp: 1, dp: 16, ep: 16}\n", devices)
    assert "job.parallel.ep" in message and "8 experts do not split over 16" in message
    message = job_error(mixtral + "  parallel: {tp: 2, pp: 1, dp: 8, ep: 2}\n  split: {dp: compute}\n", devices)
    assert "job.split.dp: compute needs ep = 1" in message


@pytest.mark.parametrize(("rank_map", "where", "says"), [
    ('["a:0", "a:1"]', "job.placement.rank_map", "has 2 entries for tp x pp x dp = 4 ranks"),
    ('["a:0", "a:1", "a:1", "b:0"]', "job.placement.rank_map[2]", "a:1 is already rank 1's"),
    ('["a:0", "a:1", "a:2", "b:0"]', "job.placement.rank_map[2]", "server 'a' has 2 GPUs (0..1)"),
    ('["a:0", "a:1", "sw:0", "b:0"]', "job.placement.rank_map[2]", "'sw' is a switch, not a gpu_server"),
    ('["a:0", "a:1", "a-0", "b:0"]', "job.placement.rank_map[2]", "is not server:gpu"),
])
def test_rank_map_errors(rank_map: str, where: str, says: str) -> None:
    devices = "duration: 1s\n" + servers(("a", "dc1", 2, "h100"), ("b", "dc1", 2, "h100"))
    message = job_error(f"""\
  model: llama2-7b
  parallel: {{tp: 4, pp: 1, dp: 1}}
  global_batch: 1
  sequence: 128
  placement: {{rank_map: {rank_map}}}
""", devices)
    assert f"{SOURCE}: {where}: " in message and says in message, message


def test_a_scenario_without_gpu_servers_cannot_run_a_job() -> None:
    message = job_error(TRIAL_A, "duration: 1s\ndevices:\n  t: {kind: tester, ports: [p0]}\n")
    assert message == f"{SOURCE}: job: the scenario has no gpu_server devices; a job runs on their GPUs: add some"


def test_limits_of_the_message_ids_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "job.iterations: 65536 iterations" in job_error(TRIAL_A + "  iterations: 65536\n")
    monkeypatch.setattr(job_module, "MAX_COLLECTIVES", 100)
    message = job_error(TRIAL_A)
    assert "job.micro_batch: the job needs" in message and "more than the 100 a message id can number" in message
    monkeypatch.setattr(job_module, "MAX_TAGS", 16)
    assert "job.micro_batch: 16 micro-batches per replica need 33 message tags" in job_error(TRIAL_A)


def test_servers_are_ordered_by_site_then_by_number() -> None:
    many = "duration: 1s\nsites: [dc1]\n" + servers(*((f"s{n}", "dc1", 1, "h100") for n in range(12)))
    plan = plan_of("  model: llama2-7b\n  parallel: {tp: 1, pp: 1, dp: 12}\n  global_batch: 12\n  sequence: 128\n",
                   many)
    assert [place.device for place in plan.ranks] == [f"s{n}" for n in range(12)]


def test_ranks_that_talk_across_servers_need_a_path() -> None:
    apart = "duration: 1s\ndevices:\n" + "".join(
        f"  {name}: {{kind: gpu_server, ports: [n0], options: {{gpus: 1}}}}\n" for name in ("a", "b"))
    message = job_error("  model: llama2-7b\n  parallel: {tp: 1, pp: 2, dp: 1}\n  global_batch: 2\n"
                        "  sequence: 128\n", apart)
    assert f"{SOURCE}: job.placement: " in message and "no linked NIC port" in message


# --- supernodes ----------------------------------------------------------------------------------


def supernode(name: str, gpus: int, per_server: int, extra: str = "") -> str:
    return f"  {name}: {{gpus: {gpus}, server_options: {{gpus: {per_server}}}{extra}}}\n"


def test_tp_spans_the_servers_of_a_supernode_in_natural_order() -> None:
    devices = "duration: 1s\nsupernodes:\n" + supernode("sn", 24, 2)  # sn-s0 .. sn-s11
    plan = plan_of("  model: llama2-7b\n  parallel: {tp: 8, pp: 1, dp: 3}\n  global_batch: 3\n  sequence: 128\n",
                   devices)
    assert [place.device for place in plan.ranks] == [f"sn-s{r // 2}" for r in range(24)]  # sn-s2 before sn-s10
    first, count = plan.info["groups"]["tp"]
    assert [len({plan.ranks[r].device for r in group}) for group in plan.groups[first:first + count]] == [4, 4, 4]


def test_a_tp_group_may_not_straddle_a_supernode_and_another_server() -> None:
    devices = ("duration: 1s\ndevices:\n  a: {kind: gpu_server, ports: [], options: {gpus: 8}}\nsupernodes:\n"
               + supernode("sn", 32, 8))
    job = "  model: llama2-7b\n  parallel: {tp: 16, pp: 1, dp: 2}\n  global_batch: 2\n  sequence: 128\n"
    message = job_error(job + "  servers: [a, sn-s0, sn-s1, sn-s2]\n", devices)
    assert message.startswith(f"{SOURCE}: job.parallel.tp: the TP group of ranks 0..15 spans server a and the "
                              "supernode of sn-s0..sn-s2; TP must stay inside a server or a supernode"), message
    message = job_error(job.replace("dp: 2", "dp: 1") + "  servers: [a, sn-s0]\n", devices)
    assert "tp = 16 is more than the 8 GPUs the job has in any one server or supernode" in message, message
    plan = plan_of(job + "  servers: [sn-s0, sn-s1, sn-s2, sn-s3]\n", devices)
    assert {place.device for place in plan.ranks} == {"sn-s0", "sn-s1", "sn-s2", "sn-s3"}


MIXTRAL = "  model: mixtral-8x7b\n  model_overrides: {layers: 2}\n  sequence: 128\n"


def test_an_ep_group_stays_in_a_supernode_that_could_hold_it() -> None:
    devices = ("duration: 1s\ndevices:\n  a: {kind: gpu_server, ports: [], options: {gpus: 2}}\nsupernodes:\n"
               + supernode("sn", 16, 2))
    job = MIXTRAL + "  parallel: {tp: 1, pp: 1, dp: 16, ep: 4}\n  global_batch: 16\n"
    message = job_error(job + "  servers: [a, sn-s0, sn-s1, sn-s2, sn-s3, sn-s4, sn-s5, sn-s6]\n", devices)
    assert message.startswith(f"{SOURCE}: job.parallel.ep: the EP group of ranks 0, 1, 2, 3 spans server a and the "
                              "supernode of sn-s0..sn-s6, though the job's 14 GPUs in the supernode of sn-s0..sn-s6 "
                              "could hold the 4 it lies among"), message
    plan = plan_of(job + "  servers: [sn-s0, sn-s1, sn-s2, sn-s3, sn-s4, sn-s5, sn-s6, sn-s7]\n", devices)
    first, count = plan.info["groups"]["ep"]
    assert count == 4 and all(len({plan.ranks[r].device for r in g}) == 2 for g in plan.groups[first:first + count])


def test_an_ep_group_larger_than_a_supernode_crosses_the_fabric() -> None:
    devices = """\
duration: 1s
fabrics:
  dc1: {leaves: 1, spines: 0, servers_per_leaf: 4, server_rate: 400G, server_kind: gpu_server,
        server_options: {gpus: 2}}
supernodes:
  sn: {gpus: 4, count: 2, fabric: dc1}
"""
    plan = plan_of(MIXTRAL + "  parallel: {tp: 1, pp: 1, dp: 8, ep: 8}\n  global_batch: 8\n", devices)
    first, _ = plan.info["groups"]["ep"]
    assert {plan.ranks[r].device for r in plan.groups[first]} == {f"dc1-s{n}" for n in range(4)}
