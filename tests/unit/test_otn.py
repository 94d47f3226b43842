"""The OTN node against physics: exact latency over a line, 1+1 and OTS protection with a detection
gap of exactly switch_time, hold-off after a return, Flex-O resizing under PFC, revertive switching,
path info to the gateway, and the capacity map."""

from __future__ import annotations

from typing import Any

import pytest

from emulators.kernel.frame import DATA, Frame
from emulators.kernel.vtime import PS_PER_MS, PS_PER_US, serialization_ps
from emulators.otn.node import OtnNode, capacity_map
from emulators.runtime import HostRuntime
from orchestrator.results import deterministic_view
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import run_text

G = 10**9
KIB = 1024
FRAME = 256 * KIB
SER_400G = serialization_ps(FRAME, 400 * G)  # 5.24 us
PERIOD_100G = serialization_ps(FRAME, 100 * G)  # a 100G flow's frame spacing: 20.97 us, exact
PROP_10M = 49_000
NODE_PS = 5 * PS_PER_US  # the OTN node's default latency


def km(n: int) -> int:
    return n * 1000 * 4900  # propagation in ps: 4.9 ns/m


def two_nodes(lines: list[tuple[str, str, str]], *, groups: str = "", flows: list[str] | None = None,
              faults: list[str] | None = None, gateways: bool = False, clients: int = 1, duration: str = "10ms",
              sample: str = "100us", node_options: str = "") -> str:
    """tx/p_i -> otna -> line ports -> otnb -> rx/p_i, every client link 400G over 10 m. ``lines``:
    (port, length, rate), one link ``l<port>`` between the same-named ports of both nodes. With
    ``gateways`` a latency-0 switch stands in for each site's gateway (the OTN node tells it of path
    changes), between the testers and one client port ``c0``."""
    line_ports = [port for port, _, _ in lines]
    options = ", ".join(o for o in (f"protection: [{groups}]" if groups else "", node_options) if o)
    client_ports = ["c0"] if gateways else [f"c{i}" for i in range(clients)]
    node_ports = ", ".join(client_ports + line_ports)
    testers = ", ".join(f"p{i}" for i in range(clients))
    devices = [
        f"tx: {{kind: tester, site: a, ports: [{testers}]}}",
        f"rx: {{kind: tester, site: b, ports: [{testers}]}}",
        f"otna: {{kind: otn, site: a, ports: [{node_ports}], options: {{{options}}}}}",
        f"otnb: {{kind: otn, site: b, ports: [{node_ports}], options: {{{options}}}}}",
    ]
    links = [f"{{name: l{port}, a: otna/{port}, z: otnb/{port}, rate: {rate}, length: {length}}}"
             for port, length, rate in lines]
    if gateways:
        gw_ports = ", ".join([f"c{i}" for i in range(clients)] + ["o"])
        devices += [f"gw{s}: {{kind: switch, site: {s}, ports: [{gw_ports}], options: {{latency: 0ns, ecn: false}}}}"
                    for s in "ab"]
        links += [f"{{name: ta{i}, a: tx/p{i}, z: gwa/c{i}, rate: 400G, length: 10m}}" for i in range(clients)]
        links += [f"{{name: tb{i}, a: gwb/c{i}, z: rx/p{i}, rate: 400G, length: 10m}}" for i in range(clients)]
        links += ["{name: ga, a: gwa/o, z: otna/c0, rate: 400G, length: 10m}",
                  "{name: gb, a: otnb/c0, z: gwb/o, rate: 400G, length: 10m}"]
    else:
        links += [f"{{name: ta{i}, a: tx/p{i}, z: otna/c{i}, rate: 400G, length: 10m}}" for i in range(clients)]
        links += [f"{{name: tb{i}, a: otnb/c{i}, z: rx/p{i}, rate: 400G, length: 10m}}" for i in range(clients)]

    def block(items: list[str] | None) -> str:
        return "\n".join(f"  - {i}" for i in items) if items else "  []"

    return (f"name: t\nseed: 1\nduration: {duration}\nsample_interval: {sample}\ndevices:\n"
            + "\n".join(f"  {d}" for d in devices)
            + f"\nlinks:\n{block(links)}\nflows:\n{block(flows)}\nfaults:\n{block(faults)}\n")


