"""Fabrics, traffic patterns and plane faults expand into exact, deterministic devices, links, flows
and faults, and every mistake in them fails with one line naming the key as written."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from emulators.model.faults import LinkState
from emulators.model.scenario import RDMA, RDMA_PRIORITY, Endpoint, Scenario, scenario_to_dict
from orchestrator.scenario.expand import expand
from orchestrator.scenario.loader import ScenarioError, parse_scenario
from orchestrator.scenario.units import convert_units

SOURCE = "scenarios/f.yaml"
G = 10**9

ONE_PLANE = """\
duration: 10ms
fabrics:
  dc1:
    site: dc1
    leaves: 2
    spines: 2
    servers_per_leaf: 4
    server_rate: 400G
    oversubscription: 2
    server_options: {rdma: {rto: 100us}}
    switch_options: {buffer: 32MiB}
traffic:
  - {pattern: permutation, fabric: dc1, name: perm, transport: rdma, bytes: 1MiB}
"""

TWO_PLANES = """\
duration: 10ms
devices:
  probe: {kind: tester, ports: [p0]}
  peer: {kind: tester, ports: [p0]}
links:
  - {name: probe-link, a: probe/p0, z: peer/p0, rate: 100G, length: 1m}
fabrics:
  dc1: {planes: 2, mode: gse, leaves: 2, spines: 3, servers_per_leaf: 2, server_rate: 400G, uplink_rate: 800G,
        server_link_length: 2m, uplink_length: 100m}
traffic:
  - {pattern: incast, fabric: dc1, name: in, to: dc1-s3, transport: rdma, for: 1ms, rate: 200G, start: 1ms}
faults:
  - {at: 1ms, link: dc1-s0.nic-a, state: down}
  - {at: 2ms, fabric: dc1, plane: b, state: down}
  - {at: 3ms, link: dc1-s0.nic-a, state: up}
