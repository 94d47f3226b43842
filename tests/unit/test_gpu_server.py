"""The GPU server on hand-written programs: collectives against their closed forms, the scale-up
mesh, conservation of bytes, and interruption / restart through the job's control plane."""

from __future__ import annotations

import pytest

from emulators.gpu_server.collectives import bytes_sent, mesh_time_ps
from emulators.kernel.vtime import serialization_ps
from emulators.model.job import (
    ALL_REDUCE,
    ALL_TO_ALL,
    COLLECTIVE,
    COMPUTE,
    HIERARCHICAL,
    IDEAL,
    RECV,
    RING,
    SEND,
    Op,
)
from emulators.model.scenario import FIBER_DELAY_PS_PER_M, Scenario
from emulators.rdma.settings import NicSettings, local_ack_timeout_ps
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from tests.helpers import gpus_on_one_switch, with_programs

MiB = 1 << 20
SWITCH_PS = 600_000
LINK_M = 3


def cluster(servers: int, gpus: int, *, extra: str = "", faults: str = "", duration: str = "200ms") -> str:
    """``servers`` GPU servers of ``gpus`` GPUs, every NIC on one 400G switch."""
    return gpus_on_one_switch(servers, gpus, port="nic", switch_kind="switch", rate="400G", length_m=LINK_M,
                              name="gpu-test", duration=duration, extra=extra) + faults


def job(scenario_text: str, ranks: list[tuple[str, int]], groups: list[tuple[int, ...]],
        programs: list[tuple[Op, ...]], **fields: object) -> Scenario:
    return with_programs(scenario_text, ranks, groups, programs, spread="dp", **fields)


def all_reduce(nbytes: int, group: int = 0) -> Op:
    return Op(COLLECTIVE, "comm", collective=ALL_REDUCE, group=group, cid=group, nbytes=nbytes, dim="dp", label="ar")


def test_ring_all_reduce_across_servers_matches_the_closed_form_within_one_percent():
    n, size = 4, 256 * MiB
    scenario = job(cluster(n, 1), [(f"s{i}", 0) for i in range(n)], [tuple(range(n))], [(all_reduce(size),)] * n,
                   transport=IDEAL)
    results = run_scenario(scenario)
    measured = results["job"]["iterations"][0]["time_ps"]
    nic = NicSettings()
    goodput = 400e9 * nic.mtu / nic.wire_mtu
    piece = size / n
    # per step: the piece at goodput, then the last chunk's store-and-forward at the switch and the
    # one-way latency (two 3 m links, the switch pipeline)
    latency = 2 * LINK_M * FIBER_DELAY_PS_PER_M + SWITCH_PS + serialization_ps(nic.wire_bytes(nic.chunk), 400 * 10**9)
    closed = 2 * (n - 1) * (piece * 8 / goodput * 1e12 + latency)
    assert measured == pytest.approx(closed, rel=0.01)
    assert 2 * (n - 1) / n * size * 8 / goodput * 1e12 < measured
    # bytes: each rank sends 2(n-1) pieces, all over the fabric
    assert results["job"]["bytes"]["dp"] == {"scale_up": 0, "fabric": n * bytes_sent(ALL_REDUCE, size, n), "wan": 0}
    # every message byte arrived once: what the NICs took in equals what the ranks sent
    received = sum(d["counters"]["rdma_rx_payload_bytes"] for d in results["devices"].values() if "job" in d)
    assert received == n * bytes_sent(ALL_REDUCE, size, n)


