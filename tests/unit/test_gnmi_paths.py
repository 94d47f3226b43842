"""The gNMI path layer over device models: parsing, reading leaves, checking and applying Sets."""

from __future__ import annotations

import pytest

from emulators.ethernet.switch import Switch
from emulators.runtime import HostRuntime
from orchestrator.scenario.loader import parse_scenario
from services.gnmi_paths import (
    InvalidPath,
    InvalidValue,
    Path,
    PathNotFound,
    Snapshot,
    elem,
    expand,
    leaves,
    matches,
    parse,
    plan_set,
    render,
    select,
)

KIB = 1024

INCAST = """
name: gnmi-incast
seed: 1
duration: 1ms
sample_interval: 100us
devices:
  tx: {kind: tester, site: a, ports: [p0, p1]}
  rx: {kind: tester, site: a, ports: [p0]}
  leaf: {kind: switch, site: a, ports: [i0, i1, o]}
links:
  - {name: in0, a: tx/p0, z: leaf/i0, rate: 400G, length: 10m}
  - {name: in1, a: tx/p1, z: leaf/i1, rate: 400G, length: 10m}
  - {name: out, a: leaf/o, z: rx/p0, rate: 400G, length: 10m}
flows:
  - {name: a, src: tx/p0, dst: rx/p0, rate: 400G, frame: 64KiB, count: 200, priority: 0}
  - {name: b, src: tx/p1, dst: rx/p0, rate: 400G, frame: 64KiB, count: 200, priority: 0}
faults: []
"""


def runtime() -> HostRuntime:
    scenario = parse_scenario(INCAST, "<test>")
    return HostRuntime(scenario, "h", {d.name: "h" for d in scenario.devices})


def value(rt: HostRuntime, device: str, path: str) -> object:
    [(_, v)] = select(rt.devices[device], parse(path))
    return v


def test_parse_and_render_round_trip_keys_and_wildcards() -> None:
    path = parse("/interfaces/interface[name=p0]/state/counters/in-octets")
    assert path[1] == elem("interface", name="p0")
    assert render(path) == "/interfaces/interface[name=p0]/state/counters/in-octets"
    assert parse("/") == ()
    assert matches(parse("/interfaces/interface[name=*]/state"), path)
    assert matches(parse("/.../in-octets"), path)
    assert not matches(parse("/interfaces/interface[name=p1]"), path)
    with pytest.raises(InvalidPath):
        parse("/a/b[novalue]/c")


def test_interface_counters_follow_the_port_counters() -> None:
    rt = runtime()
    rt.start()
    rt.advance(1_000_000_000)  # 1 ms: both flows done
    port = rt.devices["rx"].ports["p0"]
    base = "/interfaces/interface[name=p0]/state"
    assert value(rt, "rx", f"{base}/counters/in-octets") == port.rx_bytes == 400 * 64 * KIB
    assert value(rt, "rx", f"{base}/counters/in-pkts") == port.rx_frames
    assert value(rt, "rx", f"{base}/oper-status") == "UP"
    assert value(rt, "rx", f"{base}/high-speed") == 400_000
    leaf = rt.devices["leaf"]
    assert value(rt, "leaf", "/qos/ecn/state/marked-frames") == leaf.counters["ecn_marked_frames"] > 0
    assert value(rt, "leaf", "/system/state/counters/buffer-peak-bytes") == leaf.counters["buffer_peak_bytes"]
    assert len(select(leaf, parse("/interfaces/interface[name=*]/state/counters/out-octets"))) == 3


def test_a_snapshot_selects_what_a_scan_of_every_leaf_does() -> None:
    """The index by element names is only a shortcut: for every prefix of every leaf path, with a
    name or a key made a wildcard, keys dropped, or ``...`` put in, it finds the leaves a scan does."""
    rt = runtime()
    rt.start()
    rt.advance(100_000_000)
    tried = 0
    for device in rt.devices.values():
        snapshot, every = Snapshot(device), leaves(device)
        patterns: set[Path] = {()}
        for path, _ in every:
            for depth in range(1, len(path) + 1):
                prefix = path[:depth]
                name, keys = prefix[-1]
                patterns |= {prefix, (*prefix[:-1], ("*", keys)), (*prefix[:-1], (name, ())),
                             (*prefix[:-1], (name, tuple((k, "*") for k, _ in keys))),
                             (("...", ()), *prefix[1:]), (*prefix[:1], ("...", ()), prefix[-1])}
        for pattern in patterns:
            scanned = [leaf for leaf in every if matches(pattern, leaf[0])]
            if scanned:
                assert snapshot.select(pattern) == scanned, render(pattern)
            else:
                with pytest.raises(PathNotFound):
                    snapshot.select(pattern)
            assert len(snapshot.candidates(pattern)) >= len(scanned)
            tried += 1
    assert tried > 500


