"""The kernel against closed forms: serialisation, propagation, queueing, faults, sampling."""

from __future__ import annotations

import random

import pytest

from emulators.kernel.engine import Engine
from emulators.kernel.rng import stream_for
from emulators.kernel.vtime import emission_ps, serialization_ps
from tests.helpers import run_text, two_testers


@pytest.mark.parametrize(
    ("rate", "rate_bps", "length", "length_mm", "frame", "frame_bytes"),
    [
        ("400G", 400 * 10**9, "329km", 329_000_000, "1MiB", 1 << 20),
        ("100G", 100 * 10**9, "1m", 1_000, "1500B", 1500),
        ("25G", 25 * 10**9, "10cm", 100, "4KiB", 4096),
        ("800G", 800 * 10**9, "300km", 300_000_000, "64KiB", 65536),
        ("3G", 3 * 10**9, "7m", 7_000, "1001B", 1001),  # serialisation not a whole ps: rounds up
    ],
)
def test_latency_is_propagation_plus_serialisation_exactly(rate, rate_bps, length, length_mm, frame, frame_bytes):
    # offered at half the line rate so no frame ever waits behind another
    flows = f"  - {{name: f, src: ta/p0, dst: tb/p0, rate: {rate_bps // 2}, frame: {frame}, count: 3}}"
    r = run_text(two_testers(rate=rate, length=length, flows=flows, duration="2s"))
    expected = length_mm * 4900 // 1000 + -(-frame_bytes * 8 * 10**12 // rate_bps)
    lat = r["flows"]["f"]["latency_ps"]
    assert lat["count"] == 3
    assert lat["min"] == lat["max"] == expected


def test_serialisation_rounds_up_to_whole_picoseconds():
    assert serialization_ps(1001, 3 * 10**9) == 2_669_334  # 2_669_333.33 ps
    assert serialization_ps(65536, 400 * 10**9) == 1_310_720
    assert emission_ps(3, 1000, 3 * 10**9) == 8_000_000  # exact: no drift from repeated rounding


def test_offered_load_above_line_rate_queues_and_paces_at_line_rate():
    # 10 frames offered at 800G into a 400G link: frame i arrives at prop + (i+1)·ser
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 800G, frame: 1MiB, count: 10}"
    r = run_text(two_testers(rate="400G", length="1km", flows=flows))
    f = r["flows"]["f"]
    ser = serialization_ps(1 << 20, 400 * 10**9)
    assert f["first_rx_ps"] == 4_900_000 + ser
    assert f["last_rx_ps"] == 4_900_000 + 10 * ser
    assert f["throughput_bps"] == 400 * 10**9
    # frame i waited i·ser in the queue minus its later emission (i·ser/2)
    assert f["latency_ps"]["max"] == 4_900_000 + 10 * ser - emission_ps(9, 1 << 20, 800 * 10**9)
    assert r["devices"]["ta"]["ports"]["p0"]["queue_peak_bytes"] > 1 << 20


def test_event_order_depends_on_key_not_insertion():
    keys = [(t, dev, seq) for t in (5, 1, 3) for dev in (2, 0, 1) for seq in (1, 2)]
    orders = []
    for shuffle_seed in range(3):
        engine = Engine()
        seen: list[tuple[int, int, int]] = []
        shuffled = keys[:]
        random.Random(shuffle_seed).shuffle(shuffled)
        for k in shuffled:
            engine.schedule(*k, seen.append, k)
        engine.run_until(10)
        orders.append(seen)
    assert orders[0] == orders[1] == orders[2] == sorted(keys)


def test_a_planned_event_lands_by_its_key_whenever_it_was_scheduled():
    from emulators.kernel.device import Device

    def run(plan_late: bool) -> list[str]:
        engine = Engine()
        device = Device("d", 0, engine, seed=1)
        seen: list[str] = []
        if not plan_late:
            device.at_planned(10, 7, seen.append, "planned 7")
        device.at(10, seen.append, "first")
        device.at(5, lambda _: device.at(10, seen.append, "second"))
        if plan_late:  # as for a fault injected into a running scenario
            device.at(6, lambda _: device.at_planned(10, 7, seen.append, "planned 7"))
        device.at_planned(10, 3, seen.append, "planned 3")
        engine.run_until(20)
        return seen

    assert run(plan_late=False) == run(plan_late=True) == ["planned 3", "planned 7", "first", "second"]


def test_a_change_index_is_unique_at_its_time():
    engine = Engine()
    engine.add_change(10, 3, lambda: None)
    engine.add_change(11, 3, lambda: None)
    with pytest.raises(ValueError, match="index 3 is already on the timeline"):
        engine.add_change(10, 3, lambda: None)


def test_changes_apply_before_events_at_their_time_and_samples_before_changes():
    engine = Engine()
    log: list[str] = []
    engine.sample_every(10, lambda t: log.append(f"sample@{t}"))
    engine.add_change(10, 0, lambda: log.append("change@10"))
    engine.schedule(10, 0, 1, lambda _: log.append("event@10"), None)
    engine.schedule(5, 0, 2, lambda _: log.append("event@5"), None)
    engine.run_until(25)
    assert log == ["sample@0", "event@5", "sample@10", "change@10", "event@10", "sample@20"]


def test_change_at_window_end_waits_for_next_window():
    engine = Engine()
    log: list[int] = []
    engine.add_change(100, 0, lambda: log.append(engine.now))
    engine.run_until(100)
    assert log == [] and engine.next_time() == 100
    engine.run_until(101)
    assert log == [100]


