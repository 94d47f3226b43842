"""The RDMA NIC transport against closed forms: goodput vs header overhead, go-back-N cost of bit
errors, retry exhaustion, DCQCN arithmetic, window resizing and dual-plane failover."""

from __future__ import annotations

import math
from typing import Any

import pytest

from emulators.kernel.vtime import PS_PER_MS, PS_PER_S, PS_PER_US
from emulators.rdma.dcqcn import RateControl
from emulators.rdma.intervals import IntervalSet
from emulators.rdma.settings import PACKET_OVERHEAD_BYTES, NicSettings
from emulators.runtime import HostRuntime
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import run_text, two_testers

GBPS = 10**9
MTU = 4096
PAYLOAD_SHARE = MTU / (MTU + PACKET_OVERHEAD_BYTES)  # 4096 / 4178


def rdma_pair(*, length: str = "100m", ber: float | str = 0, message: str = "256MiB", rdma: str = "{}",
              duration: str = "20ms", faults: str = "", sample: str = "1ms") -> str:
    return two_testers(
        length=length, ber=ber, duration=duration, sample=sample, options=f"{{rdma: {rdma}}}",
        flows=f"  - {{name: f, src: ta/p0, dst: tb/p0, transport: rdma, bytes: {message}}}", faults=faults,
    )


def flow_of(results: dict[str, Any], name: str = "f") -> dict[str, Any]:
    flow: dict[str, Any] = results["flows"][name]
    return flow


def test_back_to_back_goodput_is_line_rate_minus_headers_within_one_percent() -> None:
    f = flow_of(run_text(rdma_pair()))
    ideal = 400 * GBPS * PAYLOAD_SHARE
    assert f["state"] == "complete" and f["undelivered_bytes"] == 0 and f["retx_bytes"] == 0
    assert abs(f["goodput_bps"] / ideal - 1) < 0.01, f["goodput_bps"]
    # every frame is acknowledged once; none is resent
    assert f["acks_sent"] == f["tx_frames"] == 256 * 2**20 // (64 * 1024)


def test_an_odd_message_arrives_exactly_once_in_whole_packets() -> None:
    f = flow_of(run_text(rdma_pair(message="1000003B")))
    assert f["rx_payload_bytes"] == 1000003 and f["rx_duplicate_bytes"] == 0
    assert f["tx_packets"] == math.ceil(1000003 / MTU)
    assert f["tx_wire_bytes"] == 1000003 + f["tx_packets"] * PACKET_OVERHEAD_BYTES


def go_back_n_run(length_km: int, recovery: str = "go-back-n") -> dict[str, Any]:
    rtt_ns = 2 * length_km * 4900 + 10_000  # told the path's round trip, so the window covers it
    return flow_of(run_text(rdma_pair(length=f"{length_km}km", ber="2e-9", message="1GiB", duration="120ms",
                                      rdma=f"{{rtt: {rtt_ns}ns, recovery: {recovery}}}")))


@pytest.fixture(scope="module")
def lossy_runs() -> dict[int, dict[str, Any]]:
    return {km: go_back_n_run(km) for km in (10, 50)}


@pytest.mark.parametrize("km", [10, 50])
def test_each_bit_error_costs_a_round_trip_of_data_under_go_back_n(lossy_runs: dict[int, dict[str, Any]],
                                                                   km: int) -> None:
    f = lossy_runs[km]
    assert f["state"] == "complete" and f["undelivered_bytes"] == 0
    rate = 400 * GBPS
    errors = f["naks_received"]
    assert errors > 5
    # go-back-N resends what was sent between the lost packet and the NAK's return: one round trip
    round_trip_ps = 2 * km * 1000 * 4900
    in_flight_per_rtt = rate * PAYLOAD_SHARE * round_trip_ps / (8 * PS_PER_S)
    assert f["retx_bytes"] == pytest.approx(errors * in_flight_per_rtt, rel=0.05)
    # so the transfer takes one round trip longer per error than the clean closed form
    clean_ps = 2**30 * 8 * PS_PER_S / (rate * PAYLOAD_SHARE)
    assert f["fct_ps"] == pytest.approx(clean_ps + errors * round_trip_ps + round_trip_ps / 2, rel=0.03)
    # and the errors are what the BER predicts (packets sent x packet error probability, 5 sigma)
    p = -math.expm1((MTU + PACKET_OVERHEAD_BYTES) * 8 * math.log1p(-2e-9))
    expected = f["tx_packets"] * p
    assert abs(f["corrupt_packets"] - expected) < 5 * math.sqrt(expected) + 1


def test_go_back_n_loss_grows_with_length_at_equal_ber(lossy_runs: dict[int, dict[str, Any]]) -> None:
    loss = {km: 1 - f["goodput_bps"] / (400 * GBPS * PAYLOAD_SHARE) for km, f in lossy_runs.items()}
    assert loss[50] > 2 * loss[10] > 0