def test_unknown_paths_are_not_found() -> None:
    rt = runtime()
    with pytest.raises(PathNotFound, match="nothing at /nowhere"):
        select(rt.devices["leaf"], parse("/nowhere"))
    with pytest.raises(PathNotFound):
        select(rt.devices["tx"], parse("/qos/ecn"))  # a tester has no QoS


def test_set_checks_types_and_ranges_before_anything_changes() -> None:
    rt = runtime()
    leaf = rt.devices["leaf"]
    with pytest.raises(InvalidValue, match="unsigned integer"):
        plan_set(leaf, [(parse("/qos/ecn/config/kmin-bytes"), "lots")], set())
    with pytest.raises(InvalidValue, match="boolean"):
        plan_set(leaf, [(parse("/qos/pfc/config/enabled"), 1)], set())
    with pytest.raises(InvalidValue, match="below kmax"):
        plan_set(leaf, [(parse("/qos/ecn/config/kmin-bytes"), 4 << 20)], set())
    with pytest.raises(InvalidValue, match="between 1 and"):
        plan_set(leaf, [(parse("/interfaces/interface[name=o]/config/high-speed"), 0)], {"out"})
    [shared] = plan_set(leaf, [(parse("/interfaces/interface[name=o]/config/high-speed"), 100_000)], set())
    assert (shared.link, shared.rate_bps, shared.shared) == ("out", 100 * 10**9, True)  # its far end is elsewhere
    with pytest.raises(PathNotFound, match="writable"):
        plan_set(leaf, [(parse("/qos/ecn/state/marked-frames"), 0)], set())
    assert isinstance(leaf, Switch) and leaf.ecn_kmin == 128 * KIB


def test_set_applies_ecn_pfc_and_rate() -> None:
    rt = runtime()
    leaf = rt.devices["leaf"]
    assert isinstance(leaf, Switch)
    updates = expand(parse("/qos/ecn/config"), {"kmin-bytes": 1 << 20, "kmax-bytes": 2 << 20})
    updates += [(parse("/qos/pfc/config/enabled"), False),
                (parse("/interfaces/interface[name=o]/config/high-speed"), 100_000)]
    changes = plan_set(leaf, updates, {"out"})
    for change in changes:
        change.apply()
    assert (leaf.ecn_kmin, leaf.ecn_kmax) == (1 << 20, 2 << 20)
    assert leaf.ecn_marker is not None and leaf.ecn_marker.kmin == 1 << 20
    assert not leaf.pfc and not leaf.lossless
    assert rt.links["out"].rate_bps == 100 * 10**9
    assert value(rt, "leaf", "/interfaces/interface[name=o]/state/high-speed") == 100_000
    assert {c.path for c in changes} == {"/qos/ecn/config", "/qos/pfc/config/enabled",
                                         "/interfaces/interface[name=o]/config/high-speed"}


def test_every_device_kind_of_the_default_scenario_has_its_paths() -> None:
    from orchestrator.scenario.loader import load_scenario

    scenario = load_scenario("scenarios/default.yaml")
    rt = HostRuntime(scenario, "h", {d.name: "h" for d in scenario.devices})
    rt.start()
    rt.advance(20_000_000_000)  # 20 ms: the job is computing and sending
    assert value(rt, "otn-dc1", "/aps/aps-modules/aps-module[name=0]/state/active-path") == "WORKING"
    assert value(rt, "gw-dc1", "/qos/buffer/state/size-bytes") > 1 << 30  # the gateway's deep buffer
    dc = value(rt, "gw-dc1", "/gateway/state/dc-capacity-bps")
    wan = value(rt, "gw-dc1", "/gateway/state/wan-capacity-bps")
    assert isinstance(dc, int) and isinstance(wan, int) and wan > 0
    assert value(rt, "gw-dc1", "/gateway/state/convergence") == dc / wan
    assert value(rt, "dc1-s0", "/gpus/state/compute-ps") > 0
    # busy time runs with the clock: at most the virtual time reached, and the GPUs have been computing
    busy, now = value(rt, "dc1-s0", "/gpus/gpu[id=0]/state/busy-ps"), rt.engine.now
    assert isinstance(busy, int) and 0 < busy <= now
    assert value(rt, "dc1-s0", "/gpus/gpu[id=0]/state/utilization") == pytest.approx(100 * busy / now)
    assert value(rt, "dc1-s0", "/nics/nic[name=nic0]/state/ports") == "nic0"
    assert value(rt, "otn-dc1", "/system/state/counters/protection-switches") == 0


