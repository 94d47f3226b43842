"""Scenario files resolve to exact integers, and every malformed file fails with one line that says where."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from emulators.kernel.frame import MAX_PORTS
from emulators.model.faults import LinkBer, LinkLength, LinkRate, LinkState
from emulators.model.scenario import RAW as RAW_TRANSPORT
from emulators.model.scenario import RDMA as RDMA_TRANSPORT
from emulators.model.scenario import RDMA_PRIORITY, Endpoint, FlowSpec
from emulators.registry import DEVICE_KINDS, DeviceKind
from orchestrator.scenario import units
from orchestrator.scenario.loader import ScenarioError, load_scenario, parse_scenario, scenario_schema

SOURCE = "scenarios/x.yaml"

VALID = """\
duration: 50ms
sites: [dc1, dc2]
devices:
  tb: {kind: tester, site: dc2, ports: [p0, p1]}
  ta:
    kind: tester
    site: dc1
    ports: [p0, p1, p2]
    options: {mtu: 4KiB, buffer: 64MiB}
links:
  - {a: ta/p0, z: tb/p0, rate: 400G, length: 329km, ber: 1e-9}
  - {name: loop, a: ta/p1, z: tb/p1, rate: 100Gbps, length: 2.5m}
flows:
  - {name: by-count, src: ta/p0, dst: tb/p0, rate: 100G, count: 10}
  - {name: by-bytes, src: ta/p0, dst: tb/p0, rate: 100G, bytes: 1MiB, frame: 4KiB, priority: 3}
  - {name: by-time, src: ta/p0, dst: tb/p0, rate: 100G, for: 1.47ms, start: 10us}
faults:
  - {at: 10ms, link: ta/p0--tb/p0, state: down}
  - {at: 20ms, link: loop, rate: 25G}
  - {at: 30ms, link: loop, ber: 1e-6}
  - {at: 40ms, link: loop, length: 10km}
