"""The Ethernet switch against physics: exact latency, lossless incast under PFC, ECN's marking
ramp, ECMP spreading and failover, and GSE's scheduled, sprayed, reordered delivery."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from emulators.ethernet.gse import cut_containers
from emulators.ethernet.mmu import default_headroom
from emulators.ethernet.switch import Switch
from emulators.kernel.frame import DATA, Frame
from emulators.kernel.vtime import serialization_ps
from emulators.runtime import HostRuntime
from orchestrator.results import deterministic_view
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import run_text

G = 10**9
KIB = 1024
MIB = 1024 * KIB
FRAME = 64 * KIB
SER_400G = serialization_ps(FRAME, 400 * G)  # 1.31 us


def scenario(devices: list[str], links: list[str], flows: list[str], faults: list[str] | None = None,
             duration: str = "2ms", sample: str = "100us", seed: int = 1) -> str:
    def block(items: list[str]) -> str:
        return "\n".join(f"  - {i}" for i in items) if items else "  []"

    return (f"name: t\nseed: {seed}\nduration: {duration}\nsample_interval: {sample}\ndevices:\n"
            + "\n".join(f"  {d}" for d in devices)
            + f"\nlinks:\n{block(links)}\nflows:\n{block(flows)}\nfaults:\n{block(faults or [])}\n")


def one_leaf(senders: int, options: str, flows: list[str], *, length: str = "10m", **kw: Any) -> str:
    """Tester ports tx/p0..p(n-1) into leaf ports i0..i(n-1); leaf port o to tester port rx/p0."""
    ins = [f"i{i}" for i in range(senders)]
    devices = [
        f"tx: {{kind: tester, site: a, ports: [{', '.join(f'p{i}' for i in range(senders))}]}}",
        "rx: {kind: tester, site: a, ports: [p0]}",
        f"leaf: {{kind: switch, site: a, ports: [{', '.join(ins)}, o], options: {{{options}}}}}",
    ]
    links = [f"{{name: in{i}, a: tx/p{i}, z: leaf/i{i}, rate: 400G, length: {length}}}" for i in range(senders)]
    links.append(f"{{name: out, a: leaf/o, z: rx/p0, rate: 400G, length: {length}}}")
    return scenario(devices, links, flows, **kw)


def two_tier(nics: int, spines: int, options: str, flows: list[str], *, spine_lengths: list[str] | None = None,
             **kw: Any) -> str:
    """tx/p_i - leaf0/n_i, leaf0/u_j - s_j - leaf1/u_j, leaf1/n_i - rx/p_i; every link 400G."""
    nic_ports = ", ".join(f"p{i}" for i in range(nics))
    leaf_ports = ", ".join([f"n{i}" for i in range(nics)] + [f"u{j}" for j in range(spines)])
    devices = [
        f"tx: {{kind: tester, site: a, ports: [{nic_ports}]}}",
        f"rx: {{kind: tester, site: a, ports: [{nic_ports}]}}",
        f"leaf0: {{kind: switch, site: a, ports: [{leaf_ports}], options: {{role: leaf, {options}}}}}",
        f"leaf1: {{kind: switch, site: a, ports: [{leaf_ports}], options: {{role: leaf, {options}}}}}",
    ] + [f"s{j}: {{kind: switch, site: a, ports: [d0, d1], options: {{role: spine, {options}}}}}"
         for j in range(spines)]
    lengths = spine_lengths or ["10m"] * spines
    links = [f"{{name: tx{i}, a: tx/p{i}, z: leaf0/n{i}, rate: 400G, length: 10m}}" for i in range(nics)]
    links += [f"{{name: rx{i}, a: leaf1/n{i}, z: rx/p{i}, rate: 400G, length: 10m}}" for i in range(nics)]
    links += [f"{{name: up{j}, a: leaf0/u{j}, z: s{j}/d0, rate: 400G, length: {lengths[j]}}}" for j in range(spines)]
    links += [f"{{name: dn{j}, a: s{j}/d1, z: leaf1/u{j}, rate: 400G, length: {lengths[j]}}}" for j in range(spines)]
    return scenario(devices, links, flows, **kw)


def flow(name: str, src: str, dst: str, rate: str = "400G", frame: str = "64KiB", count: int = 100,
         priority: int = 3, start: str = "0s") -> str:
    return (f"{{name: {name}, src: {src}, dst: {dst}, rate: {rate}, frame: {frame}, count: {count}, "
            f"priority: {priority}, start: {start}}}")


def aggregate_bps(flows: list[dict[str, Any]]) -> float:
    """Bytes after the first arrival over the span from first to last arrival, all flows together."""
    first = min(f["first_rx_ps"] for f in flows)
    last = max(f["last_rx_ps"] for f in flows)
    return (sum(f["rx_bytes"] for f in flows) - FRAME) * 8 * 10**12 / (last - first)


def containers(port: dict[str, int]) -> int:
    """64 KiB containers among the frames a port received (the rest are 84-byte requests)."""
    data, rest = divmod(port["rx_bytes"] - 84 * port["rx_frames"], FRAME - 84)
    assert rest == 0
    return data


def runtime(text: str) -> HostRuntime:
    parsed = parse_scenario(text, "<test>")
    return HostRuntime(parsed, "h", {d.name: "h" for d in parsed.devices})


# -- 1. forwarding latency and conservation --------------------------------------------------------
def test_latency_through_a_leaf_is_two_hops_plus_pipeline_exactly() -> None:
    for latency_ps, option in ((600_000, ""), (0, "latency: 0ns"), (1_234_000, "latency: 1234ns")):
        flows = [flow("f", "tx/p0", "rx/p0", rate="200G", count=20)]
        r = run_text(one_leaf(1, option, flows, length="100m"))
        f = r["flows"]["f"]
        expected = 2 * SER_400G + 2 * 490_000 + latency_ps  # 100 m of fiber is 490 ns
        assert f["latency_ps"]["min"] == f["latency_ps"]["max"] == expected
        assert f["rx_bytes"] == f["tx_bytes"] == 20 * FRAME and f["unaccounted_bytes"] == 0
        leaf = r["devices"]["leaf"]
        assert leaf["ports"]["i0"]["rx_bytes"] == leaf["ports"]["o"]["tx_bytes"] == 20 * FRAME
        assert leaf["counters"]["buffer_bytes"] == 0 and leaf["settings"]["latency_ps"] == latency_ps


def test_frames_without_a_route_are_counted_and_dropped() -> None:
    # rx/p1 is not attached to any switch: nothing knows where it is
    text = one_leaf(1, "", [flow("f", "tx/p0", "rx/p1", count=5)]).replace(
        "rx: {kind: tester, site: a, ports: [p0]}", "rx: {kind: tester, site: a, ports: [p0, p1]}")
    r = run_text(text)
    assert r["devices"]["leaf"]["counters"]["no_route_frames"] == 5
    assert r["flows"]["f"]["rx_frames"] == 0


# -- 2. incast: PFC makes it lossless at line rate ---------------------------------------------------
PROPAGATION_1KM = 4_900_000
IN_FLIGHT_1KM = 2 * 400 * G * PROPAGATION_1KM // (8 * 10**12)  # 490,000 bytes: a round trip at 400G


def incast(options: str) -> dict[str, Any]:
    """8 x 400G into one 400G port, over 1 km links: 100 frames of 64 KiB per sender, priority 3."""
    flows = [flow(f"f{i}", f"tx/p{i}", "rx/p0", count=100) for i in range(8)]
    return run_text(one_leaf(8, f"buffer: 16MiB, {options}", flows, length="1km", duration="3ms"))


def test_incast_with_pfc_is_lossless_at_line_rate_within_headroom() -> None:
    r = incast("pfc: true")
    leaf = r["devices"]["leaf"]
    c = leaf["counters"]
    flows = [r["flows"][f"f{i}"] for i in range(8)]
    drops = sum(c[k] for k in c if k.startswith("drop_"))
    assert drops == 0
    assert all(f["rx_bytes"] == f["tx_bytes"] == 100 * FRAME and f["unaccounted_bytes"] == 0 for f in flows)
    assert c["pfc_xoff_sent"] > 0 and c["pfc_xon_sent"] == c["pfc_xoff_sent"]
    assert aggregate_bps(flows) >= 0.98 * 400 * G  # the bottleneck port over its busy interval
    assert leaf["ports"]["o"]["tx_bytes"] == 800 * FRAME
    headroom = IN_FLIGHT_1KM + 3 * FRAME + 2 * 84
    assert leaf["settings"]["pfc_headroom_bytes"]["i0"] == headroom == default_headroom(400 * G, PROPAGATION_1KM)
    xoff = leaf["settings"]["pfc_xoff_bytes"]
    # after XOFF a port kept filling for at least a round trip (at 400G in, 50G out), never past its headroom
    assert xoff + IN_FLIGHT_1KM * 7 // 8 <= c["ingress_peak_bytes"] <= xoff + headroom
    assert c["buffer_peak_bytes"] <= 8 * (xoff + headroom)
    assert c["buffer_bytes"] == 0
    # the senders were held back at their own ports, not in the switch
    assert max(p["queue_peak_bytes"] for p in r["devices"]["tx"]["ports"].values()) > 2 * MIB


def test_incast_with_too_little_headroom_drops_what_was_in_flight() -> None:
    c = incast("pfc_headroom: 64KiB")["devices"]["leaf"]["counters"]
    assert c["drop_headroom_frames"] > 0 and c["ingress_peak_bytes"] <= 512 * KIB + 64 * KIB


def test_incast_without_pfc_drops_at_the_dynamic_threshold() -> None:
    r = incast("pfc: false")
    c = r["devices"]["leaf"]["counters"]
    flows = [r["flows"][f"f{i}"] for i in range(8)]
    assert c["drop_lossy_frames"] > 0 and c["pfc_xoff_sent"] == 0
    assert sum(f["tx_bytes"] - f["rx_bytes"] for f in flows) == c["drop_lossy_bytes"]
    # alpha = 1: a queue may hold as much as is free, so it stops near half the buffer
    assert 8 * MIB - FRAME <= c["buffer_peak_bytes"] <= 8 * MIB + FRAME


# -- 3. ECN -----------------------------------------------------------------------------------------
def test_ecn_marks_on_the_ramp_between_kmin_and_kmax() -> None:
    # A alone at line rate finds an empty egress (its previous frame just left); a burst of 24 frames
    # from B then stays parked for good, since A fills the queue exactly as fast as it drains: from
    # then on every frame of A finds 24 frames queued (counting the one on the wire)
    kmin, kmax, pmax, burst = 512 * KIB, 2560 * KIB, 0.5, 24
    flows = [flow("a", "tx/p0", "rx/p0", count=1300, priority=0),
             flow("b", "tx/p1", "rx/p0", count=burst, priority=0, start="100us")]
    options = f"ecn_kmin: {kmin}B, ecn_kmax: {kmax}B, ecn_pmax: {pmax}"
    p = pmax * (burst * FRAME - kmin) / (kmax - kmin)  # 0.25
    n = marked = 0
    for seed in (1, 2, 3):
        r = run_text(one_leaf(2, options, flows, duration="2ms", seed=seed))
        series = r["timeseries"]["leaf"]
        marks, arrivals = series["ecn_marked_frames"], series["i0.rx_frames"]
        assert marks[1] == 0 and arrivals[1] > 70, "below kmin nothing is marked"
        steady = slice(3, 16)  # 300 us .. 1.6 ms, while A runs over the parked burst
        n += arrivals[steady.stop] - arrivals[steady.start]
        marked += marks[steady.stop] - marks[steady.start]
        assert r["flows"]["a"]["rx_frames"] == 1300
    assert abs(marked - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (marked, n)


def test_ecn_off_marks_nothing() -> None:
    flows = [flow("a", "tx/p0", "rx/p0", count=200, priority=0), flow("b", "tx/p1", "rx/p0", count=200, priority=0)]
    r = run_text(one_leaf(2, "ecn: false", flows))
    assert r["devices"]["leaf"]["counters"]["ecn_marked_frames"] == 0
    assert r["devices"]["leaf"]["ports"]["o"]["queue_peak_bytes"] > MIB  # the queue was there to mark


# -- 4. ECMP ----------------------------------------------------------------------------------------
def ecmp_choices(seed: int, leaf: str = "leaf0") -> list[str]:
    rt = runtime(two_tier(1, 4, "", [], seed=seed))
    switch = rt.devices[leaf]
    assert isinstance(switch, Switch)
    dst = rt.context.address("rx", "p0") if leaf == "leaf0" else rt.context.address("tx", "p0")
    src = rt.context.address("tx", "p0") if leaf == "leaf0" else rt.context.address("rx", "p0")
    ports = switch.routes[dst]
    assert [p.name for p in ports] == ["u0", "u1", "u2", "u3"]
    chosen = []
    for entropy in range(49152, 49152 + 4000):  # RoCEv2 source ports
        port = switch.ecmp_choice(ports, src, dst, entropy)
        assert port is not None
        chosen.append(port.name)
    return chosen


def test_ecmp_spreads_flows_over_every_uplink_and_is_salted_per_seed() -> None:
    first = ecmp_choices(seed=1)
    counts = Counter(first)
    sigma = math.sqrt(4000 * 0.25 * 0.75)
    assert set(counts) == {"u0", "u1", "u2", "u3"}
    assert all(abs(n - 1000) < 5 * sigma for n in counts.values()), counts
    assert ecmp_choices(seed=1) == first, "same seed, same paths"
    other = ecmp_choices(seed=2)
    same = sum(a == b for a, b in zip(first, other, strict=True))
    assert abs(same - 1000) < 5 * sigma, "another seed is an independent hash, not a shifted one"


def test_ecmp_skips_uplinks_whose_link_is_down() -> None:
    rt = runtime(two_tier(1, 4, "", []))
    switch = rt.devices["leaf0"]
    assert isinstance(switch, Switch)
    src, dst = rt.context.address("tx", "p0"), rt.context.address("rx", "p0")
    ports = switch.routes[dst]
    rt.links["up1"].set_state(False)
    chosen = Counter(p.name for e in range(2000) if (p := switch.ecmp_choice(ports, src, dst, e)) is not None)
    assert set(chosen) == {"u0", "u2", "u3"} and sum(chosen.values()) == 2000


# -- 6. a downed uplink ------------------------------------------------------------------------------
def test_traffic_moves_off_a_failed_uplink() -> None:
    flows = [flow(f"f{i}", f"tx/p{i}", f"rx/p{i}", rate="100G", count=300, priority=0) for i in range(4)]
    text = two_tier(4, 2, "", flows, duration="3ms")
    # fail the uplink that carries f0, while it is sending (f0 runs for 1.57 ms)
    rt = runtime(text)
    leaf0 = rt.devices["leaf0"]
    assert isinstance(leaf0, Switch)
    used = leaf0.ecmp_choice(leaf0.routes[rt.context.address("rx", "p0")], rt.context.address("tx", "p0"),
                             rt.context.address("rx", "p0"), 0)
    assert used is not None
    j = int(used.name[1:])
    r = run_text(two_tier(4, 2, "", flows, duration="3ms", faults=[f"{{at: 500us, link: up{j}, state: down}}"]))
    f0 = r["flows"]["f0"]
    assert f0["last_rx_ps"] > 1_500_000_000, "f0 kept arriving after its uplink died"
    lost = sum(r["flows"][f"f{i}"]["unaccounted_bytes"] for i in range(4))
    # what died: frames flushed from the dead uplink's queue and frames on its fiber
    leaf_port = r["devices"]["leaf0"]["ports"][f"u{j}"]
    died = leaf_port["down_drop_bytes"] + r["devices"][f"s{j}"]["ports"]["d0"]["lost_bytes"]
    assert lost == died <= 2 * FRAME
    dead, alive = (r["timeseries"][f"s{k}"]["d0.rx_bytes"] for k in (j, 1 - j))
    after = 6  # the 600 us sample
    assert dead[after] > 0 and dead[-1] == dead[after], "nothing crossed the dead uplink after the cut"
    assert alive[-1] - alive[after] >= 4 * 150 * FRAME, "every flow's tail went over the surviving uplink"


# -- 5. GSE -----------------------------------------------------------------------------------------
def test_gse_sprays_over_every_spine_and_delivers_in_order_at_line_rate() -> None:
    flows = [flow(f"f{i}", f"tx/p{i}", f"rx/p{i}", count=200) for i in range(4)]
    # one spine path is 2 x 1.45 us longer than the others: containers sprayed over it fall behind
    r = run_text(two_tier(4, 4, "mode: gse", flows, spine_lengths=["300m", "10m", "10m", "10m"], duration="2ms"))
    a, b = r["devices"]["leaf0"]["counters"], r["devices"]["leaf1"]["counters"]
    frames = 4 * 200
    assert a["requests_sent"] == b["requests_received"] == b["grants_sent"] == a["grants_received"] == frames
    assert a["containers_sent"] == frames and a["grants_unused"] == 0
    per_spine = [containers(r["devices"][f"s{j}"]["ports"]["d0"]) for j in range(4)]
    assert sum(per_spine) == frames and min(per_spine) >= 0.95 * max(per_spine), per_spine
    flows_out = [r["flows"][f"f{i}"] for i in range(4)]
    for f in flows_out:
        assert f["rx_bytes"] == f["tx_bytes"] and f["unaccounted_bytes"] == 0
        assert f["out_of_order"] == 0
        assert f["throughput_bps"] >= 0.95 * 400 * G
    assert aggregate_bps(flows_out) >= 0.95 * 4 * 400 * G
    assert b["reordered_containers"] > 0, "the paths differ, so containers did arrive out of order"
    assert b["reorder_bytes"] == 0 and b["reorder_peak_bytes"] > 0 and b["reorder_timeouts"] == 0
    assert sum(c[k] for c in (a, b) for k in c if k.startswith("drop_")) == 0


def test_gse_incast_is_held_at_the_source_leaf_by_grants_and_pfc() -> None:
    # 2 x 400G into one 400G port: the destination grants at line rate, DGSQs fill, PFC stops the NICs
    flows = [flow(f"f{i}", f"tx/p{i}", "rx/p0", count=150) for i in range(2)]
    r = run_text(two_tier(2, 2, "mode: gse", flows, duration="2ms"))
    a, b = r["devices"]["leaf0"]["counters"], r["devices"]["leaf1"]["counters"]
    flows_out = [r["flows"][f"f{i}"] for i in range(2)]
    assert all(f["rx_bytes"] == f["tx_bytes"] and f["out_of_order"] == 0 for f in flows_out)
    assert a["pfc_xoff_sent"] > 0 and a["dgsq_bytes"] == 0
    assert aggregate_bps(flows_out) >= 0.95 * 400 * G
    assert b["grants_sent"] == a["requests_sent"] == 300
    # congestion stays at the edge: the fabric's queues hold a few containers at most
    spine_peak = max(r["devices"][f"s{j}"]["ports"]["d1"]["queue_peak_bytes"] for j in range(2))
    assert spine_peak <= 2 * FRAME
    # grants stop while 4 containers wait toward the NIC; those already granted still arrive
    assert r["devices"]["leaf1"]["ports"]["n0"]["queue_peak_bytes"] <= 8 * FRAME


def test_gse_cuts_large_frames_into_containers_and_delivers_every_packet() -> None:
    flows = [flow("f", "tx/p0", "rx/p0", frame="256KiB", count=40)]
    r = run_text(two_tier(1, 2, "mode: gse", flows, duration="1ms"))
    f = r["flows"]["f"]
    a = r["devices"]["leaf0"]["counters"]
    assert a["requests_sent"] == a["containers_sent"] == 4 * 40
    assert f["rx_frames"] == 4 * 40 and f["rx_bytes"] == f["tx_bytes"] and f["rx_packets"] == 40 * 64


def test_cut_containers_keeps_packet_runs_valid() -> None:
    mtu = 4096 + 64  # payload 4 KiB + headers
    frame = Frame(DATA, 3, 0x101, 0x201, 24 * mtu + 1000, mtu, seq=1000, priority=3, created_ps=77)
    frame.offset = 8 * 4096
    frame.entropy = 50000
    frame.ecn = True
    frame.corrupt_packets, frame.first_corrupt, frame.corrupt_bytes = 2, 16, mtu + 1000  # packets 16 and 24
    frame.fields = {"psn_reset": 1}
    pieces = cut_containers(frame, 64 * KIB)
    assert [p.packets for p in pieces] == [16, 9]  # a container holds 64 KiB of payload: 16 x 4 KiB
    assert [p.seq for p in pieces] == [1000, 1016]
    assert [p.offset for p in pieces] == [8 * 4096, 24 * 4096]
    # a PSN reset belongs to the run's first packet only: a later piece must not restart the receiver
    assert [p.fields for p in pieces] == [{"psn_reset": 1}, None]
    assert sum(p.nbytes for p in pieces) == frame.nbytes and pieces[1].last_packet_bytes == 1000
    kept = (3, 0x101, 0x201, 50000, 3, True, 77)
    assert all((p.flow, p.src, p.dst, p.entropy, p.priority, p.ecn, p.created_ps) == kept for p in pieces)
    assert [(p.corrupt_packets, p.first_corrupt) for p in pieces] == [(0, -1), (2, 0)]
    assert sum(p.corrupt_bytes for p in pieces) == frame.corrupt_bytes
    small = Frame(DATA, 3, 0x101, 0x201, 64 * KIB, 4096)
    assert cut_containers(small, 64 * KIB) == [small]


def test_gse_rides_out_a_failed_uplink() -> None:
    # up1 dies mid-run: queued containers are resprayed, the one on the fiber is lost, and the
    # destination leaf gives up on its gap after the reorder timeout instead of stalling the stream
    flows = [flow(f"f{i}", f"tx/p{i}", f"rx/p{i}", count=200) for i in range(4)]
    r = run_text(two_tier(4, 4, "mode: gse", flows, duration="2ms", faults=["{at: 200us, link: up1, state: down}"]))
    lost_on_fiber = r["devices"]["s1"]["ports"]["d0"]["lost_bytes"]
    assert lost_on_fiber > 0
    assert sum(r["flows"][f"f{i}"]["unaccounted_bytes"] for i in range(4)) == lost_on_fiber
    assert all(r["flows"][f"f{i}"]["out_of_order"] == 0 for i in range(4))
    b = r["devices"]["leaf1"]["counters"]
    assert b["reorder_timeouts"] >= 1 and b["reorder_bytes"] == 0 and b["buffer_bytes"] == 0
    crossed = r["timeseries"]["s1"]["d0.rx_bytes"]
    assert crossed[2] == crossed[-1] > 0, "nothing crossed up1 after 200 us"


def test_gse_results_are_identical_in_every_partition() -> None:
    flows = [flow(f"f{i}", f"tx/p{i}", "rx/p0", count=40) for i in range(2)]
    text = two_tier(2, 2, "mode: gse", flows, duration="300us", spine_lengths=["100m", "10m"])
    views = [deterministic_view(run_text(text, partition=p)) for p in ("single", "device")]
    assert views[0] == views[1]


def test_default_thresholds_span_as_many_frames_with_larger_chunks():
    text = """version: 0