def test_all_reduce_inside_one_server_takes_the_mesh_closed_form_exactly():
    g, size = 8, 64 * MiB
    scenario = job(cluster(1, g), [("s0", k) for k in range(g)], [tuple(range(g))], [(all_reduce(size),)] * g)
    results = run_scenario(scenario)
    bandwidth, latency = 3_600_000_000_000, 2_000_000  # h100 defaults
    expected = 2 * (g - 1) * (serialization_ps(-(-size // g), bandwidth) + latency)
    assert mesh_time_ps(ALL_REDUCE, size, g, bandwidth, latency) == expected
    assert results["job"]["iterations"][0]["time_ps"] == expected
    assert results["job"]["bytes"]["dp"]["scale_up"] == g * 2 * (g - 1) * (size // g)


def test_all_reduce_over_two_servers_conserves_bytes_and_hierarchical_is_faster():
    servers, g, size = 2, 4, 64 * MiB
    ranks = [(f"s{s}", k) for s in range(servers) for k in range(g)]
    n = len(ranks)
    runs = {
        algorithm: run_scenario(job(cluster(servers, g), ranks, [tuple(range(n))], [(all_reduce(size),)] * n,
                                    algorithm=algorithm))["job"]
        for algorithm in (RING, HIERARCHICAL)
    }
    # a flat ring of 8: 2 of its hops cross servers, 6 stay on the mesh
    assert runs[RING]["bytes"]["dp"]["fabric"] == 2 * bytes_sent(ALL_REDUCE, size, n)
    assert runs[RING]["bytes"]["dp"]["scale_up"] == 6 * bytes_sent(ALL_REDUCE, size, n)
    # hierarchical: each GPU's S/g crosses in a ring of two servers
    assert runs[HIERARCHICAL]["bytes"]["dp"]["fabric"] == n * bytes_sent(ALL_REDUCE, size // g, servers)
    assert runs[HIERARCHICAL]["iteration_time_ps"] < runs[RING]["iteration_time_ps"]


def test_all_to_all_delivers_every_piece():
    servers, g, size = 2, 2, 8 * MiB
    ranks = [(f"s{s}", k) for s in range(servers) for k in range(g)]
    n = len(ranks)
    op = Op(COLLECTIVE, "comm", collective=ALL_TO_ALL, group=0, cid=0, nbytes=size, dim="ep", label="a2a")
    results = run_scenario(job(cluster(servers, g), ranks, [tuple(range(n))], [(op,)] * n))
    assert results["job"]["status"] == "completed"
    piece = size // n
    # each rank sends a piece to the other GPU of its server and two pieces to the other server
    assert results["job"]["bytes"]["ep"] == {"scale_up": n * piece, "fabric": n * 2 * piece, "wan": 0}


FAST_TIMEOUT = {"ib_timeout": 6, "ib_retry_cnt": 3}  # 262 us, 4 timeouts to a QP error


def pipeline(**fields: object) -> Scenario:
    """Two single-GPU servers on one link that fails for 4 ms: compute 1 ms, send 32 MiB, compute."""
    text = cluster(2, 1, duration="40ms",
                   faults="faults:\n  - {at: 5ms, link: s0.0, state: down}\n  - {at: 9ms, link: s0.0, state: up}\n")
    flops = 400 * 10**9  # 1 ms at 1000 TFLOP/s x 0.4 MFU
    first = (Op(COMPUTE, "compute", flops=flops, label="F"),
             Op(SEND, "send", deps=(0,), nbytes=32 * MiB, peer=1, tag=0, dim="pp", label="send"))
    second = (Op(RECV, "recv", nbytes=32 * MiB, peer=0, tag=0, dim="pp", label="recv"),
              Op(COMPUTE, "compute", deps=(0,), flops=flops, label="F"))
    settings = {"iterations": 6, "checkpoint_every": 1, "checkpoint_save_ps": 100_000_000, "restart": True,
                "restart_ps": 3 * 10**9, "detect_ps": 10**9, "nccl": FAST_TIMEOUT} | fields
    return job(text.replace("{gpus: 1", "{gpus: 1, tflops: 1000, mfu: 0.4"), [("s0", 0), ("s1", 0)], [],
               [first, second], **settings)


def test_a_qp_error_interrupts_the_job_which_restarts_from_its_checkpoint():
    results = run_scenario(pipeline())
    run = results["job"]
    assert run["status"] == "completed"
    [interruption] = run["interruptions"]
    assert "retry count exceeded" in interruption["cause"] and interruption["kind"] == "qp_error"
    # the QP gives up timeout x (retries + 1) after the link died, every rank learns of it detect later
    assert 5 * 10**9 < interruption["at_ps"] <= 5 * 10**9 + 4 * local_ack_timeout_ps(6) + 10**9
    assert interruption["aborted_ps"] == interruption["at_ps"] + 10**9
    assert interruption["resumed_ps"] == interruption["aborted_ps"] + 3 * 10**9
    checkpoint = max(c["end_ps"] for c in run["checkpoints"] if c["iteration"] == interruption["restart_iteration"] - 1)
    assert interruption["lost_ps"] == interruption["resumed_ps"] - checkpoint == run["lost_ps"]
    resumed = [it for it in run["iterations"] if it["attempt"] == 1]
    assert [it["iteration"] for it in resumed] == list(range(interruption["restart_iteration"], 6))
    assert resumed[0]["start_ps"] == interruption["resumed_ps"]


def test_without_restart_the_job_stops_at_the_interruption():
    run = run_scenario(pipeline(restart=False))["job"]
    assert run["status"] == "stopped"
    assert run["interruptions"][0]["resumed_ps"] is None
    assert all(it["attempt"] == 0 for it in run["iterations"])


@pytest.mark.parametrize("partition", ["site", "device"])
def test_interruption_and_restart_are_the_same_in_every_partition(partition):
    scenario = pipeline()
    assert deterministic_view(run_scenario(scenario, partition=partition)) == deterministic_view(
        run_scenario(scenario))


def test_checkpoints_and_lost_time_when_ranks_run_at_different_paces():
    # rank 2 only computes and runs far ahead; rank 1 waits on rank 0, whose link fails
    text = cluster(3, 1, extra=", tflops: 1000, mfu: 0.4", duration="60ms",
                   faults="faults:\n  - {at: 5ms, link: s0.0, state: down}\n  - {at: 9ms, link: s0.0, state: up}\n")
    flops = 400 * 10**9
    first = (Op(COMPUTE, "compute", flops=flops // 2, label="F"),
             Op(SEND, "send", deps=(0,), nbytes=MiB, peer=1, tag=0, dim="pp", label="send"))
    second = (Op(RECV, "recv", nbytes=MiB, peer=0, tag=0, dim="pp", label="recv"),
              Op(COMPUTE, "compute", deps=(0,), flops=flops, label="F"))
    third = (Op(COMPUTE, "compute", flops=flops // 10, label="F"),)
    scenario = job(text, [("s0", 0), ("s1", 0), ("s2", 0)], [], [first, second, third], iterations=40,
                   checkpoint_every=1, checkpoint_save_ps=100_000_000, restart_ps=3 * 10**9, nccl=FAST_TIMEOUT)
    run = run_scenario(scenario)["job"]
    [stop] = run["interruptions"]
    # a checkpoint exists once the slowest rank saved it, each in turn, whatever the others did
    before = [c for c in run["checkpoints"] if c["end_ps"] < stop["aborted_ps"]]
    assert [c["iteration"] for c in before] == list(range(len(before)))
    assert stop["restart_iteration"] == len(before)
    assert stop["lost_ps"] == stop["resumed_ps"] - before[-1]["end_ps"]
    assert run["status"] == "completed"


def test_job_messages_stay_out_of_a_tester_flow_s_balance():
    text = cluster(2, 1, duration="5ms").replace("devices:\n", (
        "devices:\n  t1: {kind: tester, ports: [p0]}\n  t2: {kind: tester, ports: [p0]}\n"))
    text = text.replace("links:\n", "links:\n  - {name: t, a: t1/p0, z: t2/p0, rate: 100G, length: 10m}\n")
    text += "flows:\n  - {name: f0, src: t1/p0, dst: t2/p0, rate: 10G, frame: 4KiB, for: 5ms}\n"
    size = 512 * MiB  # still on the wire when the run ends; rank 0's first message is its tag 0
    send = Op(SEND, "send", nbytes=size, peer=1, tag=0, dim="pp")
    recv = Op(RECV, "recv", nbytes=size, peer=0, tag=0, dim="pp")
    scenario = job(text, [("s0", 0), ("s1", 0)], [], [(send,), (recv,)])
    flow = run_scenario(scenario)["flows"]["f0"]
    assert flow["in_flight_bytes"] == flow["unaccounted_bytes"] == flow["lost_bytes"] == 0
