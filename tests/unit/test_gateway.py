"""The intelligent computing gateway against physics: a deep buffer that absorbs the WAN's round
trip and pushes back hop by hop (where a plain switch drops), fast CNPs that cut a sender in
microseconds instead of a WAN round trip, mice ahead of elephants on the WAN, and path information
that sizes NIC windows for the WAN."""

from __future__ import annotations

from typing import Any

import pytest

from emulators.ethernet.mmu import default_headroom
from emulators.gateway.device import Gateway
from emulators.kernel.frame import CONTROL_FRAME_BYTES, CONTROL_PRIORITY, DATA, PATH_INFO, Frame, address
from emulators.kernel.port import Port
from emulators.kernel.vtime import PS_PER_S, PS_PER_US, serialization_ps
from emulators.model.scenario import propagation_ps
from emulators.rdma.qp import QueuePair
from emulators.rdma.settings import WINDOW_BDPS, NicSettings
from emulators.runtime import HostRuntime
from emulators.tester import device as tester
from orchestrator.results import deterministic_view
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import run_text

G = 10**9
KIB = 1024
MIB = 1024 * KIB
FRAME = 64 * KIB
KM = 1_000_000  # mm


def scenario(devices: list[str], links: list[str], flows: list[str], faults: list[str] | None = None,
             duration: str = "2ms") -> str:
    def block(items: list[str]) -> str:
        return "\n".join(f"  - {i}" for i in items) if items else "  []"

    return (f"name: t\nseed: 1\nduration: {duration}\nsample_interval: 100us\ndevices:\n"
            + "\n".join(f"  {d}" for d in devices)
            + f"\nlinks:\n{block(links)}\nflows:\n{block(flows)}\nfaults:\n{block(faults or [])}\n")


def across_wan(flows: list[str], *, kind: str = "gateway", options: str = "", wan: str = "400G", length: str = "100km",
               far_rate: str = "400G", tester: str = "{}", duration: str = "2ms") -> str:
    """ta/p0 - gw-a/f0, gw-a/w0 - WAN - gw-b/w0, gw-b/f0 - tb/p0 (sites a and b)."""
    devices = [
        f"ta: {{kind: tester, site: a, ports: [p0], options: {tester}}}",
        f"tb: {{kind: tester, site: b, ports: [p0], options: {tester}}}",
        f"gw-a: {{kind: {kind}, site: a, ports: [f0, w0], options: {{{options}}}}}",
        f"gw-b: {{kind: {kind}, site: b, ports: [f0, w0], options: {{{options}}}}}",
    ]
    links = [
        "{name: la, a: ta/p0, z: gw-a/f0, rate: 400G, length: 10m}",
        f"{{name: wan, a: gw-a/w0, z: gw-b/w0, rate: {wan}, length: {length}}}",
        f"{{name: lb, a: gw-b/f0, z: tb/p0, rate: {far_rate}, length: 10m}}",
    ]
    return scenario(devices, links, flows, duration=duration)


def raw(name: str, src: str, dst: str, count: int, rate: str = "400G", start: str = "0s") -> str:
    return f"{{name: {name}, src: {src}, dst: {dst}, rate: {rate}, frame: 64KiB, count: {count}, priority: 3, " \
           f"start: {start}}}"


def drops(device: dict[str, Any]) -> int:
    return sum(v for k, v in device["counters"].items() if k.startswith("drop_"))


def in_flight_bytes(rate_bps: int, time_ps: int) -> int:
    return rate_bps * time_ps // (8 * PS_PER_S)


def runtime(text: str) -> HostRuntime:
    parsed = parse_scenario(text, "<test>")
    return HostRuntime(parsed, "h", {d.name: "h" for d in parsed.devices})


def gateway(host: HostRuntime, name: str) -> Gateway:
    device = host.devices[name]
    assert isinstance(device, Gateway)
    return device


def first_qp(host: HostRuntime, name: str) -> QueuePair:
    device = host.devices[name]
    assert isinstance(device, tester.Tester)
    return device.nics[0].qps[0]