def test_selective_repeat_resends_only_what_was_lost() -> None:
    gbn, sr = go_back_n_run(50), go_back_n_run(50, "selective-repeat")
    assert sr["state"] == "complete" and sr["undelivered_bytes"] == 0
    # at most the rest of the frame holding the corrupted packet is resent per error
    assert sr["retx_bytes"] <= sr["naks_received"] * 64 * 1024
    assert sr["goodput_bps"] > gbn["goodput_bps"]


def outage(down_for: str) -> dict[str, Any]:
    return run_text(rdma_pair(
        message="512MiB", duration="30ms", rdma="{rto: 200us, retries: 3}",
        faults=f"  - {{at: 2ms, link: l, state: down}}\n  - {{at: {2000 + int(down_for)}us, link: l, state: up}}",
    ))


def test_a_link_down_longer_than_the_retries_errors_the_qp_with_flow_and_time() -> None:
    results = outage("2000")
    f = flow_of(results)
    assert f["state"] == "error" and f["timeouts"] == 4
    [event] = [e for e in results["qp_events"] if e["kind"] == "qp_error"]
    assert event["flow"] == "f" and event["device"] == "ta" and "retry" in event["reason"]
    # the last ACK came just before the cut; then rto x (retries + 1) passes without one
    assert 2 * PS_PER_MS + 4 * 200 * PS_PER_US - 20 * PS_PER_US < event["at_ps"] <= 2 * PS_PER_MS + 4 * 200 * PS_PER_US


def test_a_shorter_outage_recovers_without_error() -> None:
    results = outage("500")
    f = flow_of(results)
    assert f["state"] == "complete" and f["undelivered_bytes"] == 0
    assert f["timeouts"] >= 2 and not [e for e in results["qp_events"] if e["kind"] == "qp_error"]


def test_dcqcn_cut_and_recovery_follow_the_published_rules() -> None:
    settings = NicSettings(fast_recovery_steps=5, ai_rate_bps=40_000_000, byte_counter=10**9)
    timers: list[tuple[int, Any, Any]] = []
    rc = RateControl(settings, 400 * GBPS, lambda delay, handler, arg: timers.append((delay, handler, arg)))
    rc.on_cnp(0)  # alpha starts at 1: the first cut halves the rate
    assert rc.rate_bps == 200 * GBPS and rc.target_bps == 400 * GBPS
    assert rc.alpha == 1.0
    delay, rate_timer, generation = timers[-1]
    assert delay == settings.rate_timer_ps
    # fast recovery: each of the first F timer events halves the distance to the target
    for step in range(1, settings.fast_recovery_steps):
        rate_timer(generation)
        assert rc.rate_bps == 400 * GBPS - 200 * GBPS // 2**step and rc.target_bps == 400 * GBPS
    # a CNP three alpha periods later: the cut uses alpha decayed three times, then alpha rises by g
    rate = rc.rate_bps
    rc.on_cnp(3 * settings.alpha_timer_ps + 1)
    g = settings.dcqcn_g
    assert rc.alpha == pytest.approx((1 - g) ** 4 + g)
    assert rc.rate_bps == int(rate * (1 - (1 - g) ** 3 / 2)) and rc.target_bps == rate
    # after F timer events without a CNP: additive increase of the target by R_AI per event
    generation = timers[-1][2]
    for _ in range(settings.fast_recovery_steps):
        rc._rate_timer(generation)
    target = rc.target_bps
    rc._rate_timer(generation)
    assert rc.target_bps == target + settings.ai_rate_bps and rc.cuts == 2


def test_the_window_grows_when_the_network_reports_a_longer_path() -> None:
    """A NIC that believes the path is 10 us long is window-bound on 50 km; told the real round
    trip (what a gateway does with PATH_INFO), it fills the link."""
    scenario = parse_scenario(rdma_pair(length="50km", message="4GiB", duration="40ms", rdma="{rtt: 10us}"), "<t>")
    host = HostRuntime(scenario, "all", {d.name: "all" for d in scenario.devices})
    host.start()
    host.advance(10 * PS_PER_MS)
    nic = host.devices["ta"].nics[0]  # type: ignore[attr-defined]
    window = nic.qps[0].window_bytes
    before = host.devices["tb"].counters["rdma_rx_payload_bytes"]
    host.advance(15 * PS_PER_MS)
    slow = (host.devices["tb"].counters["rdma_rx_payload_bytes"] - before) * 8 / 5e-3
    round_trip_s = 2 * 50_000 * 4900 / PS_PER_S
    assert slow == pytest.approx(window * 8 / round_trip_s, rel=0.05)  # one window per round trip
    nic.set_path_rtt(int(round_trip_s * PS_PER_S) + 20 * PS_PER_US)
    host.advance(20 * PS_PER_MS)
    before = host.devices["tb"].counters["rdma_rx_payload_bytes"]
    host.advance(25 * PS_PER_MS)
    fast = (host.devices["tb"].counters["rdma_rx_payload_bytes"] - before) * 8 / 5e-3
    assert fast == pytest.approx(400 * GBPS * PAYLOAD_SHARE, rel=0.01)


