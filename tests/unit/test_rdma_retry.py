"""A queue pair's retransmit timer (emulators.rdma.retry) against the rules it models: the IB Local ACK
Timeout and retry count, ConnectX timer spread and adaptive retransmission, the excessive-retransmission
limit; then the same rules end to end on a dead link and a lossy one, the loader's refusals, and the
receiver's side of loss: corrupted feedback is dropped, and one NAK goes out per loss episode."""

from __future__ import annotations

import itertools
import re
from typing import Any, cast

import pytest

from emulators.kernel.frame import ACK, DATA, NAK, Frame
from emulators.kernel.port import Port
from emulators.kernel.rng import stream_for
from emulators.kernel.vtime import PS_PER_MS, PS_PER_US
from emulators.rdma.nic import NicOwner, RdmaNic
from emulators.rdma.path import Path
from emulators.rdma.receiver import FlowReceiver
from emulators.rdma.retry import RetryPolicy
from emulators.rdma.settings import PACKET_OVERHEAD_BYTES, AdpProfile, AdpRange, NicSettings
from orchestrator.results import deterministic_view
from orchestrator.scenario.loader import ScenarioError, parse_scenario
from tests.helpers import run_text, two_testers

RTO = 200 * PS_PER_US
TIME_BASE = 4 * PS_PER_US
# exponents 3, 4, 5 twice each; 8, 9 once each; 12 three times
RANGES = (AdpRange(3, 3, 2), AdpRange(8, 2, 1), AdpRange(12, 1, 3))


def fresh_path() -> Path:
    return Path(0, cast(Port, None), 0, 0, 0)  # the policy touches only the path's timer fields


def timer_sequence(policy: RetryPolicy, path: Path) -> tuple[list[int], str]:
    """Every timer the policy sets for an episode without progress, and why the QP then errors."""
    policy.start(path)
    timers = [path.arm_ps]
    while (reason := policy.expired(path)) is None:
        timers.append(path.arm_ps)
        assert len(timers) < 10_000, "the policy never gives up"
    return timers, reason


def adp_policy(init_low: int, init_size: int = 1, start_range: int = 0, seed: int = 1,
               spread: float = 1.0) -> RetryPolicy:
    profile = AdpProfile(TIME_BASE, init_low, init_size, RANGES, start_range)
    settings = NicSettings(adaptive_retransmission=profile, timer_spread=spread)
    return RetryPolicy(RTO, 3, settings, stream_for(seed, "qp-timer:f"))


# -- the policy on its own ------------------------------------------------------------------------


@pytest.mark.parametrize("retry_cnt", [0, 3, 7])
def test_the_ib_retry_count_allows_that_many_retries_of_the_local_ack_timeout(retry_cnt: int) -> None:
    policy = RetryPolicy(RTO, retry_cnt, NicSettings(), None)
    path = fresh_path()
    policy.start(path)
    assert path.arm_ps == RTO
    for retry in range(1, retry_cnt + 1):
        assert policy.expired(path) is None and path.retries == retry and path.arm_ps == RTO
    assert policy.expired(path) == (f"retry count exceeded: {retry_cnt} retries of 200 us "
                                    "without an acknowledgement")


def spread_timers(seed: int, count: int = 1000) -> list[int]:
    policy = RetryPolicy(RTO, count, NicSettings(timer_spread=4.0), stream_for(seed, "qp-timer:f"))
    timers, _ = timer_sequence(policy, fresh_path())
    return timers


def test_a_spread_timer_is_drawn_uniformly_between_nominal_and_spread_times_nominal() -> None:
    timers = spread_timers(seed=1)
    assert len(timers) == 1001 and all(RTO <= t <= 4 * RTO for t in timers)
    assert len(set(timers)) == len(timers)  # a fresh draw for every timeout
    # uniform on [1, 4] x nominal: mean 2.5 x (standard error 0.03 x over 1001 draws), both ends reached
    assert sum(timers) / len(timers) == pytest.approx(2.5 * RTO, rel=0.05)
    assert min(timers) < 1.01 * RTO and max(timers) > 3.99 * RTO
    assert spread_timers(seed=1) == timers and spread_timers(seed=2) != timers