# -- 1. deep buffer: lossless across the WAN, back-pressure hop by hop ------------------------------
PROP_100KM = propagation_ps(100 * KM)  # 490 us
XOFF = 128 * MIB


def test_the_deep_buffer_absorbs_a_wan_round_trip_and_pushes_back_hop_by_hop() -> None:
    # 400G into gw-b, 200G out toward tb: gw-b fills, pauses gw-a over 100 km, gw-a pauses ta
    flows = [raw("f", "ta/p0", "tb/p0", count=8000)]  # 524 MB in 10.5 ms, so the pause cycles repeat
    r = run_text(across_wan(flows, options="wan_ports: [w0]", far_rate="200G", tester="{buffer: 1GiB}",
                            duration="30ms"))
    a, b = r["devices"]["gw-a"], r["devices"]["gw-b"]
    f = r["flows"]["f"]
    # the defaults: deep buffer, slow pipeline, no ECN, PFC on DP, PP and mice, 128 MiB XOFF
    s = b["settings"]
    assert (s["buffer_bytes"], s["latency_ps"], s["ecn"], s["lossless_priorities"], s["pfc_xoff_bytes"]) == (
        4 * 1024 * MIB, 2 * PS_PER_US, False, [3, 4, 5], XOFF)
    assert s["wan_ports"] == ["w0"] and s["convergence"] == 0.5  # 200G fabric side : 400G WAN

    # lossless end to end
    assert drops(a) == drops(b) == 0
    assert f["rx_bytes"] == f["tx_bytes"] == 8000 * FRAME and f["tx_drop_bytes"] == 0
    assert f["unaccounted_bytes"] == 0
    # hop by hop: gw-b paused gw-a across the WAN, gw-a then paused the tester
    assert b["counters"]["pfc_xoff_sent"] > 0 and a["counters"]["pfc_pause_received"] > 0
    assert a["counters"]["pfc_xoff_sent"] > 0
    assert r["devices"]["ta"]["ports"]["p0"]["queue_peak_bytes"] > 30 * MIB, "the rest waited at the source"
    # gw-a held what the paused WAN could not take: its XOFF threshold and one frame more
    assert XOFF <= a["counters"]["wan_queue_peak_bytes"] <= XOFF + a["settings"]["pfc_headroom_bytes"]["f0"]

    # the WAN headroom covers a round trip at line rate, and what arrived after XOFF stayed inside it
    round_trip = 2 * PROP_100KM
    headroom = b["settings"]["pfc_headroom_bytes"]["w0"]
    assert headroom == default_headroom(400 * G, PROP_100KM) >= in_flight_bytes(400 * G, round_trip)
    after_xoff = b["counters"]["ingress_peak_bytes"] - XOFF
    assert after_xoff <= headroom
    # after XOFF gw-b kept receiving at 400G for a round trip while sending 200G on: 24.5 MB
    assert after_xoff == pytest.approx(in_flight_bytes(200 * G, round_trip), rel=0.02)
    estimate = in_flight_bytes(2 * 400 * G, PROP_100KM)  # 2 x rate x one-way propagation: 49 MB
    peak = b["counters"]["buffer_peak_bytes"]
    print(f"\ngw-b buffer high-water mark {peak / 1e6:.2f} MB: XOFF {XOFF / 1e6:.2f} MB + {after_xoff / 1e6:.2f} MB "
          f"after XOFF, of {headroom / 1e6:.2f} MB headroom (2 x rate x propagation {estimate / 1e6:.2f} MB); "
          f"delivered {f['throughput_bps'] / G:.1f} Gb/s")
    assert XOFF < peak <= XOFF + headroom
    # XON leaves more than a drain-rate round trip queued, so the far side never idles between pauses
    assert f["throughput_bps"] >= 0.98 * 200 * G


# -- 2. a plain switch cannot hold what a long WAN has in flight ------------------------------------
PROP_300KM = propagation_ps(300 * KM)  # 1.47 ms


