"""The job control bus: every device hears every message at its time, in key order, in every partition."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from emulators.context import ScenarioContext
from emulators.kernel.frame import DATA, Frame
from emulators.kernel.vtime import NEVER
from emulators.registry import DEVICE_KINDS
from emulators.runtime import BUS_ORIGIN, CausalityError, HostRuntime
from orchestrator.coordinator import Coordinator, Report
from orchestrator.partition import PartitionError, Plan, plan_partition
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from tests import bus_probe
from tests.bus_probe import US, heard, only_probes, probes


@pytest.fixture(autouse=True)
def probe_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DEVICE_KINDS, bus_probe.KIND.name, bus_probe.KIND)


def test_every_device_hears_every_message_at_its_time_in_key_order_in_every_partition() -> None:
    scenario = probes()
    runs = {partition: run_scenario(scenario, partition) for partition in ("single", "site", "device")}
    expected = [
        {"at_ps": 10 * US, "from": "p1", "n": 0, "posted_ps": 5 * US},
        {"at_ps": 10 * US, "from": "p2", "n": 0, "posted_ps": 0},
        {"at_ps": 30 * US, "from": "p1", "n": 1, "posted_ps": 20 * US},
    ]
    for partition, results in runs.items():
        assert heard(results) == {"p1": expected, "p2": expected}, partition  # no "heard_by": copies each
    views = {p: json.dumps(deterministic_view(r), sort_keys=True) for p, r in runs.items()}
    assert len(set(views.values())) == 1
    # bus deliveries are not events (every host has one per message); what devices do about them is
    assert len({r["events"] for r in runs.values()}) == 1
    counters = runs["device"]["devices"]["p1"]["counters"]
    assert counters == {"posted": 2, "heard": 3, "answered": 3}
    assert runs["device"]["run"]["lookahead_ps"] == 4_900_000  # the link's 4.9us, shorter than the detect delay
    assert runs["device"]["devices"]["tb"]["flows_rx"]["ab"]["rx_frames"] > 0


def test_a_message_due_before_the_other_hosts_window_end_is_a_causality_error() -> None:
    scenario = probes(delay="0us")  # due when posted: the other host has simulated past it already
    assert heard(run_scenario(scenario, "single"))["p2"][0]["at_ps"] == 5 * US  # one host: no lookahead to keep
    with pytest.raises(CausalityError, match="host b: bus message 0 is due at 5000000 ps, before"):
        run_scenario(scenario, "site")


def test_without_a_job_nothing_bounds_bus_messages_across_hosts() -> None:
    scenario = only_probes(probes(detect_ps=None))
    assert plan_partition(scenario, "device").lookahead_ps is None  # one window for the whole run
    with pytest.raises(CausalityError, match="bus message"):
        run_scenario(scenario, "device")


def test_several_hosts_need_a_detect_delay() -> None:
    scenario = probes(detect_ps=0)
    assert plan_partition(scenario, "single").lookahead_ps is None
    with pytest.raises(PartitionError, match=r"2 hosts.*detect delay is 0 ps.*single partition"):
        plan_partition(scenario, "site")


def test_the_detect_delay_bounds_the_lookahead() -> None:
    assert plan_partition(probes(detect_ps=2 * US), "site").lookahead_ps == 2 * US
    assert plan_partition(probes(detect_ps=9 * US), "site").lookahead_ps == 4_900_000
    assert plan_partition(only_probes(probes(detect_ps=9 * US)), "device").lookahead_ps == 9 * US  # the bus alone


def test_one_heap_entry_per_message_keyed_by_the_posters_key() -> None:
    scenario = probes()
    host = HostRuntime(scenario, "a", plan_partition(scenario, "site").assignment)
    host.context.post(7 * US, 42, {"k": (1, 2)})
    entries = [e for e in host.engine.pending() if e[1] == BUS_ORIGIN]
    assert [e[:3] for e in entries] == [(7 * US, BUS_ORIGIN, 42)]
    assert host.take_bus() == [(7 * US, 42, {"k": [1, 2]})]  # as every other host will decode it
    assert host.take_bus() == []


@pytest.mark.parametrize(
    ("at_ps", "key", "payload", "words"),
    [
        (5, 1, {}, "already taken"),
        (5, -1, {}, "negative"),
        (5, 2, {"x": object()}, "not JSON-serialisable"),
    ],
)
def test_bad_posts_are_refused(at_ps: int, key: int, payload: dict[str, Any], words: str) -> None:
    scenario = probes()
    host = HostRuntime(scenario, "all", plan_partition(scenario, "single").assignment)
    host.context.post(5, 1, {})
    with pytest.raises(ValueError, match=words):
        host.context.post(at_ps, key, payload)


def test_a_post_for_the_past_is_refused() -> None:
    scenario = probes()
    host = HostRuntime(scenario, "all", plan_partition(scenario, "single").assignment)
    host.engine.now = 3 * US  # as inside an event at 3us
    with pytest.raises(ValueError, match="for the past"):
        host.context.post(2 * US, 1, {})


def test_a_context_without_a_runtime_has_no_bus() -> None:
    with pytest.raises(RuntimeError, match="no bus"):
        ScenarioContext(probes(), DEVICE_KINDS).post(0, 0, {})


class BusHost:
    """Posts ``posts`` when started; records each advance's end and the bus messages it was handed."""

    def __init__(self, name: str, posts: list[Any]) -> None:
        self.name = name
        self.posts = posts
        self.told: list[tuple[int, list[Any]]] = []

    async def start(self) -> Report:
        return Report(NEVER, NEVER, {}, list(self.posts))

    async def advance(self, end_ps: int, expect_from: dict[str, int], bus: list[Any], start_ps: int = 0) -> Report:
        self.told.append((end_ps, bus))
        return Report(NEVER, NEVER)

    async def results(self) -> dict[str, Any]:
        return {}


def test_the_coordinator_hands_messages_to_every_other_host_and_starts_a_window_for_them() -> None:
    scenario = probes()
    message = (7 * US, 1, {"x": 1})
    hosts = [BusHost("a", [message]), BusHost("b", []), BusHost("c", [])]
    plan = Plan("device", {"a": (), "b": (), "c": ()}, {}, 2 * US, ())
    asyncio.run(Coordinator(scenario, plan, list(hosts)).run())
    assert [h.told for h in hosts] == [
        [(9 * US, []), (100 * US, [])],  # nothing else to do: the window starts at the message's time
        [(9 * US, [message]), (100 * US, [])],
        [(9 * US, [message]), (100 * US, [])],
    ]


def test_bus_messages_and_63_bit_flows_cross_the_wire() -> None:
    from services.codec import decode_batch, decode_bus, encode_batch, encode_bus

    messages = [(5 * US, (3 << 32) | 7, {"what": "fatal", "rank": 12, "nested": {"a": [1, 2.5, None]}})]
    assert decode_bus(encode_bus(messages)) == messages
    flow = (1 << 62) + 12345
    frame = Frame(DATA, flow, 1, 2, 4096, 4096)
    [(*_, back)] = decode_batch(encode_batch("a", 1, [(0, 0, 0, 1, "p0", frame)]))
    assert back.flow == flow