@pytest.mark.parametrize(("init_low", "start_range", "exponents"), [
    (2, 0, [2, 3, 3, 4, 4, 5, 5, 8, 9, 12, 12, 12]),  # in no range: the start range, from its low
    (4, 0, [4, 4, 4, 5, 5, 8, 9, 12, 12, 12]),  # in range 0: carries on there from 4, 3 is never used
    (9, 0, [9, 9, 12, 12, 12]),  # in range 1: range 0 is skipped
    (6, 1, [6, 8, 9, 12, 12, 12]),  # between ranges: the start range
    (6, 0, [6, 3, 3, 4, 4, 5, 5, 8, 9, 12, 12, 12]),  # the start range begins at its low, even below
    (0, 2, [0, 12, 12, 12]),  # straight to the last range
])
def test_adaptive_retransmission_walks_the_profile_then_errors_when_it_is_spent(
        init_low: int, start_range: int, exponents: list[int]) -> None:
    """The initial timeout once, then each range's exponents ``retries`` times each up to the range's
    end, then the next range; the expiry of the last timer errors the QP (the IB retry count of 3
    plays no part)."""
    timers, reason = timer_sequence(adp_policy(init_low, start_range=start_range), fresh_path())
    assert timers == [TIME_BASE << e for e in exponents]
    assert reason == (f"adaptive retransmission profile exhausted after {len(exponents)} timeouts "
                      "without an acknowledgement")


def test_the_initial_exponent_is_drawn_from_init_low_for_init_size_values() -> None:
    policy = adp_policy(init_low=3, init_size=4)
    path = fresh_path()
    drawn = []
    for _ in range(200):  # each start is a new episode (after progress): a fresh draw
        policy.start(path)
        assert path.arm_ps == TIME_BASE << path.adp_exponent
        drawn.append(path.adp_exponent)
    assert set(drawn) == {3, 4, 5, 6}  # [init_low, init_low + init_size), every value reached
    assert all(25 < drawn.count(exponent) < 75 for exponent in (3, 4, 5, 6))  # uniformly: 50 each


def test_a_spread_stretches_each_adaptive_timer_by_at_most_the_spread() -> None:
    timers, _ = timer_sequence(adp_policy(init_low=2, spread=2.0), fresh_path())
    nominal = [TIME_BASE << e for e in (2, 3, 3, 4, 4, 5, 5, 8, 9, 12, 12, 12)]
    assert len(timers) == len(nominal)
    assert all(n <= t <= 2 * n for t, n in zip(timers, nominal, strict=True))
    assert timers != nominal


def test_the_excessive_retransmission_limit_is_off_by_default() -> None:
    policy = RetryPolicy(RTO, 7, NicSettings(), None)
    assert all(policy.retransmitted(0) is None for _ in range(1000))


@pytest.mark.parametrize(("spacing_us", "errors"), [(333, True), (334, False)])
def test_more_than_the_limit_within_the_period_errors_the_qp(spacing_us: int, errors: bool) -> None:
    """Limit 3 in 1 ms: four retransmissions s apart fit in the period when 3 x s < 1 ms."""
    policy = RetryPolicy(RTO, 7, NicSettings(retry_limit=3, retry_period_ps=PS_PER_MS), None)
    reasons = [policy.retransmitted(k * spacing_us * PS_PER_US) for k in range(50)]
    if errors:
        assert reasons[:3] == [None] * 3
        assert reasons[3] == "excessive retransmissions: 4 within 1 ms (limit 3)"
    else:
        assert reasons == [None] * 50


# -- end to end -----------------------------------------------------------------------------------


