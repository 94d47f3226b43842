"""Small scenario builders shared by the tests."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from orchestrator.run import run_scenario
from orchestrator.scenario.loader import parse_scenario

TESTBED = [sys.executable, "-m", "orchestrator.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `testbed` command, as a user runs it, with its output captured."""
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=300)


def two_testers(*, rate: str = "400G", length: str = "1km", ber: float | str = 0, flows: str = "",
                faults: str = "", duration: str = "10ms", options: str = "{}", sample: str = "1ms",
                seed: int = 1) -> str:
    """Tester ta ↔ tester tb over one link named `l`, plus the given flow/fault YAML list items."""
    return f"""
name: t
seed: {seed}
duration: {duration}
sample_interval: {sample}
devices:
  ta: {{kind: tester, site: a, ports: [p0], options: {options}}}
  tb: {{kind: tester, site: b, ports: [p0], options: {options}}}
links:
  - {{name: l, a: ta/p0, z: tb/p0, rate: {rate}, length: {length}, ber: {ber}}}
flows:
{flows or "  []"}
faults:
{faults or "  []"}
"""


def run_text(text: str, partition: str = "single", backend: str = "inproc", **kw: Any) -> dict[str, Any]:
    return run_scenario(parse_scenario(text, "<test>"), partition, backend, **kw)
