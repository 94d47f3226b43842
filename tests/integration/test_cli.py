"""The `testbed` command as a user meets it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_cases import CliCase, load_cases, prepare, snapshot
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

TESTBED_SCRIPT = Path(sys.executable).with_name("testbed")  # the command `make install` puts in .venv/bin
TESTERS = Path("scenarios/testers.yaml").resolve()
PROCESS_CASES = [case for case in load_cases() if case.process]


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


@pytest.mark.parametrize("case", PROCESS_CASES, ids=[case.id for case in PROCESS_CASES])
def test_malformed_command_lines_as_a_user_types_them(case: CliCase, tmp_path: Path) -> None:
    prepared = prepare(case, tmp_path)
    before = snapshot(prepared.files)
    done = subprocess.run([str(TESTBED_SCRIPT), *prepared.argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == case.exit, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and prepared.stderr in lines[0], done.stderr
    assert done.stdout == "" and snapshot(prepared.files) == before
    assert list(prepared.untouched.iterdir()) == []


def test_a_run_never_replaces_an_earlier_runs_results_without_force(tmp_path: Path) -> None:
    def testbed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TESTBED_SCRIPT), *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    first = testbed("run", str(TESTERS))
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out" / "testers"  # the default: out/ the scenario's name
    assert first.stdout.endswith(f"results: {Path('out') / 'testers' / 'results.json'}\n")
    earlier = (out / "results.json").read_bytes()
    (out / "report.html").write_text("the earlier run's report")
    (out / "inputs.json").write_text("{}")  # faults injected into the earlier run
    again = testbed("run", str(TESTERS), "--seed", "5")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == (f"error: {Path('out') / 'testers'} holds an earlier run's results; choose another --out "
                            f"or pass --force to replace them\n")
    assert (out / "results.json").read_bytes() == earlier
    forced = testbed("run", str(TESTERS), "--seed", "5", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "results.json").read_text())["scenario"]["seed"] == 5
    assert not (out / "report.html").exists() and not (out / "inputs.json").exists()  # they went with its results


def test_validate_and_run_print_the_scenarios_warnings(tmp_path: Path) -> None:
    scenario = Path("tests/data/malformed/scenarios-warn/flow-starts-after-end-rdma.yaml")
    warning = (f"warning: {scenario}: flows[0].start: 2 ms is at or after the run's end (1 ms), so nothing is "
               f"sent")
    done = run_cli("validate", str(scenario))
    assert done.returncode == 0 and done.stderr.splitlines() == [warning]
    done = run_cli("run", str(scenario), "--out", str(tmp_path / "run"), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == warning