"""


def test_valid_scenario_resolves_with_defaults() -> None:
    scenario = parse_scenario(VALID, SOURCE)

    assert scenario.name == "x"  # the file stem
    assert scenario.source == SOURCE
    assert scenario.seed == 1
    assert scenario.duration_ps == 50_000_000_000
    assert scenario.sample_interval_ps == 1_000_000_000
    assert scenario.sites == ("dc1", "dc2")
    assert [d.name for d in scenario.devices] == ["ta", "tb"]  # sorted by name, not file order
    ta = scenario.device("ta")
    assert ta.kind == "tester" and ta.site == "dc1" and ta.ports == ("p0", "p1", "p2")
    assert ta.options == {"mtu": 4096, "buffer": 64 * 2**20}
    assert scenario.device("tb").options == {}

    first, second = scenario.links
    assert first.name == "ta/p0--tb/p0"
    assert (first.a, first.z) == (Endpoint("ta", "p0"), Endpoint("tb", "p0"))
    assert first.rate_bps == 400_000_000_000
    assert first.length_mm == 329_000_000
    assert first.ber == 1e-9
    assert (second.name, second.rate_bps, second.length_mm, second.ber) == (
        "loop",
        100_000_000_000,
        2500,
        0.0,
    )

    by_count, by_bytes, by_time = scenario.flows
    assert (by_count.count, by_count.frame_bytes, by_count.start_ps, by_count.priority) == (10, 65536, 0, 0)
    assert (by_bytes.count, by_bytes.frame_bytes, by_bytes.priority) == (256, 4096, 3)
    # 1.47 ms at 100 Gb/s is 147,000,000 bits; a 64 KiB frame is 524,288 bits: 280 whole frames
    assert by_time.count == 280
    assert by_time.start_ps == 10_000_000

    assert scenario.faults == (
        LinkState(0, 10_000_000_000, "ta/p0--tb/p0", "down"),
        LinkRate(1, 20_000_000_000, "loop", 25_000_000_000),
        LinkBer(2, 30_000_000_000, "loop", 1e-6),
        LinkLength(3, 40_000_000_000, "loop", 10_000_000),
    )


def test_minimal_scenario() -> None:
    scenario = parse_scenario("duration: 1ms\n")
    assert scenario.name == "scenario"
    assert scenario.source == "<string>"
    assert (scenario.sites, scenario.devices, scenario.links, scenario.flows, scenario.faults) == ((),) * 5


def test_sites_default_to_the_devices_sites_sorted() -> None:
    text = VALID.replace("sites: [dc1, dc2]\n", "").replace("site: dc1", "site: zz")
    assert parse_scenario(text).sites == ("dc2", "zz")


def test_seed_and_name_from_file_and_seed_override() -> None:
    text = "name: demo\nseed: 7\nsample_interval: 100us\nduration: 1ms\n"
    assert parse_scenario(text).seed == 7
    assert parse_scenario(text, seed=42).seed == 42
    assert parse_scenario(text).name == "demo"
    assert parse_scenario(text).sample_interval_ps == 100_000_000


def test_flow_for_shorter_than_one_frame_sends_one() -> None:
    text = VALID.replace("for: 1.47ms", "for: 1ns")
    assert parse_scenario(text).flows[2].count == 1


def test_load_scenario_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "two-sites.yaml"
    path.write_text(VALID)
    scenario = load_scenario(path, seed=3)
    assert scenario.name == "two-sites"
    assert scenario.source == str(path)
    assert scenario.seed == 3


def test_load_scenario_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError, match=r"nope\.yaml: no such file"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="directory"):
        load_scenario(tmp_path)


def test_load_scenario_reports_bad_yaml_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("duration: 1ms\ndevices: [\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: line 3")


def test_the_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(scenario_schema())


def broken(old: str, new: str) -> str:
    text = VALID
    assert old in text, old
    return text.replace(old, new, 1)


MALFORMED = [
    pytest.param(
        broken("duration: 50ms\n", "duration: 50ms\ncolour: red\n"), "colour", "unknown key", id="top-key"
    ),
    pytest.param(broken("options:", "optons:"), "devices.ta.optons", "unknown key", id="device-key"),
    pytest.param(broken("kind: tester\n", "kind: router\n"), "devices.ta.kind", "tester", id="unknown-kind"),
    pytest.param(broken("rate: 400G", "rate: 400X"), "links[0].rate", "not a rate", id="bad-rate-unit"),
    pytest.param(broken("329km", "329 miles"), "links[0].length", "not a length", id="bad-length-unit"),
    pytest.param(broken("duration: 50ms", "duration: 50mn"), "duration", "not a time", id="bad-time-unit"),
    pytest.param(broken("duration: 50ms", "duration: 50"), "duration", "no unit", id="time-without-unit"),
    pytest.param(broken("duration: 50ms", "duration: 0s"), "duration", "zero", id="zero-duration"),
    pytest.param(broken("rate: 400G", "rate: 0G"), "links[0].rate", "zero", id="zero-rate"),
    pytest.param(
        broken("length: 2.5m", "length: -2.5m"), "links[1].length", "negative", id="negative-length"
    ),
    pytest.param(broken("count: 10", "count: 0"), "flows[0].count", "minimum", id="zero-count"),
    pytest.param(broken("a: ta/p0", "a: tx/p0"), "links[0].a", "no device", id="link-to-missing-device"),
    pytest.param(broken("a: ta/p0", "a: ta/p9"), "links[0].a", "no port", id="link-to-undeclared-port"),
    pytest.param(broken("a: ta/p1", "a: ta/p0"), "links[1].a", "already linked", id="port-used-twice"),
    pytest.param(broken("  ta:\n", "  tb:\n"), "devices.tb", "duplicate key", id="duplicate-device"),
    pytest.param(
        broken("a: ta/p0, z: tb/p0, rate", "name: loop, a: ta/p0, z: tb/p0, rate"),
        "links[1].name",
        "duplicate link name",
        id="duplicate-link-name",
    ),
    pytest.param(
        broken("name: by-bytes", "name: by-count"),
        "flows[1].name",
        "duplicate flow name",
        id="duplicate-flow",
    ),
    pytest.param(
        broken("src: ta/p0", "src: tc/p0"), "flows[0].src", "no device", id="flow-from-unknown-device"
    ),
    pytest.param(broken("dst: tb/p0", "dst: tb/p7"), "flows[0].dst", "no port", id="flow-to-unknown-port"),
    pytest.param(
        broken("src: ta/p0", "src: ta/p2"), "flows[0].src", "not connected", id="flow-from-unlinked"
    ),
    pytest.param(
        broken("link: loop", "link: lop"), "faults[1].link", "no link named", id="fault-unknown-link"
    ),
    pytest.param(broken("at: 40ms", "at: 60ms"), "faults[3].at", "after the run ends", id="fault-after-end"),
    pytest.param(
        broken("count: 10", "count: 10, bytes: 1MiB"), "flows[0].bytes", "exactly one", id="count-and-bytes"
    ),
    pytest.param(broken(", count: 10", ""), "flows[0]", "exactly one of", id="no-count-bytes-or-for"),
    pytest.param(
        broken("state: down", "state: down, rate: 1G"),
        "faults[0].rate",
        "exactly one",
        id="fault-two-changes",
    ),
    pytest.param(broken("state: down", "state: dwn"), "faults[0].state", "not allowed", id="bad-fault-state"),
    pytest.param(
        broken("ports: [p0, p1]}", "ports: p0}"), "devices.tb.ports", "expected a list", id="ports-not-list"
    ),
    pytest.param(broken("ports: [p0, p1]}", "ports: []}"), "devices.tb.ports", "at least 1", id="no-ports"),
    pytest.param(
        broken("ports: [p0, p1]}", "ports: [p0, p0]}"), "devices.tb.ports[1]", "twice", id="port-twice"
    ),
    pytest.param(broken("  tb: {", "  TB: {"), "devices.TB", "lowercase", id="uppercase-device-name"),
    pytest.param(broken("name: loop", "name: my loop"), "links[1].name", "lowercase", id="bad-link-name"),
    pytest.param(broken("a: ta/p0", "a: ta.p0"), "links[0].a", "device/port", id="endpoint-without-slash"),
    pytest.param(broken("site: dc2", "site: dc3"), "devices.tb.site", "not in sites", id="unknown-site"),
    pytest.param(
        broken("mtu: 4KiB", "mtu: 4Kb"), "devices.ta.options.mtu", "not a size", id="bad-option-unit"
    ),
    pytest.param(
        broken("mtu: 4KiB", "mut: 4KiB"), "devices.ta.options.mut", "unknown key", id="unknown-option"
    ),
    pytest.param(broken("ber: 1e-9", "ber: 2"), "links[0].ber", "not a bit error ratio", id="ber-too-big"),
    pytest.param(
        broken("priority: 3", "priority: 8"), "flows[1].priority", "maximum", id="priority-too-high"
    ),
    pytest.param(broken("duration: 50ms\n", ""), "duration", "missing", id="missing-duration"),
    pytest.param(
        broken("duration: 50ms", "duration: yes"), "duration", "expected a time", id="bool-duration"
    ),
    pytest.param(
        broken("duration: 50ms", "duration: 50ms\nversion: 1"), "version", "not allowed", id="version"
    ),
    pytest.param(broken("  tb: {", "  on: {"), "devices.on", "quotes", id="key-read-as-bool"),
    pytest.param(broken("devices:\n", "devices:\n  x: [\n"), "line 6", "not valid YAML", id="yaml-syntax"),
    pytest.param("duration: 1ms\n\tseed: 2\n", "line 2", "not valid YAML", id="yaml-tab"),
    pytest.param("", SOURCE, "empty", id="empty-file"),
    pytest.param("# only a comment\n", SOURCE, "empty", id="comment-only-file"),
    pytest.param("- duration: 1ms\n", "top level", "expected a mapping", id="top-level-list"),
]


@pytest.mark.parametrize(("text", "where", "what"), MALFORMED)
def test_malformed_scenario_fails_with_one_line_naming_where(text: str, where: str, what: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, SOURCE)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: ")
    assert f": {where}" in message or where == SOURCE, message
    assert what in message, message
    assert "Traceback" not in message and "{'" not in message  # no raw jsonschema dump of the instance


def test_error_carries_its_parts() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(broken("rate: 400G", "rate: 400X"), SOURCE)
    error = caught.value
    assert (error.source, error.where) == (SOURCE, "links[0].rate")
    assert str(error) == f"{SOURCE}: links[0].rate: '400X' is not a rate; write it like 400G, 100Gbps, 1.6T"


def test_unknown_device_key_lists_the_allowed_keys() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(broken("options:", "optons:"), SOURCE)
    assert str(caught.value).endswith(
        "devices.ta.optons: unknown key (did you mean options?); allowed: kind, site, ports, options"
    )


def test_negative_seed_override_is_refused() -> None:
    with pytest.raises(ScenarioError, match="seed"):
        parse_scenario("duration: 1ms\n", SOURCE, seed=-1)


def test_flows_start_only_at_testers(monkeypatch: pytest.MonkeyPatch) -> None:
    switch = DeviceKind("switch", "a test double", {"type": "object"}, "unused:Switch")
    monkeypatch.setitem(DEVICE_KINDS, "switch", switch)
    text = broken("  tb: {kind: tester", "  tb: {kind: switch").replace(
        "src: ta/p0, dst: tb/p0", "src: tb/p0, dst: ta/p0"
    )
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, SOURCE)
    assert str(caught.value) == (
        f"{SOURCE}: flows[0].src: device 'tb' is a switch, not a tester; flows are sent by testers"
    )


def test_unknown_kind_lists_every_known_kind() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(broken("kind: tester\n", "kind: router\n"), SOURCE)
    assert str(caught.value).endswith(f"known kinds: {', '.join(sorted(DEVICE_KINDS))}")


def test_self_referencing_yaml_is_an_error_not_a_hang() -> None:
    with pytest.raises(ScenarioError, match=r"sites\[0\]: expected a name"):
        parse_scenario("duration: 1ms\nsites: &s [*s]\n", SOURCE)


def test_an_internal_failure_still_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_parser(value: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setitem(units.UNIT_PARSERS, "size", broken_parser)
    with pytest.raises(
        ScenarioError,
        match=r"^scenarios/x\.yaml: internal error while loading \(RuntimeError: boom\); please report it$",
    ):
        parse_scenario(VALID, SOURCE)


# --- nested option units and rdma flows ------------------------------------------------------------

RDMA = """\
duration: 10ms
devices:
  ta:
    kind: tester
    ports: [p0, p1, p2]
    options: {mtu: 9000, rdma: {rto: 100us, mtu: 4KiB, ai_rate: 40G, recovery: selective-repeat, retries: 3}}
  tb: {kind: tester, ports: [p0, p1]}
  sw: {kind: switch, ports: [p0, p1], options: {buffer: 32MiB, lossless_priorities: [3, 4]}}
