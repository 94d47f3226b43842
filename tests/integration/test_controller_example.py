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


def with_odus(odus: int, tmp_path: Path) -> Path:
    """The scenario with ``odus`` ODUs per line (1+1 each: an APS module per ODU), every one of the
    working links degrading alike."""
    if odus == 1:
        return SCENARIO
    text = SCENARIO.read_text().replace("  clients: 2\n", f"  clients: 2\n  odus: {odus}\n")
    text = re.sub(r"  - \{at: (\w+), link: wan-dc1-dc2, ber: (\S+)\}\n",
                  lambda m: "".join(f"  - {{at: {m[1]}, link: wan-dc1-dc2-odu{k}, ber: {m[2]}}}\n"
                                    for k in range(odus)), text)
    path = tmp_path / f"ber-controller-{odus}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("odus", [1, 2])
def test_the_example_controller_switches_a_degrading_line_to_protection(odus: int, tmp_path: Path) -> None:
    scenario = with_odus(odus, tmp_path)
    address = f"127.0.0.1:{free_port()}"
    out = tmp_path / "live"
    run = subprocess.Popen([*TESTBED, "run", str(scenario), "--partition", "site", "--backend", "process",
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
    assert f"{2 * odus} of {2 * odus} protected modules switched" in controller.stderr
    # each end saw its working channels' BER pass 1e-6 (1e-5 from 15 ms) and switched on its own
    seen = re.findall(r"^(otn-dc\d): channel \d+ \((\S+)\) pre-FEC BER 1e-05 > 1e-06 at ([\d.]+) ms",
                      controller.stdout, re.MULTILINE)
    suffixes = [""] if odus == 1 else [str(k) for k in range(odus)]
    assert sorted((node, port) for node, port, _ in seen) == sorted(
        (node, f"{far}-w{k}") for node, far in (("otn-dc1", "dc2"), ("otn-dc2", "dc1")) for k in suffixes)
    assert all(float(at) >= 15 for _, _, at in seen)
    results = json.loads((out / "results.json").read_text())
    sets = json.loads((out / "inputs.json").read_text())["gnmi_sets"]
    for node, far in (("otn-dc1", "dc2"), ("otn-dc2", "dc1")):
        events = results["devices"][node]["protection_events"]
        assert sorted((e["from"], e["to"]) for e in events) == [(f"{far}-w{k}", f"{far}-p{k}") for k in suffixes]
        assert {e["reason"] for e in events} == {"forced switch (management)"}
        applied = sorted(s["at_ps"] for s in sets if s["device"] == node)
        assert sorted(e["at_ps"] for e in events) == applied and applied[0] > 15 * MS and applied[-1] < 100 * MS
    # without the controller the write crawls on the degraded fibre (go-back-N over 300 km)
    alone = run_scenario(load_scenario(scenario))
    assert results["flows"]["write"]["rx_payload_bytes"] > 2 * alone["flows"]["write"]["rx_payload_bytes"]
    replay = run_cli("replay", str(out))
    assert replay.returncode == 0, replay.stdout + replay.stderr