def test_gnmi_sets_of_every_host_are_written_in_the_order_they_took_effect(tmp_path) -> None:
    import json

    from orchestrator.run import collect_gnmi_sets, write_gnmi_sets
    from tests.helpers import two_testers

    one = {"seq": 0, "at_ps": 5, "window": 2, "kind": "gnmi-set", "device": "b", "path": "/x", "value": 1}
    two = dict(one, seq=1, at_ps=3, device="c")
    sets = collect_gnmi_sets({"h1": {"inputs": [one]}, "h2": {"inputs": [two]}, "h3": {}})
    assert [(i["host"], i["at_ps"]) for i in sets] == [("h2", 3), ("h1", 5)]
    scenario = parse_scenario(two_testers(), "scenarios/x.yaml")
    assert write_gnmi_sets([], tmp_path, scenario) is None
    (tmp_path / "inputs.json").write_text('{"scenario": "scenarios/x.yaml", "seed": 1, "faults": [1]}')
    path = write_gnmi_sets(sets, tmp_path, scenario, merge=True)
    assert path is not None and json.loads(path.read_text()) == {"scenario": "scenarios/x.yaml", "seed": 1,
                                                                "faults": [1], "gnmi_sets": sets}
    write_gnmi_sets(sets, tmp_path, scenario)  # a run without injected faults: an earlier run's file is not kept
    assert json.loads(path.read_text()) == {"scenario": "scenarios/x.yaml", "seed": 1, "faults": [],
                                            "gnmi_sets": sets}


def test_queue_pairs_of_an_rdma_nic() -> None:
    from tests.helpers import two_testers

    text = two_testers(flows="  - {name: f, src: ta/p0, dst: tb/p0, transport: rdma, bytes: 1MiB}")
    scenario = parse_scenario(text, "<test>")
    rt = HostRuntime(scenario, "h", {d.name: "h" for d in scenario.devices})
    rt.start()
    rt.advance(10_000_000_000)
    [(path, state)] = select(rt.devices["ta"], parse("/nics/nic[name=*]/qps/qp[name=*]/state/state"))
    assert state == "complete"
    assert value(rt, "ta", render(path[:-1]) + "/acked-bytes") == 1 << 20


def test_a_forced_protection_switch_moves_the_selector_and_says_why() -> None:
    from orchestrator.scenario.loader import load_scenario

    scenario = load_scenario("scenarios/wan/protection-1plus1.yaml")
    rt = HostRuntime(scenario, "h", {d.name: "h" for d in scenario.devices})
    rt.start()
    rt.advance(1_000_000)
    node = next(d for d in rt.devices.values() if d.kind == "otn")
    aps = "/aps/aps-modules/aps-module[name=0]"
    with pytest.raises(InvalidValue, match="takes WORKING or PROTECTION"):
        plan_set(node, expand(parse(f"{aps}/config/force-side"), "sideways"), set())
    with pytest.raises(PathNotFound, match="no APS module '9'"):
        plan_set(node, expand(parse("/aps/aps-modules/aps-module[name=9]/config/force-side"), "WORKING"), set())
    [change] = plan_set(node, expand(parse(f"{aps}/config/force-side"), "protection"), set())
    assert value(rt, node.name, f"{aps}/state/active-path") == "WORKING"
    change.apply()
    assert value(rt, node.name, f"{aps}/state/active-path") == "PROTECTION"
    assert node.protection_events[-1]["reason"] == "forced switch (management)"
    assert value(rt, node.name, "/system/state/counters/protection-switches") >= 1