links:
  - {a: ta/p0, z: tb/p0, rate: 400G, length: 100m}
  - {a: ta/p1, z: sw/p0, rate: 400G, length: 100m}
  - {a: ta/p2, z: sw/p1, rate: 400G, length: 100m}
flows:
  - {name: exact, src: ta/p0, dst: tb/p0, transport: rdma, bytes: 1000003B}
  - {name: timed, src: tb/p0, dst: ta/p0, transport: rdma, rate: 100G, for: 1ms, start: 1ms, priority: 5}
  - {name: plain, src: ta/p0, dst: tb/p0, transport: raw, rate: 10G, count: 3}
"""


def rdma_broken(old: str, new: str) -> str:
    assert old in RDMA, old
    return RDMA.replace(old, new, 1)


def test_nested_option_units_are_converted_at_any_depth() -> None:
    scenario = parse_scenario(RDMA, SOURCE)
    assert scenario.device("ta").options == {
        "mtu": 9000,
        "rdma": {"rto": 100_000_000, "mtu": 4096, "ai_rate": 40_000_000_000, "recovery": "selective-repeat",
                 "retries": 3},
    }
    assert scenario.device("sw").options == {"buffer": 32 * 2**20, "lossless_priorities": [3, 4]}


def test_a_bad_nested_unit_names_the_full_path() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(rdma_broken("rto: 100us", "rto: 100"), SOURCE)
    assert str(caught.value) == (
        f"{SOURCE}: devices.ta.options.rdma.rto: 100 has no unit; write it like 50ms, 1.47ms, 10us, 100ns, 10min"
    )


def test_rdma_flows_send_one_exact_message() -> None:
    exact, timed, plain = parse_scenario(RDMA, SOURCE).flows
    assert exact == FlowSpec(
        name="exact", src=Endpoint("ta", "p0"), dst=Endpoint("tb", "p0"), rate_bps=0, frame_bytes=0, start_ps=0,
        count=0, priority=RDMA_PRIORITY, transport=RDMA_TRANSPORT, message_bytes=1_000_003,
    )
    # 100 Gb/s for 1 ms is 10^8 bits: 12,500,000 bytes, not rounded to frames
    assert (timed.message_bytes, timed.rate_bps, timed.priority, timed.start_ps) == (
        12_500_000, 100_000_000_000, 5, 1_000_000_000,
    )
    assert (timed.frame_bytes, timed.count, timed.transport) == (0, 0, RDMA_TRANSPORT)
    assert (plain.transport, plain.count, plain.frame_bytes, plain.message_bytes, plain.priority) == (
        RAW_TRANSPORT, 3, 65536, 0, 0,
    )


def test_an_rdma_rate_of_zero_means_as_fast_as_the_transport_allows() -> None:
    text = rdma_broken("bytes: 1000003B}", "bytes: 1000003B, rate: 0}")
    assert parse_scenario(text).flows[0].rate_bps == 0


ONE_MESSAGE = (
    "rdma flows send one message: give bytes (or for with rate); the frame size is the NIC's chunk option"
)

RDMA_MALFORMED = [
    pytest.param(
        rdma_broken("rdma, bytes: 1000003B", "rdma, count: 5"), "flows[0].count", ONE_MESSAGE, id="rdma-count"
    ),
    pytest.param(
        rdma_broken("rdma, bytes: 1000003B", "rdma, bytes: 1MiB, frame: 4KiB"),
        "flows[0].frame",
        ONE_MESSAGE,
        id="rdma-frame",
    ),
    pytest.param(
        rdma_broken("rate: 10G, count: 3", "count: 3"),
        "flows[2].rate",
        "required key is missing; raw flows send at a rate (only rdma flows may leave it out)",
        id="raw-without-rate",
    ),
    pytest.param(
        rdma_broken("rate: 100G, for: 1ms", "for: 1ms"),
        "flows[1].for",
        "an rdma flow sized by time needs a rate (its message is rate x for / 8 bytes); "
        "give rate, or give bytes instead of for",
        id="rdma-for-without-rate",
    ),
    pytest.param(
        rdma_broken("rate: 100G, for: 1ms", "rate: 1G, for: 1ps"),
        "flows[1].for",
        "'1ps' at 1 Gb/s is less than one byte; send for longer",
        id="rdma-for-too-short",
    ),
    pytest.param(
        rdma_broken("dst: tb/p0, transport: rdma", "dst: sw/p0, transport: rdma"),
        "flows[0].dst",
        "device 'sw' is a switch, which has no RDMA NIC; rdma flows run between testers' NICs",
        id="rdma-to-a-switch",
    ),
    pytest.param(
        rdma_broken("dst: tb/p0, transport: rdma", "dst: tb/p1, transport: rdma"),
        "flows[0].dst",
        "port tb/p1 is not connected by any link; both ends of an rdma flow must be",
        id="rdma-to-unlinked",
    ),
    pytest.param(
        rdma_broken("dst: tb/p0, transport: rdma", "dst: ta/p2, transport: rdma"),
        "flows[0].dst",
        "is on the source's device 'ta'; an rdma flow runs between two devices",
        id="rdma-to-itself",
    ),
    pytest.param(
        rdma_broken("transport: rdma", "transport: roce"),
        "flows[0].transport",
        "'roce' is not allowed; allowed: raw, rdma",
        id="unknown-transport",
    ),
    pytest.param(
        rdma_broken("bytes: 1000003B", "bytes: 0B"), "flows[0].bytes", "zero", id="rdma-zero-bytes"
    ),
]


@pytest.mark.parametrize(("text", "where", "what"), RDMA_MALFORMED)
def test_malformed_rdma_flow_fails_with_one_line_naming_the_key(text: str, where: str, what: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, SOURCE)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: {where}: "), message
    assert what in message, message


NIC_OPTIONS = """
duration: 1ms
devices:
  ta: {kind: tester, ports: [p0, p1], options: OPTIONS}
  tb: {kind: tester, ports: [p0]}
