"""The supernodes: block expands into GPU servers (or a fabric's), OLink switches in one or two tiers and
the links between them, exactly and deterministically; every mistake fails with one line naming the key
as written; a job's ranks may talk over OLink inside a supernode and nowhere else without NICs."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from emulators.gpu_server.gpus import GPU_TYPES
from emulators.model.scenario import Endpoint, Scenario
from emulators.olink import spec as olink
from orchestrator.scenario.expand import expand
from orchestrator.scenario.loader import ScenarioError, parse_scenario
from orchestrator.scenario.units import convert_units
from orchestrator.workload.hardware import nic_ports_of

SOURCE = "scenarios/s.yaml"
T = 10**12

ONE_TIER = """\
duration: 1ms
supernodes:
  sn:
    gpus: 16
    site: dc1
    server_options: {gpus: 8, gpu: h800}
    switch_options: {latency: 300ns, in_network: true}
"""

TWO_TIERS = """\
duration: 1ms
supernodes:
  big: {gpus: 64, radix: 16, spines: 4, planes: 2, rate: 800G, length: 1m, uplink_length: 3m,
        server_options: {gpus: 8}}
"""

ON_A_FABRIC = """\
duration: 1ms
fabrics:
  dc1: {site: dc1, leaves: 2, spines: 2, servers_per_leaf: 3, server_rate: 400G, server_kind: gpu_server,
        server_options: {gpus: 4, scale_up_bandwidth: 2T}}
supernodes:
  sn: {gpus: 8, count: 2, fabric: dc1}
  more: {gpus: 8, fabric: dc1, planes: 2}
"""

JOB = """\
job:
  model: llama2-7b
  model_overrides: {layers: 2}
  parallel: {tp: 16, pp: 1, dp: 1}
  global_batch: 4
  sequence: 128
