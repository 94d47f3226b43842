"""The job control bus between real host processes: Report.bus to the coordinator, Advance.bus to the
other hosts, delivered exactly as in one process."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from emulators.model.scenario import Scenario
from emulators.registry import DEVICE_KINDS
from orchestrator.backends.process import launch
from orchestrator.coordinator import Coordinator, HostFailed, HostHandle
from orchestrator.partition import plan_partition
from orchestrator.results import assemble, deterministic_view
from orchestrator.run import run_scenario
from tests import bus_probe
from tests.bus_probe import heard, probes

pytestmark = pytest.mark.integration

PROBE_HOST = (sys.executable, "-m", "tests.bus_probe")  # services.host, knowing the probe's kind


@pytest.fixture(autouse=True)
def probe_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DEVICE_KINDS, bus_probe.KIND.name, bus_probe.KIND)


async def _run(scenario: Scenario, partition: str, log_dir: Path) -> dict[str, Any]:
    plan = plan_partition(scenario, partition)
    cluster = await launch(scenario, plan, "bus", log_dir, 30.0, host_command=PROBE_HOST)
    try:
        hosts: list[HostHandle] = list(cluster.hosts)
        outcome = await Coordinator(scenario, plan, hosts).run()
        await asyncio.gather(*(h.close() for h in cluster.hosts))
    finally:
        await cluster.stop()
    return assemble(scenario, plan, "process", outcome.host_results, windows=outcome.windows,
                    wall_seconds=outcome.wall_seconds, end_ps=outcome.end_ps)


def test_bus_messages_cross_processes_as_they_cross_hosts_in_one_process(tmp_path: Path) -> None:
    scenario = probes()
    inproc = run_scenario(scenario, "single")
    for partition in ("site", "device"):
        results = asyncio.run(_run(scenario, partition, tmp_path / partition))
        assert heard(results) == heard(inproc), partition
        assert json.dumps(deterministic_view(results), sort_keys=True) == json.dumps(deterministic_view(inproc),
                                                                                     sort_keys=True)
    assert [m["from"] for m in heard(inproc)["p2"]] == ["p1", "p2", "p1"]


def test_a_late_bus_message_fails_the_window_on_the_host_that_receives_it(tmp_path: Path) -> None:
    with pytest.raises(HostFailed) as e:
        asyncio.run(_run(probes(delay="0us"), "site", tmp_path))
    assert e.value.host == "b"
    assert "CausalityError" in str(e.value) and "bus message 0 is due at 5000000 ps" in str(e.value)
