"""The OLink switch and the GPU servers' scale-up ports on hand-written programs: credit flow control
under incast, link-level retry under bit errors against the replay model, FEC, collectives over the
switch against their closed forms, in-network reduction, and determinism across partitions."""

from __future__ import annotations

import dataclasses
import math

import pytest

from emulators.gpu_server.collectives import bytes_sent
from emulators.kernel.vtime import serialization_ps
from emulators.model.job import (
    ALL_GATHER,
    ALL_REDUCE,
    COLLECTIVE,
    RECV,
    REDUCE_SCATTER,
    SEND,
    Op,
)
from emulators.model.scenario import FIBER_DELAY_PS_PER_M, Scenario
from emulators.olink import spec
from emulators.olink.fec import Fec
from orchestrator.fault_impact import measured
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import ScenarioError, parse_scenario
from tests.helpers import gpus_on_one_switch, with_programs

MiB = 1 << 20
RATE = 3_600_000_000_000
LINK_M = 2
PROPAGATION_PS = LINK_M * FIBER_DELAY_PS_PER_M
FRAME_PS = serialization_ps(spec.wire_bytes(spec.DEFAULT_CHUNK), RATE)
GOODPUT = RATE * spec.PACKET_PAYLOAD / spec.PACKET_BYTES


def supernode(servers: int, gpus: int, *, switch: str = "", ber: dict[str, float] | None = None,
              extra: str = "", duration: str = "20ms") -> str:
    """``servers`` GPU servers of ``gpus`` GPUs, each GPU's scale-up port on one OLink switch."""
    return gpus_on_one_switch(servers, gpus, port="olink", switch_kind="olink", rate="3.6T", length_m=LINK_M,
                              name="olink-test", duration=duration, switch_options=switch, extra=extra, ber=ber)


def job(text: str, ranks: list[tuple[str, int]], groups: list[tuple[int, ...]], programs: list[tuple[Op, ...]],
        **fields: object) -> Scenario:
    return with_programs(text, ranks, groups, programs, spread="tp", **fields)


def ranks_of(servers: int, gpus: int) -> list[tuple[str, int]]:
    return [(f"s{s}", g) for s in range(servers) for g in range(gpus)]


def collective(kind: str, nbytes: int) -> Op:
    return Op(COLLECTIVE, "comm", collective=kind, group=0, cid=0, nbytes=nbytes, dim="tp", label=kind)


def one_way_ps() -> int:
    """GPU to GPU through the switch for the last frame of a message: its store and forward at the
    switch, both links' propagation, the switch latency."""
    return FRAME_PS + 2 * PROPAGATION_PS + spec.DEFAULT_LATENCY_PS


def payload_received(results: dict) -> int:
    """Payload bytes GPUs took off OLink: wire bytes minus a header per packet."""
    total = 0
    for device in results["devices"].values():
        if device["kind"] == "gpu_server":
            for port in device["ports"].values():
                total += port["rx_bytes"]
    return total


# -- FEC ------------------------------------------------------------------------------------------

def test_fec_corrects_up_to_t_symbols_and_its_threshold_separates_no_errors_from_errors():
    fec = Fec(*spec.DEFAULT_FEC)
    assert fec.t == 7
    # one symbol wrong with probability q; the codeword fails on 8 or more of 272: the binomial tail
    ber = 1e-3
    q = 1 - (1 - ber) ** 10
    tail = sum(math.comb(272, i) * q**i * (1 - q) ** (272 - i) for i in range(8, 273))
    assert fec.codeword_failure(ber) == pytest.approx(tail, rel=1e-9)
    assert fec.packet_error_probability(1e-5, spec.PACKET_BYTES) < 1e-16  # below threshold: nothing gets past
    assert fec.packet_error_probability(1e-3, spec.PACKET_BYTES) > 1e-3
    assert Fec(272, 257, 10).codeword_failure(0.0) == 0.0


# -- credit flow control --------------------------------------------------------------------------