def test_samples_record_counters_at_interval():
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 100G, frame: 125000B, count: 100}"  # one frame per 10 µs
    r = run_text(two_testers(rate="400G", length="0m", flows=flows, duration="1ms", sample="100us"))
    series = r["timeseries"]["ta"]
    assert series["t_ps"] == [i * 100_000_000 for i in range(11)]
    # a sample at T sees frames whose transmission ended before T: 2.5 µs serialisation each
    tx = series["p0.tx_frames"]
    assert tx[0] == 0 and tx[1] == 10 and tx[-1] == 100
    assert series["frames_sent"][1] == 10


def test_bytes_are_conserved_under_overflow_link_down_ber_and_truncation():
    # 2x oversubscribed into a small buffer, a link flap, bit errors, and a run that ends mid-flow
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 200G, frame: 64KiB, for: 6ms}"
    faults = "  - {at: 2ms, link: l, state: down}\n  - {at: 2500us, link: l, state: up}"
    r = run_text(two_testers(rate="100G", length="100km", ber="1e-7", flows=flows, faults=faults,
                             duration="5ms", options="{buffer: 1MiB}"))
    f = r["flows"]["f"]
    assert f["tx_drop_bytes"] > 0, "buffer overflow and link-down drops"
    assert f["lost_in_flight_bytes"] > 0, "frames on the fiber when it was cut"
    assert f["corrupt_bytes"] > 0
    assert f["in_flight_bytes"] > 0, "the run ended with frames queued and on the wire"
    assert f["unaccounted_bytes"] == 0
    assert f["tx_bytes"] == f["rx_bytes"] + f["tx_drop_bytes"] + f["lost_in_flight_bytes"] + f["in_flight_bytes"]
    port = r["devices"]["ta"]["ports"]["p0"]
    assert port["drop_bytes"] + port["down_drop_bytes"] == f["tx_drop_bytes"]
    assert r["devices"]["tb"]["ports"]["p0"]["lost_bytes"] == f["lost_in_flight_bytes"]


def test_measured_packet_loss_matches_ber_expectation():
    ber = 1e-6
    mtu = 4096
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 400G, frame: 1MiB, count: 400}"
    r = run_text(two_testers(ber=ber, flows=flows, options=f"{{mtu: {mtu}}}", duration="20ms"))
    f = r["flows"]["f"]
    packets = 400 * (1 << 20) // mtu
    p = 1 - (1 - ber) ** (mtu * 8)
    mean = packets * p
    sigma = (packets * p * (1 - p)) ** 0.5
    assert f["rx_packets"] + f["corrupt_packets"] == packets
    assert abs(f["corrupt_packets"] - mean) < 5 * sigma
    assert f["corrupt_bytes"] == f["corrupt_packets"] * mtu


def test_loss_differs_with_seed_but_repeats_with_the_same_seed():
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 400G, frame: 1MiB, count: 50}"
    runs = [run_text(two_testers(ber="1e-6", flows=flows, seed=s))["flows"]["f"]["corrupt_packets"]
            for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


def test_link_down_drops_then_recovers():
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 100G, frame: 125000B, for: 3ms}"  # 10 µs per frame
    faults = "  - {at: 1ms, link: l, state: down}\n  - {at: 2ms, link: l, state: up}"
    r = run_text(two_testers(rate="400G", length="100km", flows=flows, faults=faults, duration="5ms"))
    f = r["flows"]["f"]
    # 100 km = 490 µs of fiber at 10 µs per frame: 49 frames were on it when it was cut
    assert f["lost_in_flight_frames"] == 49
    assert f["tx_drop_frames"] == 100  # emitted during the 1 ms outage
    assert f["rx_frames"] == 300 - 100 - 49
    assert f["out_of_order"] == 0


def test_rate_change_takes_effect_for_following_frames():
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 400G, frame: 1MiB, count: 400}"
    faults = "  - {at: 1ms, link: l, rate: 100G}"
    r = run_text(two_testers(rate="400G", length="0m", flows=flows, faults=faults, duration="40ms",
                             options="{buffer: 1GiB}"))
    f = r["flows"]["f"]
    fast = serialization_ps(1 << 20, 400 * 10**9)
    slow = serialization_ps(1 << 20, 100 * 10**9)
    # frames keep pace with the 400G generator until 1 ms (48 finished by then: the 48th ends at
    # 48 x 20.97 us = 1.0066 ms, having started before the change), then leave one per 100G time
    before = -(-10**9 // fast)
    assert f["last_rx_ps"] == before * fast + (400 - before) * slow
    assert f["unaccounted_bytes"] == 0 and f["rx_frames"] == 400


def test_shorter_path_reorders_frames_in_flight():
    flows = "  - {name: f, src: ta/p0, dst: tb/p0, rate: 100G, frame: 125000B, for: 4ms}"
    faults = "  - {at: 2ms, link: l, length: 1km}"
    r = run_text(two_testers(rate="400G", length="300km", flows=flows, faults=faults, duration="8ms"))
    f = r["flows"]["f"]
    assert f["out_of_order"] > 0
    assert f["latency_ps"]["min"] == 4_900_000 + serialization_ps(125000, 400 * 10**9)
    assert f["rx_frames"] == 400


def test_rng_streams_are_stable_and_independent():
    a1 = stream_for(7, "link:l:a>z").random(4)
    a2 = stream_for(7, "link:l:a>z").random(4)
    b = stream_for(7, "link:l:z>a").random(4)
    assert (a1 == a2).all() and not (a1 == b).any()