def run_pair(*, rdma: str, seed: int = 1, message: str = "1MiB", length: str = "100m", ber: str = "0",
             duration: str = "5ms", faults: str = "") -> dict[str, Any]:
    """Tester ta sends flow f to tb over link l over RDMA, with these NIC options on both."""
    return run_text(two_testers(
        length=length, ber=ber, duration=duration, options=f"{{rdma: {rdma}}}", seed=seed, faults=faults,
        flows=f"  - {{name: f, src: ta/p0, dst: tb/p0, transport: rdma, bytes: {message}}}"))


def dead_link_run(rdma: str, seed: int = 1) -> dict[str, Any]:
    """Flow f on a link that is down from the start and stays down: every timer runs out in full."""
    return run_pair(rdma=rdma, seed=seed, faults="  - {at: 0ps, link: l, state: down}")


def timer_record(results: dict[str, Any]) -> tuple[list[int], dict[str, Any]]:
    """When the QP timed out, and its qp_error event."""
    timeouts = [e["at_ps"] for e in results["qp_events"] if e["kind"] == "timeout"]
    [error] = [e for e in results["qp_events"] if e["kind"] == "qp_error"]
    return timeouts, error


ADP_RANGES = "[{low: 3, size: 3, retries: 2}, {low: 8, size: 2, retries: 1}]"


@pytest.mark.parametrize(("init_low", "start_range", "exponents"), [
    (4, 0, [4, 4, 4, 5, 5, 8, 9]),  # the initial timeout is in range 0
    (2, 1, [2, 8, 9]),  # in no range: the start range
])
def test_on_a_dead_link_the_timeouts_follow_the_adaptive_profile_exactly(
        init_low: int, start_range: int, exponents: list[int]) -> None:
    profile = (f"{{time_base: 4us, init_low: {init_low}, init_size: 1, ranges: {ADP_RANGES}, "
               f"start_range: {start_range}}}")
    results = dead_link_run(f"{{rto: 200us, retries: 3, adaptive_retransmission: {profile}}}")
    timeouts, error = timer_record(results)
    # each timer starts when the last one fired: the expiries are the running sums of the profile's timers
    assert [*timeouts, error["at_ps"]] == list(itertools.accumulate(TIME_BASE << e for e in exponents))
    f = results["flows"]["f"]
    assert f["state"] == "error" and f["timeouts"] == len(exponents) and f["tx_frames"] == 0
    assert error["reason"] == f["error"]["reason"] == (
        f"adaptive retransmission profile exhausted after {len(exponents)} timeouts without an acknowledgement")


def test_on_a_dead_link_spread_timeouts_fall_between_one_and_four_rto_and_repeat_exactly() -> None:
    spread = "{rto: 200us, retries: 3, timer_spread: 4}"
    results = dead_link_run(spread)
    timeouts, error = timer_record(results)
    expiries = [0, *timeouts, error["at_ps"]]
    gaps = [b - a for a, b in itertools.pairwise(expiries)]
    assert len(gaps) == 4 and all(RTO <= gap <= 4 * RTO for gap in gaps)  # the first timer and 3 retries
    assert len(set(gaps)) == 4
    assert error["reason"] == "retry count exceeded: 3 retries of 200 us without an acknowledgement"
    assert deterministic_view(dead_link_run(spread)) == deterministic_view(results)
    assert timer_record(dead_link_run(spread, seed=2))[0] != timeouts  # the draws are the seed's


