"""Real host processes on loopback: determinism across partitions, and a host dying mid-run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario

pytestmark = pytest.mark.integration

TESTBED = [sys.executable, "-m", "orchestrator.cli"]


def _results_file_without_run(path: Path) -> str:
    return json.dumps(deterministic_view(json.loads(path.read_text())), sort_keys=True)


def test_results_are_byte_identical_across_partitions_and_repetitions(tmp_path):
    scenario = load_scenario("scenarios/cross-traffic.yaml")
    runs = {
        "single": ("single", "process"),
        "single-again": ("single", "process"),
        "site": ("site", "process"),
        "device": ("device", "process"),
        "device-inproc": ("device", "inproc"),
    }
    for name, (partition, backend) in runs.items():
        run_scenario(scenario, partition, backend, out_dir=tmp_path / name)
    texts = {name: _results_file_without_run(tmp_path / name / "results.json") for name in runs}
    assert len(set(texts.values())) == 1, {n: len(t) for n, t in texts.items()}
    device = json.loads((tmp_path / "device" / "results.json").read_text())
    assert len(device["run"]["hosts"]) == 6 and device["run"]["windows"] > 100
    # the comparison is not vacuous: every flow moved data and the faults left their marks
    flows = device["flows"]
    assert all(f["rx_frames"] > 0 and f["unaccounted_bytes"] == 0 for f in flows.values())
    assert flows["ac"]["lost_in_flight_frames"] > 0 and flows["ab"]["corrupt_packets"] > 0


def _host_pids(log_path: Path) -> dict[str, int]:
    pids = {}
    for line in log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "host started":
            pids[entry["host"]] = entry["pid"]
    return pids


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_lost_host_fails_the_run_quickly_naming_it_and_keeps_partial_results(tmp_path, how):
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            [*TESTBED, "--log-level", "info", "run", "scenarios/testers.yaml", "--partition", "device",
             "--backend", "process", "--out", str(tmp_path / "out")],
            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(_host_pids(stderr_path)) < 4 or "run starting" not in stderr_path.read_text():
            assert proc.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "hosts did not start"
            time.sleep(0.1)
        time.sleep(2.0)  # well into the run (the whole run takes >10 s in this partition)
        assert proc.poll() is None, "the run finished before the host could be killed"
        victim = "tester-b2"
        pid = _host_pids(stderr_path)[victim]
        os.kill(pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        killed_at = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        elapsed = time.monotonic() - killed_at
        print(f"run ended {elapsed:.2f} s after the kill")
    finally:
        if proc.poll() is None:
            proc.kill()
        if how == "frozen":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    stderr = stderr_path.read_text()
    assert proc.returncode == 1
    assert elapsed < 5.0, f"took {elapsed:.1f} s to notice"
    error_line = next(line for line in stderr.splitlines() if line.startswith("error:"))
    assert "tester-b2" in error_line
    assert "Traceback" not in stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["status"] == "failed" and results["run"]["failed_host"] == victim
    assert "tester-b2" in results["error"]
    assert 0 < results["virtual_end_ps"] < results["scenario"]["duration_ps"]
    assert set(results["devices"]) == {"tester-a", "tester-a2", "tester-b"}  # the survivors' partial results
    assert results["devices"]["tester-a"]["counters"]["frames_sent"] > 0
    assert results["flows"]["local-b"]["incomplete"] is True