def test_a_plain_switch_drops_what_a_long_wan_has_in_flight_where_a_gateway_does_not() -> None:
    flows = [raw("f", "ta/p0", "tb/p0", count=9000)]
    common: dict[str, Any] = {"length": "300km", "far_rate": "200G", "tester": "{buffer: 1GiB}", "duration": "40ms"}
    plain = run_text(across_wan(flows, kind="switch", **common))
    sw = plain["devices"]["gw-b"]
    f = plain["flows"]["f"]
    # the headroom the link needs (a 300 km round trip at 400G, 147 MB) is more than the whole buffer
    assert sw["settings"]["pfc_headroom_bytes"]["w0"] > sw["settings"]["buffer_bytes"] == 64 * MIB
    assert sw["counters"]["pfc_xoff_sent"] > 0, "the switch did pause its WAN peer ..."
    dropped = sw["counters"]["drop_buffer_bytes"]
    assert dropped > 0, "... but what was already in flight overflowed its buffer"
    assert sw["counters"]["buffer_peak_bytes"] == 64 * MIB
    assert f["lost_bytes"] == dropped == f["tx_bytes"] - f["rx_bytes"]

    deep = run_text(across_wan(flows, **common))
    gw = deep["devices"]["gw-b"]
    f = deep["flows"]["f"]
    assert drops(gw) == drops(deep["devices"]["gw-a"]) == 0
    assert f["rx_bytes"] == f["tx_bytes"] and f["unaccounted_bytes"] == 0
    after_xoff = gw["counters"]["ingress_peak_bytes"] - XOFF
    assert after_xoff == pytest.approx(in_flight_bytes(200 * G, 2 * PROP_300KM), rel=0.02)  # 73.5 MB
    print(f"\n300 km: switch dropped {dropped / 1e6:.2f} MB at {64 * MIB / 1e6:.1f} MB; "
          f"gateway held {gw['counters']['buffer_peak_bytes'] / 1e6:.2f} MB, none lost")