"""


def load(text: str) -> Scenario:
    return parse_scenario(text, SOURCE)


def test_a_fabric_expands_into_servers_switches_and_links() -> None:
    scenario = load(ONE_PLANE)
    names = [d.name for d in scenario.devices]
    assert names == [
        "dc1-leaf0", "dc1-leaf1", "dc1-s0", "dc1-s1", "dc1-s2", "dc1-s3", "dc1-s4", "dc1-s5", "dc1-s6", "dc1-s7",
        "dc1-spine0", "dc1-spine1",
    ]
    server = scenario.device("dc1-s5")
    assert (server.kind, server.site, server.ports) == ("tester", "dc1", ("nic",))
    assert server.options == {"rdma": {"rto": 100_000_000}}  # nested units converted
    leaf = scenario.device("dc1-leaf1")
    assert (leaf.kind, leaf.site) == ("switch", "dc1")
    assert leaf.ports == ("down0", "down1", "down2", "down3", "up0", "up1")
    assert leaf.options == {"buffer": 32 * 2**20, "mode": "roce", "role": "leaf"}
    spine = scenario.device("dc1-spine1")
    assert spine.ports == ("down0", "down1")
    assert spine.options == {"buffer": 32 * 2**20, "mode": "roce", "role": "spine"}

    assert len(scenario.links) == 8 + 2 * 2
    by_name = {link.name: link for link in scenario.links}
    s5 = by_name["dc1-s5.nic"]
    assert (s5.a, s5.z, s5.rate_bps, s5.length_mm) == (
        Endpoint("dc1-s5", "nic"), Endpoint("dc1-leaf1", "down1"), 400 * G, 3000,
    )
    up = by_name["dc1-leaf1.up0"]
    # 4 servers x 400G over 2 spines, oversubscribed 2:1: 400G per uplink
    assert (up.a, up.z, up.rate_bps, up.length_mm) == (
        Endpoint("dc1-leaf1", "up0"), Endpoint("dc1-spine0", "down1"), 400 * G, 30_000,
    )
    assert scenario.sites == ("dc1",)


def test_oversubscription_defaults_to_one_and_may_be_fractional() -> None:
    no_oversubscription = ONE_PLANE.replace("    oversubscription: 2\n", "")
    assert load(no_oversubscription).links[-1].rate_bps == 800 * G
    # 1600G / (1.5 x 2): exactly 533,333,333,333 bit/s, rounded down
    assert load(ONE_PLANE.replace("oversubscription: 2", "oversubscription: 1.5")).links[-1].rate_bps == (
        533_333_333_333
    )


def test_two_planes_double_the_switches_and_bond_each_server_nic() -> None:
    scenario = load(TWO_PLANES)
    switches = [d.name for d in scenario.devices if d.kind == "switch"]
    assert switches == [
        "dc1-a-leaf0", "dc1-a-leaf1", "dc1-a-spine0", "dc1-a-spine1", "dc1-a-spine2",
        "dc1-b-leaf0", "dc1-b-leaf1", "dc1-b-spine0", "dc1-b-spine1", "dc1-b-spine2",
    ]
    assert all(scenario.device(name).options["mode"] == "gse" for name in switches)
    server = scenario.device("dc1-s3")
    assert server.ports == ("nic-a", "nic-b")
    assert server.options == {"nics": {"nic": ["nic-a", "nic-b"]}}
    assert server.site is None

    names = [link.name for link in scenario.links]
    assert names[0] == "probe-link"  # written links come first
    assert names[1:] == [
        "dc1-s0.nic-a", "dc1-s1.nic-a", "dc1-s2.nic-a", "dc1-s3.nic-a",
        "dc1-a-leaf0.up0", "dc1-a-leaf0.up1", "dc1-a-leaf0.up2", "dc1-a-leaf1.up0", "dc1-a-leaf1.up1",
        "dc1-a-leaf1.up2",
        "dc1-s0.nic-b", "dc1-s1.nic-b", "dc1-s2.nic-b", "dc1-s3.nic-b",
        "dc1-b-leaf0.up0", "dc1-b-leaf0.up1", "dc1-b-leaf0.up2", "dc1-b-leaf1.up0", "dc1-b-leaf1.up1",
        "dc1-b-leaf1.up2",
    ]
    by_name = {link.name: link for link in scenario.links}
    assert by_name["dc1-s3.nic-b"].z == Endpoint("dc1-b-leaf1", "down1")
    assert (by_name["dc1-s3.nic-b"].rate_bps, by_name["dc1-s3.nic-b"].length_mm) == (400 * G, 2000)
    up = by_name["dc1-a-leaf0.up1"]
    assert (up.z, up.rate_bps, up.length_mm) == (Endpoint("dc1-a-spine1", "down0"), 800 * G, 100_000)


def test_one_leaf_without_spines() -> None:
    text = ONE_PLANE.replace("leaves: 2", "leaves: 1").replace("spines: 2", "spines: 0")
    scenario = load(text)
    assert [d.name for d in scenario.devices if d.kind == "switch"] == ["dc1-leaf0"]
    assert scenario.device("dc1-leaf0").ports == ("down0", "down1", "down2", "down3")
    assert len(scenario.links) == 4
    # with one leaf a permutation sends to the next server
    assert [(f.src.device, f.dst.device) for f in scenario.flows] == [
        ("dc1-s0", "dc1-s1"), ("dc1-s1", "dc1-s2"), ("dc1-s2", "dc1-s3"), ("dc1-s3", "dc1-s0"),
    ]


def test_permutation_flows_all_cross_the_spines() -> None:
    scenario = load(ONE_PLANE)
    leaf_of = {link.a.device: link.z.device for link in scenario.links if link.name.endswith(".nic")}
    flows = scenario.flows
    assert [f.name for f in flows] == [f"perm-{n}" for n in range(8)]
    assert [(f.src.device, f.dst.device) for f in flows[:5]] == [
        ("dc1-s0", "dc1-s4"), ("dc1-s1", "dc1-s5"), ("dc1-s2", "dc1-s6"), ("dc1-s3", "dc1-s7"), ("dc1-s4", "dc1-s0"),
    ]
    assert all(leaf_of[f.src.device] != leaf_of[f.dst.device] for f in flows)
    assert sorted(f.dst.device for f in flows) == sorted(f.src.device for f in flows)  # a permutation
    first = flows[0]
    assert (first.src.port, first.dst.port, first.transport, first.message_bytes, first.priority) == (
        "nic", "nic", RDMA, 2**20, RDMA_PRIORITY,
    )


def test_incast_sends_from_every_other_server_into_one() -> None:
    flows = load(TWO_PLANES).flows
    assert [f.name for f in flows] == ["in-dc1-s0", "in-dc1-s1", "in-dc1-s2"]
    assert {f.dst for f in flows} == {Endpoint("dc1-s3", "nic-a")}  # the NIC owns both planes' ports
    assert [f.src for f in flows] == [Endpoint(f"dc1-s{n}", "nic-a") for n in range(3)]
    # 200 Gb/s for 1 ms: 25,000,000 bytes each
    assert {(f.message_bytes, f.rate_bps, f.start_ps) for f in flows} == {(25_000_000, 200 * G, 10**9)}


def test_incast_from_chosen_senders_follows_hand_written_flows() -> None:
    text = ONE_PLANE.replace(
        "traffic:\n",
        "flows:\n  - {name: one, src: dc1-s0/nic, dst: dc1-s1/nic, rate: 10G, count: 1}\ntraffic:\n"
        "  - {pattern: incast, fabric: dc1, name: hot, to: dc1-s7, from: [dc1-s2, dc1-s0], transport: raw,"
        " rate: 50G, bytes: 1MiB, priority: 2}\n",
    )
    flows = load(text).flows
    assert [f.name for f in flows] == ["one", "hot-dc1-s2", "hot-dc1-s0", *[f"perm-{n}" for n in range(8)]]
    hot = flows[1]
    assert (hot.transport, hot.rate_bps, hot.count, hot.frame_bytes, hot.priority) == ("raw", 50 * G, 16, 65536, 2)


def test_a_plane_fault_takes_every_link_of_the_plane_at_once() -> None:
    scenario = load(TWO_PLANES)
    plane_b = [
        "dc1-s0.nic-b", "dc1-s1.nic-b", "dc1-s2.nic-b", "dc1-s3.nic-b",
        "dc1-b-leaf0.up0", "dc1-b-leaf0.up1", "dc1-b-leaf0.up2", "dc1-b-leaf1.up0", "dc1-b-leaf1.up1",
        "dc1-b-leaf1.up2",
    ]
    assert scenario.faults == (
        LinkState(0, 10**9, "dc1-s0.nic-a", "down"),
        *(LinkState(1 + i, 2 * 10**9, name, "down") for i, name in enumerate(plane_b)),
        LinkState(11, 3 * 10**9, "dc1-s0.nic-a", "up"),
    )


def test_expansion_is_deterministic_and_leaves_the_document_alone() -> None:
    document = yaml.safe_load(TWO_PLANES)
    before = copy.deepcopy(document)
    first, second = expand(convert_units(document)), expand(convert_units(copy.deepcopy(document)))
    assert json.dumps(first.document) == json.dumps(second.document)
    assert document == before
    assert "fabrics" not in first.document and "traffic" not in first.document
    resolved = [json.dumps(scenario_to_dict(load(TWO_PLANES))) for _ in range(2)]
    assert resolved[0] == resolved[1]


def broken(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def one(old: str, new: str) -> str:
    return broken(ONE_PLANE, old, new)


def two(old: str, new: str) -> str:
    return broken(TWO_PLANES, old, new)


MALFORMED = [
    pytest.param(one("spines: 2", "spines: 0"), "fabrics.dc1.spines", "0 spines can serve only one leaf",
                 id="no-spines-two-leaves"),
    pytest.param(one("oversubscription: 2", "oversubscription: 2\n    uplink_rate: 100G"),
                 "fabrics.dc1.oversubscription", "conflicts with uplink_rate", id="uplink-rate-and-oversubscription"),
    pytest.param(one("oversubscription: 2", "oversubscription: 0.5"), "fabrics.dc1.oversubscription",
                 "too small; the minimum is 1", id="oversubscription-below-one"),
    pytest.param(one("leaves: 2", "leaves: 0"), "fabrics.dc1.leaves", "minimum is 1", id="no-leaves"),
    pytest.param(one("spines: 2\n", "spines: 2\n    planes: 3\n"), "fabrics.dc1.planes", "allowed: 1, 2",
                 id="three-planes"),
    pytest.param(one("server_rate: 400G", "server_rate: 400X"), "fabrics.dc1.server_rate", "not a rate",
                 id="bad-server-rate"),
    pytest.param(two("uplink_length: 100m", "uplink_length: 100"), "fabrics.dc1.uplink_length", "no unit",
                 id="bad-uplink-length"),
    pytest.param(one("    server_rate: 400G\n", ""), "fabrics.dc1.server_rate", "required key is missing",
                 id="no-server-rate"),
    pytest.param(one("leaves: 2", "leaves: 2\n    leafs: 2"), "fabrics.dc1.leafs", "unknown key (did you mean leaves?)",
                 id="unknown-fabric-key"),
    pytest.param(one("  dc1:\n", "  DC1:\n"), "fabrics.DC1", "lowercase", id="uppercase-fabric"),
    pytest.param(one("{buffer: 32MiB}", "{buffer: 32MiB, mode: gse}"), "fabrics.dc1.switch_options.mode",
                 "is set by the fabric, from the fabric's mode key; leave it out here", id="switch-mode"),
    pytest.param(one("{buffer: 32MiB}", "{role: spine}"), "fabrics.dc1.switch_options.role",
                 "is set by the fabric", id="switch-role"),
    pytest.param(one("{buffer: 32MiB}", "{buffer: 32Mb}"), "fabrics.dc1.switch_options.buffer", "not a size",
                 id="switch-option-unit"),
    pytest.param(one("{rto: 100us}", "{rto: 100mi}"), "fabrics.dc1.server_options.rdma.rto", "not a time",
                 id="server-option-nested-unit"),
    pytest.param(one("{rdma: {rto: 100us}}", "{rmda: {}}"), "fabrics.dc1.server_options.rmda", "unknown key",
                 id="server-option-unknown"),
    pytest.param(two("planes: 2,", "planes: 2, server_options: {nics: {x: [nic-a]}},"),
                 "fabrics.dc1.server_options.nics", "is set by the fabric", id="server-nics-two-planes"),
    pytest.param(one("site: dc1", "site: dc1\n    server_kind: router"), "fabrics.dc1.server_kind",
                 "unknown device kind 'router'; known kinds: gateway, gpu_server, olink, otn, switch, tester",
                 id="unknown-server-kind"),
    pytest.param(two("planes: 2,", "planes: 2, server_kind: switch,"), "fabrics.dc1.planes",
                 "dual-plane NICs (the nics option), and server kind 'switch' has none; kinds that do: tester",
                 id="two-planes-without-nics"),
    pytest.param("sites: [dc9]\n" + ONE_PLANE, "fabrics.dc1.site", "site 'dc1' is not in sites; sites: dc9",
                 id="fabric-site-not-in-sites"),
    pytest.param(two("probe: {kind", "dc1-s2: {kind: tester, ports: [p0]}\n  probe: {kind"), "fabrics.dc1",
                 "makes device 'dc1-s2', which is also written at devices.dc1-s2; names must be unique",
                 id="device-name-clash"),
    pytest.param(two("name: probe-link", "name: dc1-a-leaf1.up2"), "fabrics.dc1",
                 "makes link 'dc1-a-leaf1.up2', which is also written at links[0]; names must be unique",
                 id="link-name-clash"),
    pytest.param(one("server_rate: 400G", "server_rate: 400G\n    planes: 2").replace(
                     "fabrics:\n", "fabrics:\n  dc1-a: {leaves: 1, spines: 0, servers_per_leaf: 1, server_rate: 1G}\n"),
                 "fabrics.dc1", "makes device 'dc1-a-leaf0', which fabrics.dc1-a also makes", id="fabrics-clash"),
    pytest.param(two("z: peer/p0", "z: dc1-a-spine0/down1"), "links[8].z (expanded from fabrics.dc1)",
                 "port dc1-a-spine0/down1 is already linked at links[0].z; a port takes one link",
                 id="port-taken-by-hand"),
    pytest.param(one("fabric: dc1, name: perm", "fabric: dc9, name: perm"), "traffic[0].fabric",
                 "no fabric named 'dc9'; fabrics: dc1", id="traffic-unknown-fabric"),
    pytest.param(two("to: dc1-s3", "to: dc1-s9"), "traffic[0].to",
                 "no server named 'dc1-s9' in fabric 'dc1'; its servers: dc1-s0, dc1-s1, dc1-s2, dc1-s3",
                 id="incast-unknown-server"),
    pytest.param(two("to: dc1-s3,", "to: dc1-s3, from: [dc1-s1, dc1-s3],"), "traffic[0].from[1]",
                 "'dc1-s3' is the incast's receiver (to); it cannot send to itself", id="incast-to-itself"),
    pytest.param(two("to: dc1-s3,", "to: dc1-s3, from: [dc1-s1, zz],"), "traffic[0].from[1]",
                 "no server named 'zz'", id="incast-unknown-sender"),
    pytest.param(two("to: dc1-s3, ", ""), "traffic[0].to", "required key is missing", id="incast-without-to"),
    pytest.param(one("name: perm,", "name: perm, to: dc1-s1,"), "traffic[0].to", "only incast patterns take to",
                 id="permutation-with-to"),
    pytest.param(one("transport: rdma, bytes", "transport: raw, bytes"), "traffic[0].rate",
                 "raw flows send at a rate", id="raw-traffic-without-rate"),
    pytest.param(two(", rate: 200G", ""), "traffic[0].for", "needs a rate", id="rdma-traffic-for-without-rate"),
    pytest.param(one("transport: rdma, ", ""), "traffic[0].transport", "required key is missing",
                 id="traffic-without-transport"),
    pytest.param(one("bytes: 1MiB", "bytes: 1MiB, for: 1ms"), "traffic[0].for", "exactly one of: bytes, for",
                 id="traffic-bytes-and-for"),
    pytest.param(one("pattern: permutation", "pattern: alltoall"), "traffic[0].pattern",
                 "allowed: permutation, incast", id="unknown-pattern"),
    pytest.param(one("bytes: 1MiB", "bytes: 0B"), "traffic[0].bytes", "zero", id="traffic-zero-bytes"),
    pytest.param(one("traffic:\n", "flows:\n  - {name: perm-3, src: dc1-s0/nic, dst: dc1-s1/nic, rate: 1G, "
                     "count: 1}\ntraffic:\n"),
                 "traffic[0].name", "duplicate flow name 'perm-3' (also flows[0])", id="traffic-name-clash"),
    pytest.param(one("leaves: 2\n    spines: 2\n    servers_per_leaf: 4",
                     "leaves: 1\n    spines: 0\n    servers_per_leaf: 1"),
                 "traffic[0].fabric", "has one server; a permutation needs two or more", id="permutation-one-server"),
    pytest.param(two("plane: b, state", "state"), "faults[1].plane", "required key is missing",
                 id="plane-fault-without-plane"),
    pytest.param(two("plane: b, state", "plane: c, state"), "faults[1].plane", "allowed: a, b",
                 id="unknown-plane"),
    pytest.param(two("fabric: dc1, plane: b, state: down", "fabric: dc1, plane: b, rate: 100G"), "faults[1].rate",
                 "a plane fault changes state only", id="plane-fault-rate"),
    pytest.param(two("at: 1ms, link: dc1-s0.nic-a, state: down", "at: 1ms, link: dc1-s0.nic-a, plane: a, state: down"),
                 "faults[0].plane", "goes with fabric", id="plane-with-link"),
    pytest.param(two("fabric: dc1, plane", "link: dc1-s0.nic-b, fabric: dc1, plane"), "faults[1].fabric",
                 "conflicts with link; give exactly one of: link, fabric", id="plane-fault-and-link"),
    pytest.param(two("fabric: dc1, plane", "fabric: dc2, plane"), "faults[1].fabric", "no fabric named 'dc2'",
                 id="plane-fault-unknown-fabric"),
    pytest.param(one("traffic:", "faults:\n  - {at: 1ms, fabric: dc1, plane: a, state: down}\ntraffic:"),
                 "faults[0].plane", "fabric 'dc1' has one plane; plane faults need planes: 2",
                 id="plane-fault-one-plane"),
    pytest.param(two("at: 2ms", "at: 20ms"), "faults[1].at", "after the run ends", id="plane-fault-after-end"),
    pytest.param(two("at: 3ms, link: dc1-s0.nic-a", "at: 3ms, link: dc1-s0.nic-c"), "faults[2].link",
                 "no link named 'dc1-s0.nic-c'", id="moved-fault-keeps-its-path"),
]


@pytest.mark.parametrize(("text", "where", "what"), MALFORMED)
def test_malformed_fabric_or_pattern_fails_with_one_line_naming_the_written_key(
    text: str, where: str, what: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        load(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: {where}: "), message
    assert what in message, message
    assert "internal error" not in message and "{'" not in message