"""


def load(text: str) -> Scenario:
    return parse_scenario(text, SOURCE)


def test_one_tier_makes_servers_a_switch_and_a_link_per_gpu() -> None:
    s = load(ONE_TIER)
    assert [d.name for d in s.devices] == ["sn-s0", "sn-s1", "sn-sw"]
    server = s.device("sn-s1")
    assert (server.kind, server.site, server.options) == ("gpu_server", "dc1", {"gpus": 8, "gpu": "h800"})
    assert server.ports == tuple(f"olink{g}" for g in range(8))  # no NICs: the supernode is all it talks over
    assert nic_ports_of(server, 0) == ()
    switch = s.device("sn-sw")
    assert (switch.kind, switch.site) == (olink.KIND, "dc1")
    assert switch.ports == tuple(f"p{i}" for i in range(16))
    assert switch.options == {"latency": 300_000, "in_network": True}
    assert [link.name for link in s.links] == [f"sn-s{n}.olink{g}" for n in range(2) for g in range(8)]
    link = s.links[9]
    # the port rate defaults to the GPU type's scale-up bandwidth, the length to 2 m
    assert (link.a, link.z, link.rate_bps, link.length_mm) == (
        Endpoint("sn-s1", "olink1"), Endpoint("sn-sw", "p9"), GPU_TYPES["h800"].scale_up_bps, 2000)


def test_two_tiers_make_leaves_and_spines_per_plane() -> None:
    s = load(TWO_TIERS)
    switches = [d.name for d in s.devices if d.kind == olink.KIND]
    # 64 GPUs on leaves of radix/2 = 8 GPU ports: 8 leaves and 4 spines per plane
    assert switches == sorted([f"big-{p}-l{i}" for p in range(2) for i in range(8)]
                              + [f"big-{p}-sp{j}" for p in range(2) for j in range(4)])
    assert s.device("big-1-l7").ports == (*(f"p{k}" for k in range(8)), "up0", "up1", "up2", "up3")
    assert s.device("big-0-sp3").ports == tuple(f"p{i}" for i in range(8))
    assert s.device("big-s7").ports == tuple(f"olink{g}-{p}" for g in range(8) for p in range(2))
    names = [link.name for link in s.links]
    assert len(names) == 2 * (64 + 8 * 4)
    plane_0 = [f"big-s{n}.olink{g}-0" for n in range(8) for g in range(8)]
    uplinks_0 = [f"big-0-l{i}.up{j}" for i in range(8) for j in range(4)]
    assert names[:96] == plane_0 + uplinks_0  # a plane's GPU links, then its uplinks; then the next plane
    links = {link.name: link for link in s.links}
    gpu = links["big-s3.olink2-1"]  # GPU 26 of the supernode: leaf 3, port 2
    assert (gpu.z, gpu.rate_bps, gpu.length_mm) == (Endpoint("big-1-l3", "p2"), 800 * 10**9, 1000)
    up = links["big-1-l5.up3"]
    # non-blocking: 8 GPU ports x 800G over 4 spines
    assert (up.a, up.z, up.rate_bps, up.length_mm) == (
        Endpoint("big-1-l5", "up3"), Endpoint("big-1-sp3", "p5"), 1600 * 10**9, 3000)


@pytest.mark.parametrize(("gpus", "switches", "links"), [
    (16, 1, 16), (64, 1, 64), (256, 8 + 32, 256 + 8 * 32), (1024, 32 + 32, 1024 + 32 * 32),
])
def test_the_sizes_users_ask_for_fit_switches_of_radix_64(gpus: int, switches: int, links: int) -> None:
    s = load(f"duration: 1ms\nsupernodes:\n  sn: {{gpus: {gpus}}}\n")
    assert sum(d.kind == olink.KIND for d in s.devices) == switches
    assert sum(d.kind == "gpu_server" for d in s.devices) == gpus // 8
    assert len(s.links) == links


def test_planes_share_the_gpu_type_bandwidth_and_count_names_the_supernodes() -> None:
    s = load("duration: 1ms\nsupernodes:\n  sn: {gpus: 8, count: 2, planes: 2}\n")
    assert [d.name for d in s.devices] == ["sn0-s0", "sn0-sw0", "sn0-sw1", "sn1-s0", "sn1-sw0", "sn1-sw1"]
    assert {link.rate_bps for link in s.links} == {GPU_TYPES["h100"].scale_up_bps // 2}
    assert olink.scale_up_ports(s.device("sn1-s0").ports)[3] == ["olink3-0", "olink3-1"]
    assert {link.z.device for link in s.links if link.a.port.endswith("-1")} == {"sn0-sw1", "sn1-sw1"}


def test_supernodes_take_a_fabrics_servers_in_order() -> None:
    s = load(ON_A_FABRIC)
    # 8 GPUs of 4-GPU servers: dc1-s0, s1 (sn0), s2, s3 (sn1), then s4, s5 for the next block
    links = {link.name: link for link in s.links}
    assert links["dc1-s1.olink3"].z == Endpoint("sn0-sw", "p7")
    assert links["dc1-s3.olink0"].z == Endpoint("sn1-sw", "p4")
    assert links["dc1-s5.olink2-1"].z == Endpoint("more-sw1", "p6")
    server = s.device("dc1-s2")
    assert server.ports == ("nic0", "nic1", "nic2", "nic3", "olink0", "olink1", "olink2", "olink3")
    assert nic_ports_of(server, 3) == ("nic3",)  # the NICs are untouched
    assert links["dc1-s2.nic1"].z.device == "dc1-leaf0"
    # the port rate follows the fabric's server options; the switches sit with their servers
    assert links["dc1-s0.olink0"].rate_bps == 2 * T and links["dc1-s4.olink0-0"].rate_bps == T
    assert s.device("sn1-sw").site == "dc1"


def test_a_fabric_joined_over_the_wan_gives_its_supernodes_its_site() -> None:
    text = """\