links:
  - {a: ta/p0, z: tb/p0, rate: 400G, length: 1m}
"""


@pytest.mark.parametrize(("options", "where", "what"), [
    ("{rdma: {rto: 0}}", "devices.ta.options.rdma.rto", "is zero; it must be above zero"),
    ("{rdma: {chunk: 0B}}", "devices.ta.options.rdma.chunk", "is zero"),
    ("{rdma: {mtu: 9000}}", "devices.ta.options.rdma.mtu", "not a RoCE MTU; use one of 256, 512"),
    ("{rdma: {mtu: 1KiB, chunk: 1500B}}", "devices.ta.options.rdma.chunk", "not a whole number of 1024-byte packets"),
    ("{nics: {nic: [p0, p9]}}", "devices.ta.options.nics.nic[1]", "no port 'p9' on this device; its ports: p0, p1"),
    ("{nics: {x: [p0], y: [p1, p0]}}", "devices.ta.options.nics.y[1]", "already belongs to NIC 'x'"),
    ("{mtu: 0}", "devices.ta.options.mtu", "is zero"),
])
def test_nic_options_the_schema_cannot_check_fail_with_one_line(options: str, where: str, what: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(NIC_OPTIONS.replace("OPTIONS", options), SOURCE)
    assert f"{SOURCE}: {where}: " in str(caught.value) and what in str(caught.value), str(caught.value)


def test_a_device_may_have_no_more_ports_than_an_address_can_name() -> None:
    assert scenario_schema()["$defs"]["device"]["properties"]["ports"]["maxItems"] == MAX_PORTS
    ports = ", ".join(f"p{i}" for i in range(MAX_PORTS + 1))
    with pytest.raises(ScenarioError, match=r"devices\.t\.ports: has 256 entries; at most 255 allowed"):
        parse_scenario(f"duration: 1ms\ndevices:\n  t: {{kind: tester, ports: [{ports}]}}\n", SOURCE)
