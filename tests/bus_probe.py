"""A device that only talks on the job control bus, for the bus tests (``tests.bus_probe:BusProbe``).

At each of its ``posts`` times it posts a message due ``delay`` later; it records every message it
hears (with the time it heard it) and answers each with a local event, so bus traffic shows in the
events it causes. Register ``KIND`` in ``emulators.registry.DEVICE_KINDS`` to use it; ``probes``
builds the tests' scenario.

``python -m tests.bus_probe --name H ...`` is a device host (services.host) that knows the kind:
the process-backend test starts its hosts that way.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from emulators.context import ScenarioContext
from emulators.kernel.device import Device
from emulators.model.job import JobPlan
from emulators.model.scenario import Scenario
from emulators.registry import DEVICE_KINDS, DeviceKind
from orchestrator.scenario.loader import parse_scenario

KIND = DeviceKind(
    name="bus-probe",
    summary="posts job control bus messages and records the ones it hears",
    options_schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "posts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["at", "delay"],
                    "properties": {
                        "at": {"x-unit": "time", "description": "when to post"},
                        "delay": {"x-unit": "time", "description": "how long after posting the message is due"},
                    },
                },
            },
        },
    },
    class_path="tests.bus_probe:BusProbe",
)


class BusProbe(Device):
    kind = "bus-probe"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.counters = {"posted": 0, "heard": 0, "answered": 0}
        self.heard: list[dict[str, Any]] = []
        self.context: ScenarioContext | None = None

    def configure(self, context: ScenarioContext) -> None:
        self.context = context

    def start(self) -> None:
        for n, post in enumerate(self.options.get("posts", [])):
            self.at(post["at"], self._post, (n, post["delay"]))

    def _post(self, arg: tuple[int, int]) -> None:
        n, delay = arg
        assert self.context is not None
        self.counters["posted"] += 1
        self.context.post(self.now + delay, self.id << 32 | n, {"from": self.name, "n": n, "posted_ps": self.now})

    def on_bus(self, payload: dict[str, Any]) -> None:
        self.counters["heard"] += 1
        self.heard.append({"at_ps": self.now} | payload)
        payload["heard_by"] = self.name  # must not reach any other device
        self.at(self.now + 1, self._answer)

    def _answer(self, _: Any) -> None:
        self.counters["answered"] += 1

    def results(self) -> dict[str, Any]:
        return super().results() | {"heard": self.heard}


US = 1_000_000

# p1 and p2 post messages due at the same time (10us): p1's has the smaller key, so it comes first
# everywhere although p2 posted first. The testers keep frames crossing the 1 km link (4.9us).
PROBES = """
name: bus
duration: 100us
sample_interval: 10us
devices:
  p1:
    kind: bus-probe
    site: a
    ports: [x]
    options: {{posts: [{{at: 5us, delay: {delay}}}, {{at: 20us, delay: 10us}}]}}
  p2: {{kind: bus-probe, site: b, ports: [x], options: {{posts: [{{at: 0us, delay: 10us}}]}}}}
  ta: {{kind: tester, site: a, ports: [p0]}}
  tb: {{kind: tester, site: b, ports: [p0]}}
links:
  - {{name: l, a: ta/p0, z: tb/p0, rate: 100G, length: 1km}}
flows:
  - {{name: ab, src: ta/p0, dst: tb/p0, rate: 50G, frame: 64KiB, for: 80us}}
"""


def job(detect_ps: int) -> JobPlan:
    return JobPlan(model="probe", parallel={"tp": 1, "pp": 1, "dp": 1, "ep": 1}, ranks=(), groups=(), programs=(),
                   iterations=0, tokens_per_iteration=0, flops_per_iteration=0, detect_ps=detect_ps)


def probes(delay: str = "5us", detect_ps: int | None = 5 * US) -> Scenario:
    scenario = parse_scenario(PROBES.format(delay=delay), "<bus>")
    return dataclasses.replace(scenario, job=None if detect_ps is None else job(detect_ps))


def only_probes(scenario: Scenario) -> Scenario:
    return dataclasses.replace(scenario, links=(), flows=())


def heard(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {name: results["devices"][name]["heard"] for name in ("p1", "p2")}


if __name__ == "__main__":
    from services.host import main

    DEVICE_KINDS[KIND.name] = KIND
    sys.exit(main())