def test_more_retransmissions_than_the_limit_within_the_period_error_the_flow() -> None:
    """At BER 1e-7 a 64 KiB chunk is hit ~5% of the time: the first six NAKs come well within 1 ms."""
    results = run_pair(rdma="{retry_limit: 5, retry_period: 1ms}", ber="1e-7", message="64MiB", duration="20ms")
    f = results["flows"]["f"]
    assert f["state"] == "error" and f["naks_received"] == 6 and f["timeouts"] == 0
    assert f["error"]["reason"] == "excessive retransmissions: 6 within 1 ms (limit 5)"
    assert f["error"]["at_ps"] < PS_PER_MS and f["undelivered_bytes"] > 0
    _, error = timer_record(results)
    assert error["at_ps"] == f["error"]["at_ps"] and error["reason"].startswith("excessive retransmissions")
    # the same link with a limit above every NAK the transfer needs: it completes
    relaxed = run_pair(rdma="{retry_limit: 100, retry_period: 1ms}", ber="1e-7", message="64MiB", duration="20ms")
    g = relaxed["flows"]["f"]
    assert g["state"] == "complete" and g["undelivered_bytes"] == 0 and 6 < g["naks_received"] <= 100


PROFILE = "time_base: 4us, init_low: 3, init_size: 1"


@pytest.mark.parametrize(("rdma", "where", "problem"), [
    ("{retry_limit: 5}", "retry_limit", "needs retry_period too"),
    ("{retry_period: 1ms}", "retry_period", "needs retry_limit too"),
    (f"{{adaptive_retransmission: {{{PROFILE}, ranges: [{{low: 8, size: 1, retries: 1}}, "
     "{low: 4, size: 2, retries: 2}]}}", "adaptive_retransmission.ranges[1]", "must rise and not overlap"),
    (f"{{adaptive_retransmission: {{{PROFILE}, ranges: [{{low: 3, size: 4, retries: 1}}, "
     "{low: 5, size: 2, retries: 2}]}}", "adaptive_retransmission.ranges[1]",
     "starts at exponent 5, before the range ahead of it ends (at 6)"),
    (f"{{adaptive_retransmission: {{{PROFILE}, ranges: [{{low: 30, size: 4, retries: 1}}]}}}}",
     "adaptive_retransmission.ranges[0].size", "exponents go up to 31"),
    (f"{{adaptive_retransmission: {{{PROFILE}, ranges: [{{low: 4, size: 1, retries: 1}}], start_range: 1}}}}",
     "adaptive_retransmission.start_range", "1 is past the 1 ranges"),
    ("{adaptive_retransmission: {time_base: 2us, init_low: 3, init_size: 1, ranges: [{low: 4, size: 1, retries: 1}]}}",
     "adaptive_retransmission.time_base", "below the 4us"),
    ("{timer_spread: 5}", "timer_spread", "the maximum is 4"),
])
def test_the_loader_refuses_incomplete_or_disordered_retry_options(rdma: str, where: str, problem: str) -> None:
    text = two_testers(options=f"{{rdma: {rdma}}}")
    with pytest.raises(ScenarioError, match=re.escape(f"devices.ta.options.rdma.{where}: ")) as refused:
        parse_scenario(text, "<t>")
    assert problem in str(refused.value)


# -- the receiver's side of loss ------------------------------------------------------------------


def test_corrupted_acks_and_naks_are_dropped_and_every_byte_still_arrives_once() -> None:
    """At BER 1e-5 an 84-byte control frame fails its CRC 0.67% of the time: thousands of ACKs lose
    dozens. A lost ACK is covered by the next (they are cumulative); a lost NAK by the timer."""
    results = run_pair(rdma="{mtu: 1024, chunk: 1KiB, rto: 100us}", ber="1e-5", message="4MiB", duration="50ms")
    f = results["flows"]["f"]
    corrupted = results["devices"]["ta"]["counters"]["rdma_corrupt_control_frames"]
    assert f["state"] == "complete" and f["undelivered_bytes"] == 0 and f["acked_bytes"] == 4 * 2**20
    assert f["rx_payload_bytes"] == 4 * 2**20 and f["rx_duplicate_bytes"] == 0
    lost_naks = f["naks_sent"] - f["naks_received"]  # a corrupted NAK never reaches the QP
    assert 0 < lost_naks < corrupted
    assert f["timeouts"] >= lost_naks  # each lost NAK leaves its episode to the timer


