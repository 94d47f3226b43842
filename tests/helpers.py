"""Small scenario builders shared by the tests."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any

from emulators.model.job import JobPlan, Op, RankPlace
from emulators.model.scenario import Scenario
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import parse_scenario

TESTBED = [sys.executable, "-m", "orchestrator.cli"]


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` still exists (a zombie counts until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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


def gpus_on_one_switch(servers: int, gpus: int, *, port: str, switch_kind: str, rate: str, length_m: int,
                       name: str, duration: str, switch_options: str = "", extra: str = "",
                       ber: dict[str, float] | None = None) -> str:
    """``servers`` GPU servers (s0, s1, ...) of ``gpus`` GPUs; port ``port``<g> of each GPU linked to
    one switch ``sw`` (ports p0, p1, ...) by link s<s>.<g>, with ``ber`` for the links it names.
    ``extra`` is appended to the servers' options."""
    lines = ["version: 0", f"name: {name}", f"duration: {duration}", "devices:"]
    for s in range(servers):
        ports = ", ".join(f"{port}{g}" for g in range(gpus))
        lines.append(f"  s{s}: {{kind: gpu_server, ports: [{ports}], options: {{gpus: {gpus}{extra}}}}}")
    switch_ports = ", ".join(f"p{i}" for i in range(servers * gpus))
    lines += [f"  sw: {{kind: {switch_kind}, ports: [{switch_ports}], options: {{{switch_options}}}}}", "links:"]
    for s in range(servers):
        for g in range(gpus):
            link = f"s{s}.{g}"
            error = f", ber: {ber[link]}" if ber and link in ber else ""
            lines.append(f"  - {{name: {link}, a: s{s}/{port}{g}, z: sw/p{s * gpus + g}, rate: {rate}, "
                         f"length: {length_m}m{error}}}")
    return "\n".join(lines) + "\n"


def run_text(text: str, partition: str = "single", backend: str = "inproc", **kw: Any) -> dict[str, Any]:
    return run_scenario(parse_scenario(text, "<test>"), partition, backend, **kw)


def with_programs(text: str, ranks: list[tuple[str, int]], groups: list[tuple[int, ...]],
                  programs: list[tuple[Op, ...]], *, spread: str = "dp", **fields: object) -> Scenario:
    """A scenario whose GPU servers run hand-written per-rank programs: rank r on ``ranks[r]``
    (server, GPU), the job reported as parallel over ``spread``; ``fields`` override the plan's."""
    parallel = {"tp": 1, "pp": 1, "dp": 1, "ep": 1} | {spread: len(ranks)}
    plan = JobPlan("test", parallel, tuple(RankPlace(d, g) for d, g in ranks), tuple(groups), tuple(programs),
                   **{"iterations": 1, "tokens_per_iteration": 1, "flops_per_iteration": 1, "detect_ps": 10**9}
                   | fields)  # type: ignore[arg-type]
    return dataclasses.replace(parse_scenario(text), job=plan)