def test_incast_of_fifteen_into_one_is_lossless_and_keeps_the_bottleneck_busy():
    n, size = 16, 16 * MiB
    programs = [tuple(Op(RECV, f"r{k}", peer=k, tag=0, nbytes=size, dim="tp") for k in range(1, n))]
    programs += [(Op(SEND, "s", peer=0, tag=0, nbytes=size, dim="tp"),)] * (n - 1)
    results = run_scenario(job(supernode(2, 8), ranks_of(2, 8), [], programs))
    assert results["job"]["status"] == "completed"
    elapsed = results["job"]["iterations"][0]["time_ps"]
    switch = results["devices"]["sw"]
    # nothing lost or dropped anywhere, nothing replayed
    assert all(p["drop_frames"] == 0 and p["lost_frames"] == 0 for p in switch["ports"].values())
    assert all(c["replayed_frames"] == 0 and c["crc_errors"] == 0 for c in switch["olink"].values())
    # every byte arrived once: 15 messages of payload plus a header per packet
    packets = size // spec.PACKET_PAYLOAD
    data_wire = (n - 1) * (size + packets * spec.PACKET_HEADER)
    rank0 = results["devices"]["s0"]["ports"]["olink0"]
    assert rank0["rx_bytes"] >= data_wire
    # the port toward rank 0 carries data for all but a first frame's time and the last one's delay
    busy_ps = data_wire * 8 * 10**12 / RATE
    assert busy_ps / elapsed >= 0.98
    assert elapsed == pytest.approx(busy_ps + one_way_ps() + FRAME_PS, rel=0.002)
    # the senders waited for credit at their own ports, not in the switch
    stalls = sum(c["credit_stalls"] for d in results["devices"].values() if d["kind"] == "gpu_server"
                 for c in d["olink"].values())
    assert stalls > 0
    peak = max(c["replay_buffer_peak_bytes"] for c in switch["olink"].values())
    assert peak <= spec.DEFAULT_REPLAY_BUFFER


# -- link-level retry -----------------------------------------------------------------------------

def one_message(ber: float, size: int = 64 * MiB) -> dict:
    programs = [(Op(SEND, "s", peer=1, tag=0, nbytes=size, dim="tp"),),
                (Op(RECV, "r", peer=0, tag=0, nbytes=size, dim="tp"),)]
    text = supernode(1, 2, ber={"s0.0": ber} if ber else None)
    return run_scenario(job(text, ranks_of(1, 2), [], programs))


def test_below_the_fec_threshold_bit_errors_cost_nothing():
    clean, noisy = one_message(0.0), one_message(1e-5)
    assert noisy["job"]["iterations"] == clean["job"]["iterations"]
    link = noisy["devices"]["s0"]["olink"]["olink0"]
    assert link["replayed_frames"] == 0
    assert noisy["devices"]["sw"]["olink"]["p0"]["crc_errors"] == 0