# -- 3. fast CNP ----------------------------------------------------------------------------------
def first_cut(options: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An RDMA flow from a 400G NIC into a 100G, 100 km WAN. Returns when the WAN queue at gw-a first
    held more than the fast-CNP threshold, when gw-a first ECN-marked, when the sender first cut its
    rate (its first CNP), and the counters."""
    text = across_wan(["{name: f, src: ta/p0, dst: tb/p0, transport: rdma, bytes: 256MiB}"], options=options,
                      wan="100G", duration="1500us")
    host = runtime(text)
    gw = gateway(host, "gw-a")
    qp = first_qp(host, "ta")
    seen: dict[str, Any] = {"crossed": None, "marked": None, "cut": None}
    wan = gw.port_index["w0"]
    enqueue = gw.enqueue
    on_cnp = qp.on_cnp

    def watch_queue(port: Port, frame: Frame) -> None:
        if (port.name == "w0" and frame.kind == DATA and seen["crossed"] is None
                and gw.mmu.egress[wan][frame.priority].queued > gw.fast_cnp_threshold):
            seen["crossed"] = gw.now
        enqueue(port, frame)
        if frame.ecn and seen["marked"] is None:
            seen["marked"] = gw.now

    def watch_cut(now: int) -> None:
        if seen["cut"] is None:
            seen["cut"] = now
        on_cnp(now)

    monkeypatch.setattr(gw, "enqueue", watch_queue)
    monkeypatch.setattr(qp, "on_cnp", watch_cut)
    host.start()
    host.advance(host.scenario.duration_ps)
    results = host.results()["devices"]
    seen.update(gw=gw.counters, sender=qp.results(), receiver=results["tb"]["flows_rx"]["f"],
                settings=results["gw-a"]["settings"])
    return seen


def test_fast_cnp_cuts_the_sender_within_microseconds_not_a_wan_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = first_cut("", monkeypatch)
    wan_rtt = 2 * PROP_100KM
    assert fast["settings"]["convergence"] == 4.0  # 400G fabric side : 100G WAN
    assert fast["gw"]["fast_cnps_sent"] > 0 and fast["gw"]["ecn_marked_frames"] == 0
    assert fast["sender"]["cnps_received"] == fast["gw"]["fast_cnps_sent"] > 0  # ECN off: every CNP was fast
    assert fast["receiver"]["cnps_sent"] == 0
    fast_reaction = fast["cut"] - fast["crossed"]
    assert 0 < fast_reaction < 2 * PS_PER_US  # the CNP crosses one 10 m link: a few hundred ns at most
    # the rate settled near the WAN's, so the WAN queue stayed near the threshold, far below XOFF
    assert fast["sender"]["rate_bps"] < 200 * G
    assert fast["gw"]["wan_queue_peak_bytes"] < 2 * fast["settings"]["fast_cnp_threshold_bytes"]

    monkeypatch.undo()
    end_to_end = first_cut("fast_cnp: false, ecn: true", monkeypatch)
    assert end_to_end["gw"]["fast_cnps_sent"] == 0 and end_to_end["receiver"]["cnps_sent"] > 0
    # the mark crosses the WAN to the far NIC, whose CNP crosses it back
    e2e_reaction = end_to_end["cut"] - end_to_end["marked"]
    assert e2e_reaction >= wan_rtt
    assert fast["cut"] < end_to_end["cut"] and fast_reaction < e2e_reaction
    print(f"\nfirst rate cut: fast CNP {fast['cut'] / 1e6:.2f} us ({fast_reaction / 1e3:.0f} ns after the WAN "
          f"queue passed {fast['settings']['fast_cnp_threshold_bytes'] / MIB:.0f} MiB); ECN end to end "
          f"{end_to_end['cut'] / 1e6:.2f} us ({e2e_reaction / 1e6:.1f} us after the first mark; "
          f"WAN RTT {wan_rtt / 1e6:.0f} us)")


# -- 4. mice first --------------------------------------------------------------------------------
def mice_run(options: str, elephant: bool) -> dict[str, Any]:
    """An elephant (600 x 64 KiB at 400G) and a mouse (20 x 64 KiB at 50G, from 1.5 ms) share a 100G,
    10 km WAN, both DP (priority 3). The testers send raw frames, so fast CNPs are off."""
    devices = [
        "ta: {kind: tester, site: a, ports: [p0, p1]}",
        "tb: {kind: tester, site: b, ports: [p0, p1]}",
        f"gw-a: {{kind: gateway, site: a, ports: [f0, f1, w0], options: {{fast_cnp: false, {options}}}}}",
        f"gw-b: {{kind: gateway, site: b, ports: [f0, f1, w0], options: {{fast_cnp: false, {options}}}}}",
    ]
    links = [f"{{name: l{s}{i}, a: {'ta' if s == 'a' else f'gw-{s}'}/{'p' if s == 'a' else 'f'}{i}, "
             f"z: {f'gw-{s}' if s == 'a' else 'tb'}/{'f' if s == 'a' else 'p'}{i}, rate: 400G, length: 10m}}"
             for s in "ab" for i in range(2)]
    links.append("{name: wan, a: gw-a/w0, z: gw-b/w0, rate: 100G, length: 10km}")
    flows = [raw("mouse", "ta/p1", "tb/p1", count=20, rate="50G", start="1500us")]
    if elephant:
        flows.append(raw("elephant", "ta/p0", "tb/p0", count=600))
    return run_text(scenario(devices, links, flows, duration="5ms"))


def test_mice_cross_a_loaded_wan_at_their_unloaded_latency() -> None:
    alone = mice_run("", elephant=False)["flows"]["mouse"]["latency_ps"]
    r = mice_run("", elephant=True)
    mouse, elephant = r["flows"]["mouse"], r["flows"]["elephant"]
    gw = r["devices"]["gw-a"]
    assert gw["settings"]["wan_ports"] == ["w0"] and gw["settings"]["convergence"] == 8.0  # found by itself
    assert gw["flows"]["mouse"] == {"bytes": 20 * FRAME, "class": "mice", "traffic_class": "DP", "priority": 3}
    assert gw["flows"]["elephant"]["class"] == "elephant" and gw["counters"]["elephant_flows"] == 1
    assert gw["counters"]["mice_bytes"] == 20 * FRAME + 10 * MIB  # the mouse, and the elephant's first 10 MiB
    assert gw["counters"]["dp_bytes"] == 620 * FRAME
    assert r["devices"]["gw-b"]["counters"]["priority_restored_frames"] == gw["counters"]["mice_lifted_frames"]
    assert mouse["unaccounted_bytes"] == elephant["unaccounted_bytes"] == 0
    # the mouse waits at most for the elephant frame already on the WAN wire
    wan_frame = serialization_ps(FRAME, 100 * G)
    assert alone["min"] <= mouse["latency_ps"]["min"] <= mouse["latency_ps"]["max"] <= alone["max"] + wan_frame
    # while the elephant queues behind about 16 MiB at 100G
    assert elephant["latency_ps"]["p50"] > 1000 * PS_PER_US > 10 * mouse["latency_ps"]["max"]
    fifo = mice_run("mice_first: false", elephant=True)["flows"]["mouse"]["latency_ps"]
    assert fifo["min"] > 1000 * PS_PER_US, "without mice first the mouse queues behind the elephant"
    print(f"\nmouse latency: alone {alone['max'] / 1e6:.1f} us, beside an elephant "
          f"{mouse['latency_ps']['max'] / 1e6:.1f} us (mice first) / {fifo['p50'] / 1e6:.0f} us (FIFO); "
          f"elephant p50 {elephant['latency_ps']['p50'] / 1e6:.0f} us")


# -- 5. path information ---------------------------------------------------------------------------
CLIENT_KM = 1
LINE_BER_E18 = 10**6  # 1e-12


def through_line(line: str, options: str = "", faults: list[str] | None = None) -> str:
    """ta - gw-a - (1 km) - ra ~ line ~ rb - (1 km) - gw-b - tb, with plain switches standing in for
    the OTN nodes; the line's BER is 1e-12. The gateways' latency is spelled out because the
    topology's path delay (what the QP starts from) reads it from the options, not the kind's default."""
    options = f"latency: 2us, {options}"
    devices = [
        "ta: {kind: tester, site: a, ports: [p0]}",
        "tb: {kind: tester, site: b, ports: [p0]}",
        f"gw-a: {{kind: gateway, site: a, ports: [f0, w0], options: {{{options}}}}}",
        f"gw-b: {{kind: gateway, site: b, ports: [f0, w0], options: {{{options}}}}}",
        "ra: {kind: switch, ports: [c, l]}",
        "rb: {kind: switch, ports: [c, l]}",
    ]
    links = [
        "{name: la, a: ta/p0, z: gw-a/f0, rate: 400G, length: 10m}",
        f"{{name: ca, a: gw-a/w0, z: ra/c, rate: 400G, length: {CLIENT_KM}km}}",
        f"{{name: line, a: ra/l, z: rb/l, rate: 400G, length: {line}, ber: 1e-12}}",
        f"{{name: cb, a: rb/c, z: gw-b/w0, rate: 400G, length: {CLIENT_KM}km}}",
        "{name: lb, a: gw-b/f0, z: tb/p0, rate: 400G, length: 10m}",
    ]
    flows = ["{name: f, src: ta/p0, dst: tb/p0, transport: rdma, bytes: 1MiB}"]
    return scenario(devices, links, flows, faults, duration="300us")


def wan_rtt(line_mm: int) -> int:
    """What the gateway reports: the propagation from its WAN port to the far gateway, both ways."""
    return 2 * (propagation_ps(line_mm) + 2 * propagation_ps(CLIENT_KM * KM))


def path_rtt(line_mm: int) -> int:
    """The QP's own round trip from the topology: the WAN's plus the site links and the pipelines of
    the two gateways (2 us) and the two stand-in switches (600 ns), both ways."""
    return wan_rtt(line_mm) + 4 * propagation_ps(10_000) + 2 * (2 * 2 * PS_PER_US + 2 * 600_000)


def window_for(rtt_ps: int, hops: int = 5) -> int:
    """A 400G QP's window for a round trip (hops: the links its chunks cross, each storing one)."""
    settings = NicSettings()
    return WINDOW_BDPS * (in_flight_bytes(400 * G, rtt_ps) + hops * settings.wire_bytes(settings.chunk))


def test_nics_behind_the_gateway_are_told_the_wan_path_at_start() -> None:
    windows = {}
    for km in (50, 200):
        r = run_text(through_line(f"{km}km"))
        gw, f = r["devices"]["gw-a"], r["flows"]["f"]
        assert gw["settings"]["wan_paths"] == {"w0": ["ca", "line", "cb"]}
        assert gw["counters"]["path_info_sent"] == 1  # one NIC in site a, told at start
        # gw-a is device 0: ids are positions in the name-sorted device list
        assert gw["path_info"] == {"rtt_ps": wan_rtt(km * KM), "device": -1, "via": 0, "ber_e18": LINE_BER_E18,
                                   "switch": 0}
        assert f["path_infos"] == 1 and f["path_ber"] == 1e-12 and f["protection_switches_told"] == 0
        # the window covers the WAN round trip
        assert f["rtt_ps"] == path_rtt(km * KM) and f["window_bytes"] == window_for(path_rtt(km * KM))
        windows[km] = f["window_bytes"]
    assert windows[200] > 3 * windows[50]  # 4x the line, and the line is most of the round trip
    off = run_text(through_line("200km", "path_info: false"))
    assert off["devices"]["gw-a"]["counters"]["path_info_sent"] == 0 and off["flows"]["f"]["path_infos"] == 0


def test_path_info_follows_wan_changes_and_the_otn_nodes_reports() -> None:
    # gw-a's WAN link changes rate at 100 us; at 200 us the OTN node reports a protection switch onto
    # a 300 km line with a worse BER
    host = runtime(through_line("50km", faults=["{at: 100us, link: ca, rate: 200G}"]))
    gw = gateway(host, "gw-a")
    qp = first_qp(host, "ta")
    port = gw.ports["w0"]
    report = Frame(PATH_INFO, -1, address(host.ids["ra"], 0), address(gw.id, gw.port_index["w0"]),
                   CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES, priority=CONTROL_PRIORITY,
                   fields={"length_mm": 300 * KM, "ber_e18": 10**9, "rate_bps": 400 * G, "switch": 1, "port": 1,
                           "peer": gw.wan_line_peer[gw.port_index["w0"]]})
    assert port.link is not None
    report.epoch = port.link.epoch
    gw.at(200 * PS_PER_US, port.receive, report)
    host.start()
    host.advance(150 * PS_PER_US)
    assert gw.counters["path_info_sent"] == 2 and gw.last_path_info["switch"] == 0  # start, rate change
    assert gw.last_path_info["rtt_ps"] == wan_rtt(50 * KM) and qp.rtt_ps == path_rtt(50 * KM)
    host.advance(host.scenario.duration_ps)
    assert gw.counters["path_info_received"] == 1 and gw.counters["path_info_sent"] == 3
    assert gw.counters["consumed_frames"] == gw.counters["no_route_frames"] == 0  # it stopped here
    assert gw.last_path_info == {"rtt_ps": wan_rtt(300 * KM), "device": -1, "via": gw.id, "ber_e18": 10**9,
                                 "switch": 1}
    # the QP's round trip grew by the line's: 250 km more, both ways
    assert qp.rtt_ps == path_rtt(300 * KM) and qp.window_bytes == window_for(path_rtt(300 * KM))
    f = qp.results()
    assert f["path_infos"] == 3 and f["protection_switches_told"] == 1 and f["path_ber"] == 1e-9


# -- 6. partitions ---------------------------------------------------------------------------------
def test_gateway_results_are_identical_in_every_partition() -> None:
    """Fast CNPs, mice lifted and restored, PFC and path info, with the WAN cut between hosts."""
    text = across_wan(["{name: f, src: ta/p0, dst: tb/p0, transport: rdma, bytes: 64MiB}"], wan="100G",
                      duration="600us")
    views = [deterministic_view(run_text(text, partition=p)) for p in ("single", "site", "device")]
    assert views[0]["devices"]["gw-a"]["counters"]["fast_cnps_sent"] > 0
    assert views[0] == views[1] == views[2]
