"""The wan: block: sites joined by gateways and OTN nodes, and the WAN faults it expands into."""

from __future__ import annotations

import pytest

from orchestrator.scenario.loader import ScenarioError, parse_scenario

SOURCE = "scenarios/w.yaml"


def scenario(pairs: str, faults: str = "[]", extra: str = "") -> str:
    return f"""
duration: 1s
fabrics:
  dc1: {{leaves: 2, spines: 2, servers_per_leaf: 1, server_rate: 400G}}
  dc2: {{leaves: 1, spines: 0, servers_per_leaf: 1, server_rate: 400G}}
  dc3: {{leaves: 1, spines: 0, servers_per_leaf: 1, server_rate: 400G}}
wan:
  line_rate: 800G
  clients: 2
  client_rate: 400G
  convergence: 4
{extra}  pairs: {pairs}
faults: {faults}
"""


PAIR = "[{a: dc1, b: dc2, length: 300km, protection: {length: 320km, switch_time: 20ms}}]"


def test_a_pair_makes_gateways_otn_nodes_and_their_links() -> None:
    s = parse_scenario(scenario(PAIR), SOURCE)
    gw = s.device("gw-dc1")
    assert gw.kind == "gateway" and gw.site == "dc1" and gw.ports == ("dc0", "dc1", "wan0", "wan1")
    assert gw.options["wan_ports"] == ["wan0", "wan1"]
    otn = s.device("otn-dc1")
    assert otn.ports == ("c0", "c1", "dc2-w", "dc2-p")
    assert otn.options["protection"] == [
        {"kind": "1+1", "working": ["dc2-w"], "protecting": ["dc2-p"], "switch_time": 20 * 10**9}]
    links = {link.name: link for link in s.links}
    # convergence 4: the fabric side carries 4 x (2 x 400G), over two spines
    assert links["gw-dc1.dc0"].rate_bps == links["gw-dc1.dc1"].rate_bps == 1600 * 10**9
    assert links["gw-dc2.dc0"].rate_bps == 3200 * 10**9  # a spine-less fabric: the leaf takes it all
    assert links["wan-dc1-dc2"].length_mm == 300 * 10**6 and links["wan-dc1-dc2-protection"].length_mm == 320 * 10**6
    assert s.device("dc1-spine0").ports[-1] == "gw" and s.device("dc1-s0").site == "dc1"


def test_a_triangle_joins_every_pair_directly() -> None:
    pairs = "[{a: dc1, b: dc2, length: 300km}, {a: dc2, b: dc3, length: 50km}, {a: dc1, b: dc3, length: 50km}]"
    s = parse_scenario(scenario(pairs), SOURCE)
    assert s.device("otn-dc1").ports == ("c0", "c1", "dc2-w", "dc3-w")
    assert {link.name for link in s.links if link.name.startswith("wan-")} == {
        "wan-dc1-dc2", "wan-dc2-dc3", "wan-dc1-dc3"}


def test_wan_faults_expand_into_link_faults_with_restoration() -> None:
    pairs = ("[{a: dc1, b: dc2, length: 300km, protection: {length: 320km},"
             " restoration: {after: 2s, length: 450km}}]")
    faults = ("[{at: 1ms, wan: dc1-dc2, cut: both}, {at: 3ms, wan: dc1-dc2, flexo: 4},"
              " {at: 4ms, wan: dc1-dc2, ber: 1e-9}, {at: 5ms, device: gw-dc2, state: down}]")
    s = parse_scenario(scenario(pairs, faults).replace("duration: 1s", "duration: 3s"), SOURCE)
    got = [(f.at_ps, f.link, *(f.to_dict()[k] for k in ("state", "length_mm", "rate_bps", "ber"))) for f in s.faults]
    ms = 10**9
    assert got[:6] == [
        (1 * ms, "wan-dc1-dc2", "down", None, None, None),
        (1 * ms, "wan-dc1-dc2-protection", "down", None, None, None),
        (2001 * ms, "wan-dc1-dc2", None, 450 * 10**6, None, None),
        (2001 * ms, "wan-dc1-dc2", "up", None, None, None),
        (2001 * ms, "wan-dc1-dc2-protection", None, 450 * 10**6, None, None),
        (2001 * ms, "wan-dc1-dc2-protection", "up", None, None, None),
    ]
    assert got[6:8] == [(3 * ms, "wan-dc1-dc2", None, None, 400 * 10**9, None),
                        (3 * ms, "wan-dc1-dc2-protection", None, None, 400 * 10**9, None)]
    assert {f[1] for f in got if f[0] == 5 * ms} == {"gw-dc2.dc0", "gw-dc2.wan0", "gw-dc2.wan1"}
    assert [f.index for f in s.faults] == list(range(len(s.faults)))