def test_otn_logical_channels_and_a_flexo_resize_of_a_protected_line() -> None:
    from orchestrator.scenario.loader import load_scenario

    scenario = load_scenario("scenarios/wan/protection-1plus1.yaml")
    rt = HostRuntime(scenario, "h", {d.name: "h" for d in scenario.devices})
    rt.start()
    rt.advance(1_000_000)
    node = rt.devices["otn-dc1"]
    channels = "/terminal-device/logical-channels/channel"
    assert [value(rt, node.name, f"{channels}[index={i}]/state/{leaf}") for i in (0, 1)
            for leaf in ("line-port", "protection-role", "carrying-traffic", "rate-bps")] == [
        "dc2-p", "PROTECTION", False, 800 * 10**9, "dc2-w", "WORKING", True, 800 * 10**9]
    assert value(rt, node.name, f"{channels}[index=1]/state/length-mm") == 300 * 10**6
    assert value(rt, node.name, f"{channels}[index=1]/otn/state/pre-fec-ber/instant") == 0.0
    group = "/terminal-device/flexo-groups/flexo-group[peer=otn-dc2]"
    assert [value(rt, node.name, f"{group}/state/{leaf}") for leaf in ("size", "odus", "capacity-bps")] == [
        8, 1, 800 * 10**9]
    with pytest.raises(PathNotFound, match="no line toward 'otn-dc9'"):
        plan_set(node, expand(parse(group.replace("dc2", "dc9") + "/config/size"), 4), set())
    with pytest.raises(InvalidValue, match="between 1 and"):
        plan_set(node, expand(parse(f"{group}/config/size"), 0), set())
    # both paths of the line shrink to 4 x 100G; the far node runs on this host too
    changes = plan_set(node, expand(parse(f"{group}/config/size"), 4), rt.local_links)
    assert sorted((c.link, c.rate_bps, c.shared) for c in changes) == [
        ("wan-dc1-dc2", 400 * 10**9, False), ("wan-dc1-dc2-protection", 400 * 10**9, False)]
    for change in changes:
        change.apply()
    assert value(rt, node.name, f"{group}/config/size") == 4
    assert value(rt, "otn-dc2", "/terminal-device/flexo-groups/flexo-group[peer=otn-dc1]/state/size") == 4
    assert value(rt, node.name, "/system/state/counters/line-rate-changes") == 2


def test_a_flexo_set_does_what_the_scenarios_flexo_fault_does() -> None:
    import dataclasses

    from orchestrator.results import deterministic_view
    from orchestrator.run import run_scenario
    from orchestrator.scenario.loader import load_scenario
    from services.gnmi import SET_INDEX

    with_faults = load_scenario("scenarios/wan/flexo-resize.yaml")
    assert [f.rate_bps for f in with_faults.faults] == [400 * 10**9, 800 * 10**9]
    group = "/terminal-device/flexo-groups/flexo-group[peer=otn-dc2]/config/size"

    def by_gnmi(runtime: HostRuntime) -> None:
        node = runtime.devices.get("otn-dc1")
        if node is None:
            return
        for k, (at_ps, size) in enumerate(((10_000_000_000, 4), (20_000_000_000, 8))):
            for j, change in enumerate(plan_set(node, expand(parse(group), size), runtime.local_links)):
                runtime.engine.add_change(at_ps, SET_INDEX + 2 * k + j, change.apply)

    faults = deterministic_view(run_scenario(with_faults))
    sets = deterministic_view(run_scenario(dataclasses.replace(with_faults, faults=()), prepare=by_gnmi))
    assert sets["devices"] == faults["devices"] and sets["flows"] == faults["flows"]


def test_a_flexo_size_shared_by_odus_reads_back_as_set_and_a_late_set_is_dropped() -> None:
    from pathlib import Path

    from services.gnmi import ManagementState

    text = Path("scenarios/wan/flexo-resize.yaml").read_text().replace("clients: 1", "clients: 3\n  odus: 3")
    scenario = parse_scenario(text.replace("client_rate: 800G", "client_rate: 400G"), "<test>")
    rt = HostRuntime(scenario, "h", {d.name: "h" for d in scenario.devices})
    rt.start()
    rt.advance(1_000_000)
    group = "/terminal-device/flexo-groups/flexo-group[peer=otn-dc2]"
    assert [value(rt, "otn-dc1", f"{group}/state/{leaf}") for leaf in ("size", "odus")] == [8, 3]
    changes = plan_set(rt.devices["otn-dc1"], expand(parse(f"{group}/config/size"), 4), rt.local_links)
    assert [c.rate_bps for c in changes] == [400 * 10**9 // 3] * 3  # 133.3G each
    state = ManagementState()
    state.pending.extend(changes)
    state.apply_pending(rt, 1, rt.window_end, rt.window_end + 1_000_000)
    assert [i["index"] for i in state.inputs] == [(1 << 40) + k for k in range(3)]
    rt.advance(3_000_000)
    assert value(rt, "otn-dc1", f"{group}/config/size") == 4  # not 3: the ODUs' rates round down
    # a Set that could take effect only when the run is over is not applied, nor recorded
    state.pending.extend(changes)
    state.apply_pending(rt, 2, scenario.duration_ps, scenario.duration_ps)
    assert len(state.inputs) == 3 and not state.pending
