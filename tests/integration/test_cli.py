"""The `testbed` command as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.integration


def test_default_scenario_prints_the_wan_latency_and_writes_results(tmp_path):
    done = run_cli("run", "scenarios/testers.yaml", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    # 300 km x 4.9 ns/m + 64 KiB at 400 Gb/s = 1.470 ms + 1.31 µs
    assert "1.471 ms" in done.stdout and "wan-a-to-b" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    wan = results["flows"]["wan-a-to-b"]
    assert wan["latency_ps"]["min"] == 1_470_000_000 + 1_310_720
    assert wan["throughput_bps"] == 300 * 10**9
    assert wan["corrupt_packets"] > 0 and wan["unaccounted_bytes"] == 0
    assert results["virtual_end_ps"] == 15 * 10**9 and results["status"] == "ok"
    assert set(results["run"]) >= {"partition", "backend", "windows", "wall_seconds", "hosts"}
    assert results["events"] > 0 and results["timeseries"]["tester-a"]["t_ps"][-1] == 15 * 10**9


def test_seed_flag_changes_only_the_random_outcome(tmp_path):
    runs = {}
    for seed in ("1", "5"):
        done = run_cli("run", "scenarios/testers.yaml", "--seed", seed, "--out", str(tmp_path / seed))
        assert done.returncode == 0, done.stderr
        runs[seed] = json.loads((tmp_path / seed / "results.json").read_text())
    assert runs["5"]["scenario"]["seed"] == 5
    one, five = runs["1"]["flows"]["wan-a-to-b"], runs["5"]["flows"]["wan-a-to-b"]
    assert one["latency_ps"] == five["latency_ps"]
    # bit errors are drawn from the seed: the corrupted packets differ, not the physics
    assert one["corrupt_packets"] != five["corrupt_packets"]


def test_validate_accepts_the_shipped_scenarios():
    for name in ("default", "testers", "cross-traffic"):
        done = run_cli("validate", f"scenarios/{name}.yaml")
        assert done.returncode == 0 and "ok" in done.stdout


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("duration: 1ms\ndevices: {}\nbogus: 1\n", "bogus"),
        ("duration: 1ms\nlinks:\n  - {a: x/p0, z: y/p0, rate: 400X, length: 1m}\n", "links[0]"),
    ],
)
def test_bad_scenarios_give_one_line_errors_without_traceback(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    for command in ("validate", "run"):
        done = run_cli(command, str(path))
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and words in lines[0]
        assert "Traceback" not in done.stderr


def test_missing_file_and_bad_flags_are_clear(tmp_path):
    done = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "nope.yaml" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("run", "scenarios/testers.yaml", "--partition", "rack")
    assert done.returncode == 2 and "invalid choice: 'rack'" in done.stderr
    done = run_cli("run", "scenarios/testers.yaml", "--seed", "-3")
    assert done.returncode == 2 and "seed must be >= 0" in done.stderr


def test_zero_latency_cut_is_refused_before_anything_starts(tmp_path):
    path = tmp_path / "zero.yaml"
    path.write_text("duration: 1ms\ndevices:\n  a: {kind: tester, ports: [p]}\n  b: {kind: tester, ports: [p]}\n"
                    "links:\n  - {name: ab, a: a/p, z: b/p, rate: 1G, length: 0m}\n")
    done = run_cli("run", str(path), "--partition", "device", "--backend", "process")
    assert done.returncode == 2
    assert "link ab" in done.stderr and "0 ps" in done.stderr and "Traceback" not in done.stderr


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error(tmp_path):
    # `true` exits without reading, so every write of the summary meets a closed pipe
    command = (f"{sys.executable} -m orchestrator.cli run scenarios/testers.yaml --out {tmp_path} | true; "
               "echo exit=${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert "exit=0" in done.stdout and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "results.json").exists()