def flow(name: str, *, rate: str = "100G", count: int = 100, start: str = "0s", src: str = "tx/p0",
         dst: str = "rx/p0") -> str:
    return (f"{{name: {name}, src: {src}, dst: {dst}, rate: {rate}, frame: {FRAME}B, count: {count}, "
            f"priority: 3, start: {start}}}")


def arrivals_in(start_ps: int, end_ps: int, delay_ps: int, period_ps: int = PERIOD_100G) -> int:
    """Frames of a fixed-rate flow started at 0 that reach a point ``delay_ps`` downstream of the
    generator within [start, end): frame i gets there at i x period + delay."""
    return -(-(end_ps - delay_ps) // period_ps) - -(-(start_ps - delay_ps) // period_ps)


def one_plus_one(*, revertive: bool = False, switch_time: str = "") -> str:
    extra = (", revertive: true" if revertive else "") + (f", switch_time: {switch_time}" if switch_time else "")
    return f"{{kind: '1+1', working: [w], protecting: [p]{extra}}}"


def moves(node: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(e["at_ps"], e["from"], e["to"]) for e in node["protection_events"]]


# -- 1. latency ---------------------------------------------------------------------------------------
def test_latency_over_a_line_is_serialisation_propagation_and_two_node_latencies_exactly() -> None:
    r = run_text(two_nodes([("w", "300km", "400G")], flows=[flow("f", rate="200G", count=50)], duration="3ms"))
    f = r["flows"]["f"]
    # three store-and-forward hops at 400G (tester, otna, otnb), two 10 m client links, 300 km of fiber
    expected = 3 * SER_400G + 2 * PROP_10M + km(300) + 2 * NODE_PS
    assert f["latency_ps"]["min"] == f["latency_ps"]["max"] == expected == 1_495_826_640
    assert f["rx_bytes"] == f["tx_bytes"] == 50 * FRAME and f["unaccounted_bytes"] == 0
    settings = r["devices"]["otna"]["settings"]
    assert (settings["latency_ps"], settings["ecn"], settings["pfc"], settings["lossless_priorities"],
            settings["buffer_bytes"]) == (NODE_PS, False, True, [3, 4, 5], 1024 * 1024 * KIB)


# -- 2. 1+1: a cut working fiber -----------------------------------------------------------------------
PROTECTED = [("w", "300km", "400G"), ("p", "320km", "400G")]
# tester -> gateway -> otna -> line -> otnb -> gateway -> tester: five hops at 400G
WORKING_PS = 5 * SER_400G + 4 * PROP_10M + km(300) + 2 * NODE_PS
PROTECTION_PS = 5 * SER_400G + 4 * PROP_10M + km(320) + 2 * NODE_PS


def test_one_plus_one_loses_exactly_the_switch_time_and_moves_to_the_protection_path() -> None:
    cut, switch = 5 * PS_PER_MS, 50 * PS_PER_MS  # the default switch time
    flows = [flow("f", count=3000),  # 100G from 0 to 62.9 ms, across the cut
             flow("g", count=20, start="65ms")]  # alone on the protection path
    text = two_nodes(PROTECTED, groups=one_plus_one(), flows=flows, faults=["{at: 5ms, link: lw, state: down}"],
                     gateways=True, duration="70ms", sample="1ms")
    r = run_text(text)
    a, b = r["devices"]["otna"], r["devices"]["otnb"]
    f, g = r["flows"]["f"], r["flows"]["g"]
    # the node drops what reaches it within [cut, cut + switch time): switch time x rate, within a frame
    gap = a["counters"]["protection_gap_frames"]
    to_otna = 2 * (SER_400G + PROP_10M)  # generator -> otna, through the gateway
    assert gap == arrivals_in(cut, cut + switch, to_otna) == 2385
    assert abs(gap - switch / PERIOD_100G) <= 1  # 2384.2
    assert a["counters"]["protection_gap_bytes"] == gap * FRAME
    # the rest of the loss is what was on the 300 km fiber when it broke: 1.47 ms of frames
    on_fiber = b["ports"]["w"]["lost_frames"]
    assert abs(on_fiber - km(300) / PERIOD_100G) <= 1 and on_fiber == 70
    assert f["tx_frames"] - f["rx_frames"] == gap + on_fiber + a["ports"]["w"]["down_drop_frames"]
    assert g["rx_frames"] == g["tx_frames"] == 20 and f["out_of_order"] == 0
    # nothing reached the receiver from the last working frame until the first protection frame
    rx = r["timeseries"]["rx"]["p0.rx_bytes"]
    assert rx[7] == rx[56] < rx[57], "arrivals stop by 5 ms + 1.5 ms and resume at 55 ms + 1.6 ms"
    # both ends switched at exactly cut + switch time, once
    for node in (a, b):
        assert moves(node) == [(cut + switch, "w", "p")]
        assert node["protection_events"][0] | {"at_ps": 0} == {"at_ps": 0, "group": 0, "kind": "1+1", "from": "w",
                                                               "to": "p", "reason": "working path down"}
        assert node["counters"]["protection_switches"] == 1
        assert node["protection"] == [{"group": 0, "kind": "1+1", "switch_time_ps": switch, "revertive": False,
                                       "active": ["p"], "in_service": True}]
    # latency: the working figure before the cut, the protection figure after the switch
    assert f["latency_ps"]["min"] == WORKING_PS and g["latency_ps"]["min"] == g["latency_ps"]["max"] == PROTECTION_PS
    # each gateway heard of the new path: 320 km, a switch, line port p (index 2 of [c0, w, p])
    for node, gw in ((a, "gwa"), (b, "gwb")):
        assert node["counters"]["path_info_sent"] == 1 == r["devices"][gw]["counters"]["consumed_frames"]
        assert without_peer(node["path_info"]) == [{"at_ps": cut + switch, "length_mm": 320_000_000, "ber_e18": 0,
                                                    "rate_bps": 400 * G, "switch": 1, "port": 2}]
    # the two ends may run in different hosts: the line is cut between sites
    assert deterministic_view(run_text(text, partition="site")) == deterministic_view(r)


# -- 3. OTS switches the fibre, 1+1 each pair ------------------------------------------------------
FOUR_LINES = [("w0", "100km", "400G"), ("w1", "100km", "400G"), ("p0", "110km", "400G"), ("p1", "110km", "400G")]


def hashed_pairs(text: str, flows: int) -> list[int]:
    """Which pair (0 or 1) each flow tx/p_i -> rx/p_i rides at otna before any fault."""
    parsed = parse_scenario(text, "<test>")
    rt = HostRuntime(parsed, "h", {d.name: "h" for d in parsed.devices})
    node = rt.devices["otna"]
    assert isinstance(node, OtnNode)
    pairs = []
    for i in range(flows):
        src, dst = rt.context.address("tx", f"p{i}"), rt.context.address("rx", f"p{i}")
        port = node.route(Frame(DATA, i, src, dst, FRAME, 4096, priority=3))
        assert port is not None and port.name in ("w0", "w1")
        pairs.append(int(port.name[1]))
    return pairs


@pytest.mark.parametrize("kind", ["ots", "1+1"])
def test_ots_switches_every_port_together_and_one_plus_one_each_pair_alone(kind: str) -> None:
    group = f"{{kind: '{kind}', working: [w0, w1], protecting: [p0, p1], switch_time: 1ms}}"
    flows = [flow(f"f{i}", count=150, src=f"tx/p{i}", dst=f"rx/p{i}") for i in range(4)]
    text = two_nodes(FOUR_LINES, groups=group, flows=flows, faults=["{at: 1ms, link: lw0, state: down}"],
                     clients=4, duration="5ms")
    pairs = hashed_pairs(text, 4)
    assert sorted(set(pairs)) == [0, 1], "the flows spread over both pairs"
    r = run_text(text)
    a, b = r["devices"]["otna"], r["devices"]["otnb"]
    switch_at = 2 * PS_PER_MS
    expected = ([(switch_at, "w0", "p0"), (switch_at, "w1", "p1")] if kind == "ots" else [(switch_at, "w0", "p0")])
    for node in (a, b):
        assert moves(node) == expected
        assert node["protection"][0]["active"] == (["p0", "p1"] if kind == "ots" else ["p0", "w1"])
    to_otna = SER_400G + PROP_10M
    per_flow_gap = arrivals_in(PS_PER_MS, switch_at, to_otna)  # 48 frames per flow in the 1 ms gap
    losers = [i for i in range(4) if kind == "ots" or pairs[i] == 0]
    assert a["counters"]["protection_gap_frames"] == len(losers) * per_flow_gap
    for i in range(4):
        f = r["flows"][f"f{i}"]
        if i in losers:
            assert f["rx_frames"] < f["tx_frames"]
            assert f["latency_ps"]["max"] - f["latency_ps"]["min"] == km(110) - km(100), "then the longer path"
        else:  # 1+1: the other pair never noticed
            assert f["rx_frames"] == f["tx_frames"] == 150 and f["latency_ps"]["max"] == f["latency_ps"]["min"]
    ts = r["timeseries"]["otna"]
    assert ts["p1.tx_bytes"][-1] > 0 if kind == "ots" else ts["p1.tx_bytes"][-1] == 0


# -- 4. both paths down ----------------------------------------------------------------------------
@pytest.mark.parametrize("returns", ["p", "w"])
def test_with_both_paths_down_traffic_resumes_switch_time_after_one_returns(returns: str) -> None:
    # protection fails at 1 ms (standby: nothing happens), working at 2 ms, one comes back at 4 ms
    faults = ["{at: 1ms, link: lp, state: down}", "{at: 2ms, link: lw, state: down}",
              f"{{at: 4ms, link: l{returns}, state: up}}"]
    text = two_nodes([("w", "100km", "400G"), ("p", "120km", "400G")], groups=one_plus_one(switch_time="1ms"),
                     flows=[flow("f", count=400)], faults=faults, duration="10ms")
    r = run_text(text)
    a = r["devices"]["otna"]
    # nothing moves until 4 ms + 1 ms; then the returned path carries
    resumed = 5 * PS_PER_MS
    if returns == "p":
        assert moves(a) == [(resumed, "w", "p")] == moves(r["devices"]["otnb"])
        assert a["protection_events"][0]["reason"] == "working path down, protection path restored"
    else:
        assert moves(a) == [] and a["counters"]["protection_switches"] == 0
    assert a["protection"][0]["active"] == [returns] and a["protection"][0]["in_service"]
    assert a["counters"]["protection_gap_frames"] == arrivals_in(2 * PS_PER_MS, resumed, SER_400G + PROP_10M) == 143
    sent = r["timeseries"]["otna"][f"{returns}.tx_bytes"]  # sample k: what was sent before k x 100 us
    assert sent[21] == sent[50] < sent[51], "silent from the cut until 5 ms, sending right after"


# -- 5. Flex-O resize ------------------------------------------------------------------------------
def test_flex_o_resize_below_the_client_rate_pauses_the_client_and_drops_nothing() -> None:
    # 400G -> 200G (4 x 100G -> 2 x 100G) at 1 ms under a 300G client flow lasting 5 ms
    text = two_nodes([("w", "100km", "400G")], flows=[flow("f", rate="300G", count=715)],
                     faults=["{at: 1ms, link: lw, rate: 200G}"], duration="9ms")
    r = run_text(text)
    a, b = r["devices"]["otna"], r["devices"]["otnb"]
    f = r["flows"]["f"]
    assert a["counters"]["pfc_xoff_sent"] > 0 and a["counters"]["pfc_xon_sent"] == a["counters"]["pfc_xoff_sent"]
    assert r["devices"]["tx"]["ports"]["p0"]["queue_peak_bytes"] > 16 * 1024 * KIB, "the client held the excess"
    assert f["rx_bytes"] == f["tx_bytes"] == 715 * FRAME and f["unaccounted_bytes"] == 0
    for node in (a, b):
        assert sum(v for k, v in node["counters"].items() if k.startswith("drop_")) == 0
        assert node["counters"]["line_rate_changes"] == 1
    xoff, headroom = a["settings"]["pfc_xoff_bytes"], a["settings"]["pfc_headroom_bytes"]["c0"]
    assert xoff <= a["counters"]["ingress_peak_bytes"] <= xoff + headroom
    assert without_peer(a["path_info"]) == [{"at_ps": PS_PER_MS, "length_mm": 100_000_000, "ber_e18": 0,
                                             "rate_bps": 200 * G, "switch": 0, "port": 1}]

    def delivered_bps(first: int, last: int) -> float:  # between two 100 us samples at the receiver
        rx = r["timeseries"]["rx"]["p0.rx_bytes"]
        return (rx[last] - rx[first]) * 8 / ((last - first) * 100e-6)

    assert delivered_bps(6, 14) == pytest.approx(300 * G, rel=0.01)  # 0.6-1.4 ms: before the resize lands
    assert delivered_bps(16, 40) == pytest.approx(200 * G, rel=0.01)  # 1.6-4.0 ms: the new line rate


# -- 6. revertive or not ---------------------------------------------------------------------------
@pytest.mark.parametrize("revertive", [False, True])
def test_revertive_groups_return_to_working_switch_time_after_it_returns(revertive: bool) -> None:
    lines = [("w", "100km", "400G"), ("p", "120km", "400G")]
    faults = ["{at: 1ms, link: lw, state: down}", "{at: 3ms, link: lw, state: up}"]
    text = two_nodes(lines, groups=one_plus_one(revertive=revertive, switch_time="1ms"),
                     flows=[flow("g", count=10, start="5ms")], faults=faults, duration="7ms")
    r = run_text(text)
    ms = PS_PER_MS
    expected = [(2 * ms, "w", "p")] + ([(4 * ms, "p", "w")] if revertive else [])
    for name in ("otna", "otnb"):
        node = r["devices"][name]
        assert moves(node) == expected
        assert node["protection"][0]["active"] == (["w"] if revertive else ["p"])
    if revertive:
        assert r["devices"]["otna"]["protection_events"][1]["reason"] == "working path restored (revertive)"
    g = r["flows"]["g"]
    path_km = 100 if revertive else 120
    assert g["latency_ps"]["min"] == g["latency_ps"]["max"] == 3 * SER_400G + 2 * PROP_10M + km(path_km) + 2 * NODE_PS
    assert g["rx_frames"] == 10


# -- path info on length and BER changes ------------------------------------------------------------
def test_length_and_ber_changes_of_the_active_line_are_told_to_the_gateway() -> None:
    faults = ["{at: 100us, link: lw, length: 310km}", "{at: 200us, link: lp, ber: 1e-12}",  # p is standby
              "{at: 300us, link: lw, ber: 2.5e-12}"]
    r = run_text(two_nodes(PROTECTED, groups=one_plus_one(), faults=faults, gateways=True, duration="1ms"))
    for node, gw in (("otna", "gwa"), ("otnb", "gwb")):
        told = r["devices"][node]["path_info"]
        assert [(e["at_ps"], e["length_mm"], e["ber_e18"], e["switch"], e["port"]) for e in told] == [
            (100 * PS_PER_US, 310_000_000, 0, 0, 1), (300 * PS_PER_US, 310_000_000, 2_500_000, 0, 1)]
        assert r["devices"][gw]["counters"]["consumed_frames"] == 2


def test_a_protection_port_that_is_not_a_line_port_is_refused() -> None:
    text = two_nodes(PROTECTED, groups="{working: [w], protecting: [c0]}")
    parsed = parse_scenario(text, "<test>")
    with pytest.raises(ValueError, match=r"otna: protection group 0: 'c0' is not a line port .* line ports: p, w"):
        HostRuntime(parsed, "h", {d.name: "h" for d in parsed.devices})


# -- 7. capacity map --------------------------------------------------------------------------------
def test_capacity_map_lists_each_path_with_its_latency_and_capacity() -> None:
    lines = [("w", "300km", "800G"), ("p", "320km", "800G"), ("x", "50km", "400G")]
    text = two_nodes(lines, groups=one_plus_one()).replace(
        "otnb: {kind: otn, site: b, ports: [c0, w, p, x], options: {",
        "otnb: {kind: otn, site: b, ports: [c0, w, p, x], options: {latency: 7us, ")
    assert "latency: 7us" in text
    both = NODE_PS + 7 * PS_PER_US
    assert capacity_map(parse_scenario(text, "<test>")) == [
        {"a": "otna", "z": "otnb", "path": "working", "links": ["lw"], "length_mm": 300_000_000,
         "latency_ps": km(300) + both, "capacity_bps": 800 * G, "group": 0},
        {"a": "otna", "z": "otnb", "path": "protection", "links": ["lp"], "length_mm": 320_000_000,
         "latency_ps": km(320) + both, "capacity_bps": 800 * G, "group": 0},
        {"a": "otna", "z": "otnb", "path": "lx", "links": ["lx"], "length_mm": 50_000_000,
         "latency_ps": km(50) + both, "capacity_bps": 400 * G, "group": None},
    ]
    ots = two_nodes(FOUR_LINES, groups="{kind: ots, working: [w0, w1], protecting: [p0, p1]}")
    paths = capacity_map(parse_scenario(ots, "<test>"))
    assert [(p["path"], p["links"], p["capacity_bps"], p["latency_ps"]) for p in paths] == [
        ("working", ["lw0", "lw1"], 800 * G, km(100) + 2 * NODE_PS),
        ("protection", ["lp0", "lp1"], 800 * G, km(110) + 2 * NODE_PS)]


ODU_ISOLATION = """
name: odus
duration: 6ms
devices:
  ta: {kind: tester, ports: [p0], options: {buffer: 1GiB}}
  tb: {kind: tester, ports: [p0]}
  ra: {kind: tester, ports: [p0]}
  rb: {kind: tester, ports: [p0]}
  otn-a: {kind: otn, ports: [c0, c1, o0, o1], options: {odus: {c0: [o0], c1: [o1]}}}
  otn-b: {kind: otn, ports: [c0, c1, o0, o1], options: {odus: {c0: [o0], c1: [o1]}}}
links:
  - {name: ca, a: ta/p0, z: otn-a/c0, rate: 400G, length: 10m}
  - {name: cb, a: tb/p0, z: otn-a/c1, rate: 400G, length: 10m}
  - {name: odu0, a: otn-a/o0, z: otn-b/o0, rate: 200G, length: 100km}
  - {name: odu1, a: otn-a/o1, z: otn-b/o1, rate: 200G, length: 100km}
  - {name: da, a: otn-b/c0, z: ra/p0, rate: 400G, length: 10m}
  - {name: db, a: otn-b/c1, z: rb/p0, rate: 400G, length: 10m}
flows:
  - {name: heavy, src: ta/p0, dst: ra/p0, rate: 300G, frame: 64KiB, for: 4ms, priority: 3}
  - {name: light, src: tb/p0, dst: rb/p0, rate: 100G, frame: 64KiB, for: 4ms, priority: 3}
"""


def test_odus_isolate_tenants_a_client_over_its_odu_does_not_touch_another() -> None:
    r = run_text(ODU_ISOLATION)
    heavy, light = r["flows"]["heavy"], r["flows"]["light"]
    # the heavy tenant is held to its 200G ODU (paused, not dropped); the light one never waits
    assert heavy["throughput_bps"] == pytest.approx(200 * G, rel=0.01) and heavy["lost_bytes"] == 0
    assert light["throughput_bps"] == pytest.approx(100 * G, rel=0.01)
    assert light["latency_ps"]["max"] == light["latency_ps"]["min"]  # no queueing behind the heavy tenant
    assert r["devices"]["otn-a"]["ports"]["o1"]["tx_bytes"] == light["tx_bytes"]


def without_peer(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Path reports without the id of the node across (it depends on device names' order)."""
    return [{k: v for k, v in report.items() if k != "peer"} for report in reports]