@pytest.mark.parametrize(("pairs", "faults", "where", "what"), [
    ("[{a: dc1, b: dc9, length: 1km}]", "[]", "wan.pairs[0].b", "no fabric named 'dc9'"),
    ("[{a: dc1, b: dc1, length: 1km}]", "[]", "wan.pairs[0].b", "joins a site to itself"),
    ("[{a: dc1, b: dc2, length: 1km}, {a: dc2, b: dc1, length: 2km}]", "[]", "wan.pairs[1]", "already joined"),
    ("[{a: dc1, b: dc2, length: 1km}]", "[{at: 1ms, wan: dc1-dc2, cut: protection}]", "faults[0]",
     "no protection path"),
    ("[{a: dc1, b: dc2, length: 1km}]", "[{at: 1ms, wan: dc2-dc3, cut: working}]", "faults[0].wan",
     "no WAN pair 'dc2-dc3'; pairs: dc1-dc2"),
    ("[{a: dc1, b: dc2, length: 1km}]", "[{at: 1ms, device: nope, state: down}]", "faults[0].device",
     "no device named 'nope'"),
    ("[{a: dc1, b: dc2}]", "[]", "wan.pairs[0]", "length"),
])
def test_malformed_wan_fails_with_one_line_naming_the_key(pairs: str, faults: str, where: str, what: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(scenario(pairs, faults), SOURCE)
    message = str(caught.value)
    assert "\n" not in message and f"{SOURCE}: {where}" in message and what in message, message


def test_restoration_past_the_end_of_the_run_is_left_out() -> None:
    pairs = "[{a: dc1, b: dc2, length: 300km, restoration: {after: 2s, length: 450km}}]"
    s = parse_scenario(scenario(pairs, "[{at: 1ms, wan: dc1-dc2, cut: working}]"), SOURCE)
    assert [(f.link, f.describe()) for f in s.faults] == [("wan-dc1-dc2", "down")]


def test_errors_in_written_faults_name_them_even_after_on_demand_faults() -> None:
    pairs = "[{a: dc1, b: dc2, length: 300km, on_demand: true}]"
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.link: no link named 'nope'"):
        parse_scenario(scenario(pairs, "[{at: 1ms, link: nope, state: down}]"), SOURCE)


def test_a_site_name_with_a_hyphen_is_refused_in_a_wan() -> None:
    text = scenario("[{a: dc-x, b: dc2, length: 1km}]").replace("  dc3:", "  dc-x:")
    with pytest.raises(ScenarioError, match=r"wan.pairs\[0\].a: site 'dc-x' has a '-'"):
        parse_scenario(text, SOURCE)


def test_a_recovering_device_does_not_revive_a_cut_fibre_and_a_repair_cancels_restoration() -> None:
    pairs = "[{a: dc1, b: dc2, length: 300km, restoration: {after: 100ms, length: 450km}}]"
    faults = ("[{at: 1ms, wan: dc1-dc2, cut: working}, {at: 2ms, device: otn-dc1, state: down},"
              " {at: 3ms, device: otn-dc1, state: up}, {at: 5ms, wan: dc1-dc2, repair: working},"
              " {at: 6ms, link: nope, state: down}]")
    with pytest.raises(ScenarioError, match=r"faults\[4\]\.link: no link named 'nope'"):
        parse_scenario(scenario(pairs, faults), SOURCE)  # errors still name the written fault
    s = parse_scenario(scenario(pairs, faults.replace(", {at: 6ms, link: nope, state: down}", "")), SOURCE)
    line = [(f.at_ps // 10**9, *(f.to_dict()[k] for k in ("state", "length_mm"))) for f in s.faults
            if f.link == "wan-dc1-dc2"]
    # down at 1 ms (cut) and 2 ms (device); the device's recovery at 3 ms leaves the cut fibre down;
    # the repair at 5 ms brings it up, and the restoration planned for 101 ms is dropped
    assert line == [(1, "down", None), (2, "down", None), (5, "up", None)]
    client = [(f.at_ps // 10**9, f.describe()) for f in s.faults if f.link == "gw-dc1.wan0"]
    assert client == [(2, "down"), (3, "up")]  # nothing else held the client link down