name: grain
duration: 1ms
devices:
  ta: {kind: tester, ports: [p0], options: {rdma: {chunk: 1MiB}}}
  tb: {kind: tester, ports: [p0]}
  sw: {kind: switch, ports: [a, b]}
  written: {kind: switch, ports: [a, b], options: {pfc_xoff: 256KiB, ecn_kmax: 2MiB}}
links:
  - {name: la, a: ta/p0, z: sw/a, rate: 400G, length: 3m}
  - {name: lb, a: tb/p0, z: sw/b, rate: 400G, length: 3m}
  - {name: lc, a: written/a, z: written/b, rate: 400G, length: 3m}
"""
    devices = runtime(text).devices
    switch, written = devices["sw"], devices["written"]
    assert isinstance(switch, Switch) and isinstance(written, Switch)
    frames = 16  # 1 MiB chunks: the 64 KiB defaults span 16 times the bytes
    assert (switch.pfc_xoff, switch.pfc_xon) == (frames * 512 * 1024, frames * (512 - 128) * 1024)
    assert (switch.ecn_kmin, switch.ecn_kmax) == (frames * 128 * 1024, frames * 1024 * 1024)
    assert switch.buffer_size == frames * 64 * 1024 * 1024
    # written thresholds stay; the ones left out still scale
    assert (written.pfc_xoff, written.pfc_xon) == (256 * 1024, 128 * 1024)
    assert (written.ecn_kmax, written.ecn_kmin) == (2 * 1024 * 1024, frames * 128 * 1024)