duration: 1ms
fabrics:
  dc1: {leaves: 1, spines: 0, servers_per_leaf: 2, server_rate: 400G, server_kind: gpu_server,
        server_options: {gpus: 2}}
  dc2: {leaves: 1, spines: 0, servers_per_leaf: 1, server_rate: 400G}
wan: {line_rate: 800G, pairs: [{a: dc1, b: dc2, length: 10km}]}
supernodes:
  sn: {gpus: 4, fabric: dc1}
"""
    assert load(text).device("sn-sw").site == "dc1"


def test_faults_name_a_supernodes_links_and_switches() -> None:
    text = ("duration: 1ms\nsupernodes:\n  sn: {gpus: 8}\nfaults:\n  - {at: 0.5ms, device: sn-sw, state: down}\n"
            "  - {at: 0.6ms, link: sn-s0.olink3, ber: 1e-9}\n")
    faults = load(text).faults
    assert [(f.link, f.describe()) for f in faults[:8]] == [(f"sn-s0.olink{g}", "down") for g in range(8)]
    assert (faults[8].link, faults[8].ber) == ("sn-s0.olink3", 1e-9)


def test_expansion_is_deterministic_and_leaves_the_document_alone() -> None:
    for text in (ONE_TIER, TWO_TIERS, ON_A_FABRIC):
        document = yaml.safe_load(text)
        before = copy.deepcopy(document)
        first, second = expand(convert_units(document)), expand(convert_units(copy.deepcopy(document)))
        assert json.dumps(first.document) == json.dumps(second.document)
        assert document == before and "supernodes" not in first.document


def one(old: str, new: str) -> str:
    assert old in ONE_TIER, old
    return ONE_TIER.replace(old, new, 1)


def fabric(old: str, new: str) -> str:
    assert old in ON_A_FABRIC, old
    return ON_A_FABRIC.replace(old, new, 1)


MALFORMED = [
    pytest.param(one("gpus: 16", "gpus: 12"), "supernodes.sn.gpus",
                 "12 GPUs do not fill whole servers of 8 GPUs; make gpus a multiple of 8", id="partial-server"),
    pytest.param(one("gpus: 16", "gpus: 1"), "supernodes.sn.gpus", "too small; the minimum is 2", id="one-gpu"),
    pytest.param(one("gpus: 16", "gpus: 2048"), "supernodes.sn.gpus", "too large; the maximum is 1024",
                 id="too-many-gpus"),
    pytest.param(one("gpus: 16", "gpus: 16\n    tiers: 1\n    radix: 8"), "supernodes.sn.tiers",
                 "one tier of 8-port switches joins at most 8 GPUs, and this supernode has 16; use tiers: 2",
                 id="one-tier-too-small"),
    pytest.param(one("gpus: 16", "gpus: 16\n    tiers: 3"), "supernodes.sn.tiers", "allowed: 1, 2",
                 id="three-tiers"),
    pytest.param(one("gpus: 16", "gpus: 16\n    spines: 2"), "supernodes.sn.spines",
                 "goes with tiers: 2; a one-tier supernode has no spines", id="spines-one-tier"),
    pytest.param(one("gpus: 16", "gpus: 16\n    uplink_rate: 1T"), "supernodes.sn.uplink_rate", "goes with tiers: 2",
                 id="uplink-rate-one-tier"),
    pytest.param(one("gpus: 16", "gpus: 16\n    radix: 8\n    spines: 5"), "supernodes.sn.spines",
                 "5 uplinks beside 4 GPU ports are more than a leaf's 8 ports; give at most 4 spines",
                 id="too-many-spines"),
    pytest.param(one("gpus: 16", "gpus: 1024\n    radix: 16"), "supernodes.sn.radix",
                 "1024 GPUs need 128 leaves of 8 GPU ports, and a 16-port spine joins at most 16; raise radix to "
                 "at least 46", id="spine-too-small"),
    pytest.param(one("gpus: 16", "gpus: 16\n    radix: 256"), "supernodes.sn.radix", "the maximum is 255",
                 id="radix-past-address"),
    pytest.param(one("gpus: 16", "gpus: 16\n    planes: 32"), "supernodes.sn.planes",
                 "32 planes give each server 256 ports, more than the 255", id="too-many-ports"),
    pytest.param(one("gpus: 16", "gpus: 16\n    rate: 1.6X"), "supernodes.sn.rate", "not a rate", id="bad-rate"),
    pytest.param(one("gpus: 16", "gpus: 16\n    length: 2"), "supernodes.sn.length", "no unit", id="bad-length"),
    pytest.param(one("gpus: 16", "gpus: 16\n    tiers: 2\n    uplink_length: 3x"), "supernodes.sn.uplink_length",
                 "not a length", id="bad-uplink-length"),
    pytest.param(one("gpus: 16", "gpus: 16\n    plane: 2"), "supernodes.sn.plane",
                 "unknown key (did you mean planes?)", id="unknown-key"),
    pytest.param(one("  sn:\n", "  SN:\n"), "supernodes.SN", "lowercase", id="uppercase-name"),
    pytest.param(one("in_network: true", "in_network: yes please"), "supernodes.sn.switch_options.in_network",
                 "expected true or false", id="switch-option-type"),
    pytest.param(one("in_network: true", "in_netwrk: true"), "supernodes.sn.switch_options.in_netwrk",
                 "unknown key (did you mean in_network?)", id="switch-option-unknown"),
    pytest.param(one("latency: 300ns", "latency: 300"), "supernodes.sn.switch_options.latency", "no unit",
                 id="switch-option-unit"),
    pytest.param(one("gpu: h800", "gpu: b200"), "supernodes.sn.server_options.gpu",
                 "'b200' is not allowed; allowed: h100, h800", id="unknown-gpu"),
    pytest.param(one("gpus: 8,", "gpus: 0,"), "supernodes.sn.server_options.gpus",
                 "expected a whole number of 1 or more, got 0", id="zero-gpus-per-server"),
    pytest.param(one("gpus: 8,", "gpus: 8, mfu: 2,"), "supernodes.sn.server_options.mfu", "too large",
                 id="server-option"),
    pytest.param("sites: [dc9]\n" + ONE_TIER, "supernodes.sn.site", "site 'dc1' is not in sites; sites: dc9",
                 id="site-not-in-sites"),
    pytest.param(one("supernodes:", "devices:\n  sn-sw: {kind: tester, ports: [p0]}\nsupernodes:"), "supernodes.sn",
                 "makes device 'sn-sw', which is also written at devices.sn-sw; names must be unique",
                 id="device-name-clash"),
    pytest.param(fabric("fabric: dc1, planes", "fabric: dc9, planes"), "supernodes.more.fabric",
                 "no fabric named 'dc9'; fabrics: dc1", id="unknown-fabric"),
    pytest.param(fabric("{gpus: 8, count: 2, fabric: dc1}", "{gpus: 8, count: 3, fabric: dc1}"),
                 "supernodes.more.fabric",
                 "fabric 'dc1' has 0 servers not yet in a supernode, and a supernode of 8 GPUs needs 2",
                 id="fabric-used-up"),
    pytest.param(fabric("{gpus: 8, count: 2, fabric: dc1}", "{gpus: 16, count: 2, fabric: dc1}"),
                 "supernodes.sn.fabric",
                 "fabric 'dc1' has 6 servers not yet in a supernode, and 2 supernodes of 16 GPUs need 8 of its "
                 "4-GPU servers", id="fabric-too-small"),
    pytest.param(fabric("server_kind: gpu_server,", ""), "supernodes.sn.fabric",
                 "fabric 'dc1' has tester servers, and a supernode joins GPUs; give the fabric server_kind: "
                 "gpu_server", id="fabric-of-testers"),
    pytest.param(fabric("count: 2, fabric: dc1", "count: 2, fabric: dc1, site: dc1"), "supernodes.sn.site",
                 "comes from fabric 'dc1', whose servers the supernode takes", id="site-with-fabric"),
    pytest.param(fabric("count: 2, fabric: dc1", "count: 2, fabric: dc1, server_options: {}"),
                 "supernodes.sn.server_options", "comes from fabric 'dc1'", id="server-options-with-fabric"),
    pytest.param(fabric("gpus: 4, scale_up", "gpus: 3, scale_up"), "supernodes.sn.gpus",
                 "8 GPUs do not fill whole servers of 3 GPUs", id="fabric-servers-do-not-divide"),
    pytest.param(fabric("scale_up_bandwidth: 2T", "scale_up_bandwidth: 2Q"),
                 "fabrics.dc1.server_options.scale_up_bandwidth", "not a rate", id="fabric-bandwidth"),
]


@pytest.mark.parametrize(("text", "where", "what"), MALFORMED)
def test_malformed_supernode_fails_with_one_line_naming_the_written_key(text: str, where: str, what: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: {where}: "), message
    assert what in message, message
    assert "internal error" not in message and "{'" not in message


# --- ranks that talk -----------------------------------------------------------------------------


def test_ranks_in_one_supernode_talk_over_olink_without_nics() -> None:
    s = load(ONE_TIER + JOB)  # TP 16 over the two servers of the supernode
    assert s.job is not None
    assert {place.device for place in s.job.ranks} == {"sn-s0", "sn-s1"}
    two_tiers = load(TWO_TIERS + JOB.replace("tp: 16, pp: 1, dp: 1", "tp: 8, pp: 2, dp: 4"))
    assert two_tiers.job is not None and len(two_tiers.job.ranks) == 64  # leaves and spines join them


def test_ranks_in_different_supernodes_need_nics() -> None:
    apart = "duration: 1ms\nsupernodes:\n  sn: {gpus: 8, count: 2}\n" + JOB.replace("tp: 16, pp: 1, dp: 1",
                                                                                     "tp: 8, pp: 1, dp: 2")
    with pytest.raises(ScenarioError) as caught:
        load(apart)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: job.placement: rank "), message
    assert "outside its supernode, but that GPU has no linked NIC port" in message, message
    # on a fabric they reach each other through their NICs
    joined = load(ON_A_FABRIC + JOB.replace("tp: 16, pp: 1, dp: 1", "tp: 8, pp: 1, dp: 2")
                  + "  servers: [dc1-s0, dc1-s1, dc1-s2, dc1-s3]\n")
    assert joined.job is not None and joined.job.ranks[8].device == "dc1-s2"


def test_a_supernode_may_span_several_joined_switches() -> None:
    text = """\
duration: 1ms
devices:
  a: {kind: gpu_server, ports: [olink0], options: {gpus: 1}}
  b: {kind: gpu_server, ports: [olink0], options: {gpus: 1}}
  x: {kind: olink, ports: [p0, up]}
  y: {kind: olink, ports: [p0, up]}
links:
  - {a: a/olink0, z: x/p0, rate: 1T, length: 1m}
  - {a: b/olink0, z: y/p0, rate: 1T, length: 1m}
  - {name: x-y, a: x/up, z: y/up, rate: 1T, length: 1m}
""" + JOB.replace("tp: 16, pp: 1, dp: 1", "tp: 1, pp: 1, dp: 2")
    assert load(text).job is not None
    with pytest.raises(ScenarioError, match=r"job\.placement: rank 0 on a GPU 0 talks to another server outside "
                                            r"its supernode, but that GPU has no linked NIC port"):
        load(text.replace("  - {name: x-y, a: x/up, z: y/up, rate: 1T, length: 1m}\n", ""))
