"""The example controller (scripts/protect_on_ber.py) against a live paced run: it finds the OTN
nodes through the control service, streams their channels' pre-FEC BER over gNMI and forces the
protection switch once the working fibre degrades; the run records the Sets and replays exactly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario
from tests.helpers import TESTBED, run_cli
from tests.integration.test_control import free_port

pytestmark = pytest.mark.integration

SCENARIO = Path("scenarios/wan/ber-controller.yaml")
MS = 1_000_000_000


def test_the_example_controller_switches_a_degrading_line_to_protection(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    out = tmp_path / "live"
    run = subprocess.Popen([*TESTBED, "run", str(SCENARIO), "--partition", "site", "--backend", "process",
                            "--pace", "0.01", "--control", address, "--out", str(out), "--no-progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        controller = subprocess.run([sys.executable, "scripts/protect_on_ber.py", "--control", address,
                                     "--threshold", "1e-6"], capture_output=True, text=True, timeout=120)
        output, _ = run.communicate(timeout=120)
    finally:
        run.kill()
    assert controller.returncode == 0, controller.stdout + controller.stderr
    assert run.returncode == 0, output
    # each end saw the working channel's BER pass 1e-6 (1e-5 from 15 ms) and switched on its own
    seen = re.findall(r"^(otn-dc\d): channel \d+ \((\S+)\) pre-FEC BER 1e-05 > 1e-06 at ([\d.]+) ms",
                      controller.stdout, re.MULTILINE)
    assert sorted((node, port) for node, port, _ in seen) == [("otn-dc1", "dc2-w"), ("otn-dc2", "dc1-w")]
    assert all(float(at) >= 15 for _, _, at in seen)
    results = json.loads((out / "results.json").read_text())
    sets = json.loads((out / "inputs.json").read_text())["gnmi_sets"]
    assert sorted(s["device"] for s in sets) == ["otn-dc1", "otn-dc2"]
    for node, port in (("otn-dc1", "dc2"), ("otn-dc2", "dc1")):
        [event] = results["devices"][node]["protection_events"]
        assert (event["from"], event["to"], event["reason"]) == (f"{port}-w", f"{port}-p", "forced switch (management)")
        applied = next(s for s in sets if s["device"] == node)
        assert event["at_ps"] == applied["at_ps"] and 15 * MS < event["at_ps"] < 100 * MS
    # without the controller the write crawls on the degraded fibre (go-back-N over 300 km)
    alone = run_scenario(load_scenario(SCENARIO))
    assert results["flows"]["write"]["rx_payload_bytes"] > 2 * alone["flows"]["write"]["rx_payload_bytes"]
    replay = run_cli("replay", str(out))
    assert replay.returncode == 0, replay.stdout + replay.stderr