def test_above_the_fec_threshold_replays_cost_what_the_go_back_model_says():
    ber, size = 7e-4, 64 * MiB
    clean, noisy = one_message(0.0, size), one_message(ber, size)
    sender = noisy["devices"]["s0"]["olink"]["olink0"]
    receiver = noisy["devices"]["sw"]["olink"]["p0"]
    frames = size // spec.DEFAULT_CHUNK
    # the number of CRC errors is what the FEC lets through, per frame: binomial around the mean
    p_frame = -math.expm1(frames and (spec.DEFAULT_CHUNK // spec.PACKET_PAYLOAD)
                          * math.log1p(-Fec(*spec.DEFAULT_FEC).packet_error_probability(ber, spec.PACKET_BYTES)))
    attempts = frames + sender["replayed_frames"]
    errors = receiver["crc_errors"]
    assert errors > 10
    assert abs(errors - p_frame * attempts) < 4 * math.sqrt(attempts * p_frame * (1 - p_frame))
    assert sender["naks_received"] == receiver["naks_sent"] > 0
    # go back N on the link: each NAK costs the bad frame and the one on the wire while the NAK comes
    # back (its round trip is well under a frame), so the message takes 2 more frame times per NAK
    # (errors in frames discarded anyway after a NAK cost nothing more)
    in_flight = 1 + -(-(2 * PROPAGATION_PS) // FRAME_PS)
    assert sender["replayed_frames"] == pytest.approx(in_flight * receiver["naks_sent"], rel=0.02)
    extra = noisy["job"]["iterations"][0]["time_ps"] - clean["job"]["iterations"][0]["time_ps"]
    assert extra == pytest.approx(sender["replayed_frames"] * FRAME_PS, rel=0.02)
    goodput = size * 8e12 / noisy["job"]["iterations"][0]["time_ps"]
    predicted = GOODPUT / (1 + in_flight * p_frame / (1 - p_frame))
    assert goodput == pytest.approx(predicted, rel=0.05)
    assert goodput < 0.9 * GOODPUT


# -- collectives over the switch ------------------------------------------------------------------

def test_ring_all_reduce_over_the_switch_matches_the_closed_form_within_one_percent():
    servers, gpus, size = 2, 4, 64 * MiB
    n = servers * gpus
    results = run_scenario(job(supernode(servers, gpus), ranks_of(servers, gpus), [tuple(range(n))],
                               [(collective(ALL_REDUCE, size),)] * n))
    measured = results["job"]["iterations"][0]["time_ps"]
    piece = -(-size // n)
    closed = 2 * (n - 1) * (serialization_ps(spec.wire_bytes(spec.PACKET_PAYLOAD) * piece // spec.PACKET_PAYLOAD,
                                             RATE) + one_way_ps())
    assert measured == pytest.approx(closed, rel=0.01)
    assert results["job"]["bytes"]["tp"]["scale_up"] == n * bytes_sent(ALL_REDUCE, size, n)


def test_in_network_all_reduce_sends_each_buffer_once_and_is_correspondingly_faster():
    servers, gpus, size = 2, 4, 64 * MiB
    n = servers * gpus
    runs = {
        enabled: run_scenario(job(supernode(servers, gpus, switch=f"in_network: {str(enabled).lower()}"),
                                  ranks_of(servers, gpus), [tuple(range(n))], [(collective(ALL_REDUCE, size),)] * n))
        for enabled in (False, True)
    }
    ring, innet = runs[False]["job"], runs[True]["job"]
    assert innet["status"] == "completed"
    per_gpu_ring = ring["bytes"]["tp"]["scale_up"] / n
    per_gpu_innet = innet["bytes"]["tp"]["scale_up"] / n
    assert per_gpu_innet == size
    assert per_gpu_innet / per_gpu_ring == pytest.approx(n / (2 * (n - 1)))  # about half
    # each GPU's port carries S out and S back at once: S at goodput plus one trip through the switch
    closed = serialization_ps(size // spec.PACKET_PAYLOAD * spec.PACKET_BYTES, RATE) + one_way_ps() + FRAME_PS
    assert innet["iteration_time_ps"] == pytest.approx(closed, rel=0.01)
    assert innet["iteration_time_ps"] / ring["iteration_time_ps"] == pytest.approx(n / (2 * (n - 1)), rel=0.02)
    switch = runs[True]["devices"]["sw"]["counters"]
    assert switch["reduced_chunks"] == size // spec.DEFAULT_CHUNK
    assert payload_received(runs[True]) > 0


@pytest.mark.parametrize("kind", [REDUCE_SCATTER, ALL_GATHER])
def test_in_network_reduce_scatter_and_all_gather_deliver_each_piece(kind):
    servers, gpus, size = 2, 4, 16 * MiB
    n = servers * gpus
    results = run_scenario(job(supernode(servers, gpus, switch="in_network: true"), ranks_of(servers, gpus),
                               [tuple(range(n))], [(collective(kind, size),)] * n))
    assert results["job"]["status"] == "completed"
    piece = size // n
    sent = size if kind == REDUCE_SCATTER else piece
    assert results["job"]["bytes"]["tp"]["scale_up"] == n * sent
    # what arrives at the GPUs: each its piece (reduce-scatter) or everyone else's (all-gather)
    received = piece if kind == REDUCE_SCATTER else (n - 1) * piece
    packets = received // spec.PACKET_PAYLOAD
    wire = received + packets * spec.PACKET_HEADER
    for device in ("s0", "s1"):
        for port in results["devices"][device]["ports"].values():
            assert port["rx_bytes"] >= wire
            assert port["rx_bytes"] - wire < 64 * 1024  # the rest is status frames


def test_all_to_all_and_p2p_in_a_supernode_are_counted_as_scale_up():
    servers, gpus, size = 2, 2, 8 * MiB
    n = servers * gpus
    op = Op(COLLECTIVE, "comm", collective="all-to-all", group=0, cid=0, nbytes=size, dim="ep", label="a2a")
    results = run_scenario(job(supernode(servers, gpus), ranks_of(servers, gpus), [tuple(range(n))], [(op,)] * n))
    assert results["job"]["status"] == "completed"
    assert results["job"]["bytes"]["ep"] == {"scale_up": n * bytes_sent("all-to-all", size, n), "fabric": 0, "wan": 0}


@pytest.mark.parametrize("partition", ["device"])
def test_a_supernode_job_is_the_same_in_every_partition(partition):
    servers, gpus, size = 2, 8, 4 * MiB
    n = servers * gpus
    programs = [(collective(ALL_REDUCE, size), Op(SEND, "p", peer=(r + 8) % n, tag=1, nbytes=size, dim="pp"),
                 Op(RECV, "q", peer=(r - 8) % n, tag=1, nbytes=size, dim="pp")) for r in range(n)]
    scenario = job(supernode(servers, gpus, ber={"s0.3": 8e-4}), ranks_of(servers, gpus), [tuple(range(n))],
                   programs)
    single = run_scenario(scenario)
    assert single["job"]["status"] == "completed"
    assert single["devices"]["sw"]["olink"]["p3"]["crc_errors"] > 0
    assert deterministic_view(run_scenario(scenario, partition=partition)) == deterministic_view(single)


def test_bad_olink_settings_get_a_one_line_error():
    text = supernode(1, 2, extra=", olink: {chunk: 1MiB, credit: 512KiB}")
    with pytest.raises(ScenarioError, match=r"s0.options.olink.credit.*cannot hold one OLink frame .*1048576 bytes"):
        parse_scenario(text)
    text = supernode(1, 2, extra=", olink: {chunk: 1MiB}", switch="replay_buffer: 1MiB")
    with pytest.raises(ScenarioError, match=r"sw.options.replay_buffer.*cannot hold one OLink frame"):
        parse_scenario(text)
    with pytest.raises(ScenarioError, match=r"fec.k"):
        parse_scenario(supernode(1, 2, switch="fec: {n: 10, k: 12, m: 8}"))
    tester = supernode(1, 2).replace("  sw: {kind: olink, ports: [p0, p1]",
                                     "  t: {kind: tester, ports: [x]}\n  sw: {kind: olink, ports: [p0, p1, p2]")
    with pytest.raises(ScenarioError, match=r"links\[2\].*t/x is not an OLink port, but sw/p2 is on an OLink switch"):
        parse_scenario(tester + "  - {name: t, a: t/x, z: sw/p2, rate: 400G, length: 2m}\n")
    planes = supernode(1, 2).replace("ports: [olink0, olink1]", "ports: [olink0-0, olink0-1, olink1]").replace(
        "ports: [p0, p1]", "ports: [p0, p1, p2]").replace("a: s0/olink0,", "a: s0/olink0-0,")
    planes += "  - {name: extra, a: s0/olink0-1, z: sw/p2, rate: 3.6T, length: 2m}\n"
    with pytest.raises(ScenarioError, match=r"devices.s0.ports: GPU 1 has 1 scale-up ports .* GPU 0 of s0 .* has 2"):
        parse_scenario(planes)
    wrong = supernode(1, 2).replace("sw: {kind: olink", "sw: {kind: switch").replace("options: {}}", "}")
    with pytest.raises(ScenarioError, match=r"s0/olink0 is a scale-up port, but sw/p0 is not on an OLink switch"):
        parse_scenario(wrong)


def test_a_link_that_goes_down_and_returns_loses_nothing_and_leaks_no_credit():
    size = 64 * MiB
    programs = [(Op(SEND, "s", peer=1, tag=0, nbytes=size, dim="tp"),),
                (Op(RECV, "r", peer=0, tag=0, nbytes=size, dim="tp"),)]
    faults = "faults:\n  - {at: 50us, link: s0.0, state: down}\n  - {at: 80us, link: s0.0, state: up}\n"
    clean = run_scenario(job(supernode(1, 2), ranks_of(1, 2), [], programs))
    cut = run_scenario(job(supernode(1, 2) + faults, ranks_of(1, 2), [], programs))
    assert cut["job"]["status"] == "completed"
    sender = cut["devices"]["s0"]["olink"]["olink0"]
    assert sender["replayed_frames"] > 0
    # the outage, the replayed frames and a microsecond or two of retraining, no more: the credit the
    # lost frames held came back, or the rest of the message would crawl
    delay = cut["job"]["iterations"][0]["time_ps"] - clean["job"]["iterations"][0]["time_ps"]
    assert 30_000_000 <= delay < 30_000_000 + sender["replayed_frames"] * FRAME_PS + 2_000_000


def test_a_scale_up_link_down_longer_than_detect_aborts_the_job_which_restarts_cleanly():
    servers, gpus, size = 2, 4, 64 * MiB
    n = servers * gpus
    faults = "faults:\n  - {at: 30us, link: s0.1, state: down}\n  - {at: 2ms, link: s0.1, state: up}\n"
    text = supernode(servers, gpus, switch="in_network: true") + faults
    ops = (collective(ALL_REDUCE, size),)
    scenario = job(text, ranks_of(servers, gpus), [tuple(range(n))], [ops] * n, iterations=2,
                   detect_ps=100_000_000, restart_ps=1_000_000_000)
    results = run_scenario(scenario)
    run = results["job"]
    assert run["status"] == "completed"
    # down at 30 us; seen after detect, known everywhere after detect more; the restart at 1.23 ms
    # finds the link still down and fails again; the next one, at 2.33 ms, runs
    stops = run["interruptions"]
    assert [s["cause"] for s in stops] == ["scale-up link olink1 down"] * 2
    assert [s["aborted_ps"] for s in stops] == [230_000_000, 1_330_000_000]
    assert [s["resumed_ps"] for s in stops] == [1_230_000_000, 2_330_000_000]
    # the switch let go of the half-done reductions, so the restarted iterations run at full speed
    assert results["devices"]["sw"]["counters"]["abandoned_chunks"] > 0
    clean = run_scenario(job(supernode(servers, gpus, switch="in_network: true"), ranks_of(servers, gpus),
                             [tuple(range(n))], [ops] * n, iterations=2))
    restarted = [it["time_ps"] for it in run["iterations"] if it["attempt"] == 2]
    assert restarted[-1] == pytest.approx(clean["job"]["iterations"][-1]["time_ps"], rel=0.01)
    assert deterministic_view(run_scenario(scenario, partition="device")) == deterministic_view(results)


@pytest.mark.parametrize("in_network", [False, True])
def test_point_to_point_data_never_waits_behind_a_collective_short_of_credit(in_network):
    # rank 0's all-reduce cannot finish until rank 1 joins, and rank 1 joins only after rank 0's send:
    # the send must get past the all-reduce's chunks (its own channel, its own credit)
    ar = Op(COLLECTIVE, "c", collective=ALL_REDUCE, group=0, cid=0, nbytes=8 * MiB, dim="tp")
    programs = [(ar, Op(SEND, "p", peer=1, tag=0, nbytes=4 * MiB, dim="pp")),
                (Op(RECV, "p", peer=0, tag=0, nbytes=4 * MiB, dim="pp"), dataclasses.replace(ar, deps=(0,)))]
    text = supernode(1, 2, switch=f"in_network: {str(in_network).lower()}", duration="2ms")
    assert run_scenario(job(text, ranks_of(1, 2), [(0, 1)], programs))["job"]["status"] == "completed"


def test_in_network_collectives_started_in_opposite_orders_both_complete():
    def ar(stream: str, cid: int, deps: tuple[int, ...] = ()) -> Op:
        return Op(COLLECTIVE, stream, deps=deps, collective=ALL_REDUCE, group=0, cid=cid, nbytes=4 * MiB, dim="tp")

    wait = Op("compute", "x", flops=10**12)
    programs = [(ar("a", 0), wait, ar("b", 1, deps=(1,))), (ar("b", 1), wait, ar("a", 0, deps=(1,)))]
    results = run_scenario(job(supernode(1, 2, switch="in_network: true", duration="3ms"), ranks_of(1, 2), [(0, 1)],
                               programs))
    assert results["job"]["status"] == "completed"
    switch = results["devices"]["sw"]["counters"]
    assert switch["reduced_chunks"] == 2 * 4 * MiB // spec.DEFAULT_CHUNK
    # the first arrivals of each waited in the reduction engine for the late member's
    assert switch["reduction_peak_bytes"] >= 4 * MiB


TWO_TIERS = """version: 0
name: two-tiers
duration: 5ms
supernodes:
  sn: {gpus: 16, radix: 8, server_options: {gpus: 4}}
"""


def test_a_trunk_down_longer_than_detect_under_the_jobs_traffic_aborts_the_job_which_restarts_cleanly():
    # l0.up0 fails with frames queued on it; sp0 reaches leaf 0's four GPUs only over it, and the
    # other leaves keep sending it their share of the ring
    n, size = 16, 16 * MiB
    ops = (collective(ALL_REDUCE, size),)
    ranks = [(f"sn-s{s}", g) for s in range(4) for g in range(4)]
    faults = "faults:\n  - {at: 30us, link: sn-l0.up0, state: down}\n  - {at: 2ms, link: sn-l0.up0, state: up}\n"
    scenario = job(TWO_TIERS + faults, ranks, [tuple(range(n))], [ops] * n, iterations=2,
                   detect_ps=100_000_000, restart_ps=1_000_000_000)
    results = run_scenario(scenario)
    run = results["job"]
    assert run["status"] == "completed"
    # as for a GPU's own link: seen after detect, known everywhere after detect more; the restart
    # finds the trunk still down and fails again; the next one runs
    (first, second) = stops = run["interruptions"]
    assert first["device"] == "sn-l0" and first["cause"].startswith("scale-up trunk up0 down: ")
    assert first["cause"].endswith(" frames of the job stuck on it")
    assert (second["device"], second["cause"]) == ("sn-sp0", "scale-up trunk p0 down: 4 GPUs of the job out of reach")
    assert [s["aborted_ps"] for s in stops] == [230_000_000, 1_330_000_000]
    assert [s["resumed_ps"] for s in stops] == [1_230_000_000, 2_330_000_000]
    clean = run_scenario(job(TWO_TIERS, ranks, [tuple(range(n))], [ops] * n, iterations=2))
    restarted = [it["time_ps"] for it in run["iterations"] if it["attempt"] == 2]
    assert restarted[-1] == pytest.approx(clean["job"]["iterations"][-1]["time_ps"], rel=0.01)
    assert deterministic_view(run_scenario(scenario, partition="device")) == deterministic_view(results)


def test_a_trunk_the_jobs_traffic_does_not_need_is_not_the_jobs_failure():
    # every rank under leaf 0: nothing of the job crosses a spine
    ops = (collective(ALL_REDUCE, 16 * MiB),)
    ranks = [("sn-s0", g) for g in range(4)]
    fields = {"iterations": 2, "detect_ps": 100_000_000, "restart_ps": 1_000_000_000}
    clean = run_scenario(job(TWO_TIERS, ranks, [tuple(range(4))], [ops] * 4, **fields))
    faults = "faults:\n  - {at: 30us, link: sn-l0.up0, state: down}\n"
    cut = run_scenario(job(TWO_TIERS + faults, ranks, [tuple(range(4))], [ops] * 4, **fields))
    assert cut["job"]["interruptions"] == [] and measured(cut["job"]) == measured(clean["job"])


@pytest.mark.parametrize("outage", [
    "{at: 30us, link: sn-l1.up2, state: down}\n  - {at: 90us, link: sn-l1.up2, state: up}",
    "{at: 4ms, link: sn-l1.up2, state: down}",
    "{at: 4ms, link: sn-s1.olink2, state: down}"])
def test_an_outage_shorter_than_detect_or_after_the_job_is_unseen_by_the_job(outage):
    n, size = 16, 16 * MiB
    ops = (collective(ALL_REDUCE, size),)
    ranks = [(f"sn-s{s}", g) for s in range(4) for g in range(4)]
    fields = {"iterations": 2, "detect_ps": 100_000_000, "restart_ps": 1_000_000_000}
    clean = run_scenario(job(TWO_TIERS, ranks, [tuple(range(n))], [ops] * n, **fields))
    done_ps = clean["job"]["iterations"][-1]["end_ps"]
    assert done_ps < 4_000_000_000
    results = run_scenario(job(TWO_TIERS + f"faults:\n  - {outage}\n", ranks, [tuple(range(n))], [ops] * n, **fields))
    assert results["job"]["status"] == "completed" and results["job"]["interruptions"] == []
    trunk = results["devices"]["sn-l1"]["olink"]["up2"]
    if "90us" in outage:  # retrained and replayed: late, having moved the same bytes
        assert trunk["replayed_frames"] > 0
        assert results["job"]["iterations"][-1]["end_ps"] > done_ps
        assert results["job"]["bytes_per_iteration"] == clean["job"]["bytes_per_iteration"]
    else:
        assert measured(results["job"]) == measured(clean["job"])


@pytest.mark.parametrize("link", ["sn-s0.olink1", "sn-l0.up0"])
def test_a_flap_when_the_job_restarts_is_retrained_like_any_short_outage(link):
    # a first outage aborts the job (restart at 1.23 ms); a 10 us flap around the restart is shorter
    # than detect: the restarted job must not fail for it
    n = 16
    ops = (collective(ALL_REDUCE, 16 * MiB),)
    ranks = [(f"sn-s{s}", g) for s in range(4) for g in range(4)]
    faults = (f"faults:\n  - {{at: 30us, link: {link}, state: down}}\n  - {{at: 150us, link: {link}, state: up}}\n"
              f"  - {{at: 1225us, link: {link}, state: down}}\n  - {{at: 1235us, link: {link}, state: up}}\n")
    run = run_scenario(job(TWO_TIERS + faults, ranks, [tuple(range(n))], [ops] * n, iterations=2,
                           detect_ps=100_000_000, restart_ps=1_000_000_000))["job"]
    assert run["status"] == "completed"
    assert [s["resumed_ps"] for s in run["interruptions"]] == [1_230_000_000]


def test_the_default_replay_timeout_follows_a_new_rate():
    # at 100G a 64 KiB frame takes 5.4 us, longer than the whole timeout derived for 3.6T: a timeout
    # left at the old rate would replay every frame
    size = 16 * MiB
    programs = [(Op(SEND, "s", peer=1, tag=0, nbytes=size, dim="tp"),),
                (Op(RECV, "r", peer=0, tag=0, nbytes=size, dim="tp"),)]
    faults = "faults:\n" + "".join(f"  - {{at: 10us, link: s0.{g}, rate: 100G}}\n" for g in range(2))
    results = run_scenario(job(supernode(1, 2) + faults, ranks_of(1, 2), [], programs))
    assert results["job"]["status"] == "completed"
    for name, device in (("olink0", "s0"), ("olink1", "s0"), ("p0", "sw"), ("p1", "sw")):
        port = results["devices"][device]["olink"][name]
        assert port["replay_timeouts"] == 0 and port["replayed_frames"] == 0, (device, name, port)
    # the rest of the message at the new rate's payload throughput
    slow = 100e9 * spec.PACKET_PAYLOAD / spec.PACKET_BYTES
    took = results["job"]["iterations"][0]["time_ps"]
    assert took == pytest.approx(10e6 + (size - 10e-6 * GOODPUT / 8) * 8 / slow * 1e12, rel=0.02)


@pytest.mark.parametrize("at_ns", [95_997, 184_043, 267_455, 150_000])
def test_a_faster_rate_shortens_the_replay_timeout_only_once_the_old_one_has_passed(at_ns):
    # 100G to 3.6T mid-message: frames sent at 100G, and acknowledgements batched at 100G, may take
    # the old timeout; a timeout shortened at once would replay them for nothing
    size = 4 * MiB
    programs = [(Op(SEND, "s", peer=1, tag=0, nbytes=size, dim="tp"),),
                (Op(RECV, "r", peer=0, tag=0, nbytes=size, dim="tp"),)]
    faults = "faults:\n" + "".join(f"  - {{at: {at_ns}ns, link: s0.{g}, rate: 3.6T}}\n" for g in range(2))
    text = supernode(1, 2).replace("rate: 3.6T", "rate: 100G") + faults
    results = run_scenario(job(text, ranks_of(1, 2), [], programs))
    assert results["job"]["status"] == "completed"
    for name, device in (("olink0", "s0"), ("olink1", "s0"), ("p0", "sw"), ("p1", "sw")):
        port = results["devices"][device]["olink"][name]
        assert port["replay_timeouts"] == 0 and port["replayed_frames"] == 0, (device, name, port)