def test_a_go_back_n_receiver_sends_one_nak_per_loss_episode_on_a_long_link() -> None:
    """On 10 km a round trip holds ~73 chunks, all out of sequence after a loss until the resend
    arrives: one NAK for each episode, none for the frames behind it."""
    results = run_pair(rdma="{}", ber="1e-8", message="128MiB", length="10km", duration="20ms")
    f = results["flows"]["f"]
    assert f["state"] == "complete" and f["undelivered_bytes"] == 0 and f["timeouts"] == 0
    assert results["devices"]["ta"]["counters"]["rdma_corrupt_control_frames"] == 0
    assert 0 < f["naks_sent"] == f["naks_received"] <= f["corrupt_packets"]
    round_trip_ps = 2 * 10_000 * 4900
    chunk_ps = (64 * 1024 + 16 * PACKET_OVERHEAD_BYTES) * 8 * 10**12 // (400 * 10**9)
    assert f["out_of_sequence_frames"] == pytest.approx(f["naks_sent"] * round_trip_ps / chunk_ps, rel=0.05)


class Wire:
    """The receiving NIC's port: keeps what the NIC sends back."""

    name = "p0"

    def __init__(self) -> None:
        self.sent: list[Frame] = []

    def send(self, frame: Frame) -> bool:
        self.sent.append(frame)
        return True


class StillHost:
    """The device owning the receiving NIC: a clock at 0, counters, and every flow welcome."""

    now = 0

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def at(self, time_ps: int, handler: Any, arg: Any = None) -> None:
        raise AssertionError("a receiver sets no timers")

    def on_qp_error(self, qp: Any) -> None: ...

    def on_qp_complete(self, qp: Any) -> None: ...

    def on_delivered(self, receiver: FlowReceiver) -> None: ...

    def accepts(self, flow: int) -> bool:
        return True


def test_a_receiver_naks_each_loss_episode_once_even_when_the_resend_is_hit_again() -> None:
    """Two loss episodes in a scripted go-back-N exchange (16-packet chunks): two NAKs, though three
    frames were corrupted and three more arrived out of sequence."""
    settings = NicSettings()
    wire = Wire()
    nic = RdmaNic(cast(NicOwner, StillHost()), "nic", [cast(Port, wire)], [2 << 8], settings)

    def arrive(psn: int, packets: int = 16, corrupt_at: int = -1) -> None:
        frame = Frame(DATA, 0, 1 << 8, 2 << 8, packets * settings.wire_mtu, settings.wire_mtu, seq=psn)
        frame.offset = psn * settings.mtu
        if corrupt_at >= 0:
            frame.first_corrupt, frame.corrupt_packets = corrupt_at, 1
        nic.on_frame(cast(Port, wire), frame)

    arrive(0)
    arrive(16, corrupt_at=0)  # episode 1: NAK for 16
    arrive(32)
    arrive(48)  # out of sequence: dropped, no NAK
    arrive(16)
    arrive(32)
    arrive(48)  # the go-back-N resend
    arrive(64, corrupt_at=8)  # episode 2: packets 64-71 kept, NAK for 72
    arrive(80)  # out of sequence
    arrive(72, packets=8, corrupt_at=0)  # the resend is hit too: already asked, the sender's timer resends
    arrive(72, packets=8)
    arrive(80)
    replies = [(frame.kind, frame.seq) for frame in wire.sent]
    assert replies == [(ACK, 16), (NAK, 16), (ACK, 32), (ACK, 48), (ACK, 64), (NAK, 72), (ACK, 80), (ACK, 96)]
    rx = nic.results()["rx"]["0"]
    assert rx["naks_sent"] == 2 and rx["out_of_sequence_frames"] == 3 and rx["corrupt_packets"] == 3
    assert rx["rx_payload_bytes"] == 96 * settings.mtu and rx["rx_duplicate_bytes"] == 0
    assert nic.counters["rdma_rx_payload_bytes"] == 96 * settings.mtu