DUAL_PLANE = """
name: dual
duration: 15ms
sample_interval: 500us
devices:
  ta: {kind: tester, ports: [pa, pb], options: {nics: {nic: [pa, pb]}}}
  tb: {kind: tester, ports: [pa, pb], options: {nics: {nic: [pa, pb]}}}
links:
  - {name: plane-a, a: ta/pa, z: tb/pa, rate: 400G, length: 100m}
  - {name: plane-b, a: ta/pb, z: tb/pb, rate: 400G, length: 100m}
flows:
  - {name: f, src: ta/pa, dst: tb/pa, transport: rdma, bytes: 1GiB}
faults:
  - {at: 3ms, link: plane-a, state: down}
  - {at: 6ms, link: plane-a, state: up}
"""


def rate_per_sample(results: dict[str, Any], device: str, counter: str) -> list[float]:
    series = results["timeseries"][device]
    t, v = series["t_ps"], series[counter]
    return [(v[i + 1] - v[i]) * 8 * PS_PER_S / (t[i + 1] - t[i]) for i in range(len(t) - 1)]


def test_a_failed_plane_halves_throughput_without_a_qp_error_and_recovery_restores_it() -> None:
    results = run_text(DUAL_PLANE)
    f = flow_of(results)
    assert f["state"] == "complete" and f["undelivered_bytes"] == 0 and f["failovers"] == 1
    kinds = [e["kind"] for e in results["qp_events"]]
    assert kinds == ["failover", "restored"]
    rates = rate_per_sample(results, "tb", "rdma_rx_payload_bytes")  # per 500 us
    full = 800 * GBPS * PAYLOAD_SHARE
    assert rates[2] == pytest.approx(full, rel=0.01)  # 1.0-1.5 ms: both planes
    assert rates[8] == pytest.approx(full / 2, rel=0.01)  # 4.0-4.5 ms: plane a down
    assert rates[14] == pytest.approx(full, rel=0.01)  # 7.0-7.5 ms: restored


def test_interval_sets_count_each_byte_once() -> None:
    s = IntervalSet()
    assert s.add(0, 10) == 10 and s.add(20, 30) == 10 and s.add(5, 25) == 10 and s.add(0, 30) == 0
    assert (s.starts, s.ends) == ([0], [30])
    assert s.add(40, 50) == 10 and s.take_prefix(30) == 30 and len(s) == 1


def test_a_qp_that_cannot_send_at_all_still_runs_out_of_retries() -> None:
    """Data waiting on a dead link counts against the retry budget even with nothing in flight."""
    results = run_text(rdma_pair(message="1MiB", rdma="{rto: 200us, retries: 3}", duration="5ms",
                                 faults="  - {at: 0ps, link: l, state: down}"))
    f = flow_of(results)
    assert f["state"] == "error" and f["tx_frames"] == 0
    timeouts = [e["at_ps"] for e in results["qp_events"] if e["kind"] == "timeout"]
    [event] = [e for e in results["qp_events"] if e["kind"] == "qp_error"]
    assert event["at_ps"] == 4 * 200 * PS_PER_US
    assert timeouts == [k * 200 * PS_PER_US for k in (1, 2, 3)]  # every retry is on the record


def test_data_stranded_on_a_dead_plane_moves_when_the_other_plane_returns() -> None:
    both_down = DUAL_PLANE.replace("  - {at: 6ms, link: plane-a, state: up}",
                                   "  - {at: 4ms, link: plane-b, state: down}\n  - {at: 5ms, link: plane-a, state: up}")
    results = run_text(both_down.replace("duration: 15ms", "duration: 30ms"))
    f = flow_of(results)
    # 1 GiB over 784 Gb/s for 3 ms, nothing for 2 ms, then one plane: done well before any timeout
    assert f["state"] == "complete" and f["undelivered_bytes"] == 0 and f["timeouts"] == 0
    assert f["fct_ps"] < 20 * PS_PER_MS
    assert [(e["at_ps"], e["kind"]) for e in results["qp_events"]] == [
        (3 * PS_PER_MS, "failover"), (5 * PS_PER_MS, "failover"), (5 * PS_PER_MS, "restored")]


def test_a_line_rate_change_resizes_the_rate_limiter_and_window() -> None:
    results = run_text(rdma_pair(message="1GiB", duration="3ms", faults="  - {at: 1ms, link: l, rate: 100G}"))
    f = flow_of(results)
    assert f["rate_bps"] == 100 * GBPS
    rates = rate_per_sample_at(results)
    assert rates[2] == pytest.approx(100 * GBPS * PAYLOAD_SHARE, rel=0.01)


def rate_per_sample_at(results: dict[str, Any]) -> list[float]:
    return rate_per_sample(results, "tb", "rdma_rx_payload_bytes")


def test_dcqcn_alpha_keeps_decaying_after_the_rate_recovers() -> None:
    settings = NicSettings()
    rc = RateControl(settings, 400 * GBPS, lambda delay, handler, arg: None)
    rc.on_cnp(0)
    rc.limited = False  # as if recovered to line rate
    rc.rate_bps = rc.target_bps = 400 * GBPS
    rc.on_cnp(200 * PS_PER_MS)  # 200 ms later: alpha decayed for ~3,600 periods before this cut
    assert rc.alpha < 2 * settings.dcqcn_g
    assert rc.rate_bps > 399 * GBPS
