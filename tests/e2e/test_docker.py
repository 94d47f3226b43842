"""End to end on a real Docker engine: one container per device (host networking, loopback ports only),
the same results as the process backend, a killed, stopped or removed container failing the run by name,
SIGINT and SIGTERM stopping a run with every container's results, nothing left behind.

Starts the engine if none answers and builds the image (both idempotent): `make e2e` runs these.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.results import deterministic_view
from tests.helpers import TESTBED, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
SCENARIO_NAME = "e2e-two-sites"
DEVICES = ("tester-a", "tester-a2", "tester-b", "tester-b2")
LABEL = f"aicn-testbed.scenario={SCENARIO_NAME}"

# two sites 300 km apart, a tester pair in each; about 10 s in containers in the device partition
SCENARIO = f"""
name: {SCENARIO_NAME}
seed: 3
duration: 10ms
sample_interval: 1ms
sites: [dc-a, dc-b]
devices:
  tester-a:  {{kind: tester, site: dc-a, ports: [wan, lan]}}
  tester-a2: {{kind: tester, site: dc-a, ports: [lan]}}
  tester-b:  {{kind: tester, site: dc-b, ports: [wan, lan]}}
  tester-b2: {{kind: tester, site: dc-b, ports: [lan]}}
links:
  - {{name: wan,   a: tester-a/wan,  z: tester-b/wan,  rate: 400G, length: 300km, ber: 1e-11}}
  - {{name: lan-a, a: tester-a2/lan, z: tester-a/lan,  rate: 400G, length: 100m}}
  - {{name: lan-b, a: tester-b2/lan, z: tester-b/lan,  rate: 400G, length: 100m}}
flows:
  - {{name: wan-a-to-b, src: tester-a/wan,  dst: tester-b/wan, rate: 300G, frame: 64KiB, for: 8ms}}
  - {{name: wan-b-to-a, src: tester-b/wan,  dst: tester-a/wan, rate: 100G, frame: 64KiB, for: 8ms}}
  - {{name: local-a,    src: tester-a2/lan, dst: tester-a/lan, rate: 200G, frame: 256KiB, for: 8ms}}
  - {{name: local-b,    src: tester-b2/lan, dst: tester-b/lan, rate: 200G, frame: 256KiB, start: 1ms, for: 7ms}}
faults:
  - {{at: 4ms, link: wan, ber: 1e-8}}
"""


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def _leftovers() -> tuple[list[str], list[str]]:
    containers = _docker("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").split()
    networks = _docker("network", "ls", "--filter", f"label={LABEL}", "--format", "{{.Name}}").split()
    return containers, networks


@pytest.fixture(scope="module")
def engine_and_image() -> Iterator[None]:
    subprocess.run(["scripts/docker-engine.sh"], cwd=REPO, check=True, timeout=600)
    subprocess.run(["scripts/build-image.sh"], cwd=REPO, check=True, timeout=1800,
                   env={**os.environ, "PYTHON": sys.executable})
    run_cli("down", "--scenario", SCENARIO_NAME)
    yield
    down = run_cli("down", "--scenario", SCENARIO_NAME)
    assert down.returncode == 0, down.stderr
    again = run_cli("down", "--scenario", SCENARIO_NAME)  # safe to run twice
    assert again.returncode == 0 and again.stdout.startswith("removed 0 containers and 0 networks"), again.stdout
    assert _leftovers() == ([], [])


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / f"{SCENARIO_NAME}.yaml"
    path.write_text(SCENARIO)
    return path


def _docker_run_args(scenario: Path, out: Path) -> list[str]:
    return ["run", str(scenario), "--partition", "device", "--backend", "docker", "--docker-network", "host",
            "--out", str(out), "--no-progress"]


def test_containers_give_the_process_backends_results(engine_and_image: None, scenario_file: Path,
                                                      tmp_path: Path) -> None:
    in_docker = run_cli(*_docker_run_args(scenario_file, tmp_path / "docker"))
    assert in_docker.returncode == 0, in_docker.stderr
    assert "partition device (4 hosts, docker)" in in_docker.stdout
    as_processes = run_cli("run", str(scenario_file), "--partition", "device", "--backend", "process",
                           "--out", str(tmp_path / "process"), "--no-progress")
    assert as_processes.returncode == 0, as_processes.stderr
    docker_results = json.loads((tmp_path / "docker" / "results.json").read_text())
    process_results = json.loads((tmp_path / "process" / "results.json").read_text())
    assert json.dumps(deterministic_view(docker_results), sort_keys=True) == json.dumps(
        deterministic_view(process_results), sort_keys=True)
    assert docker_results["run"]["backend"] == "docker" and docker_results["run"]["windows"] > 100
    assert all(f["rx_frames"] > 0 for f in docker_results["flows"].values())
    assert sorted(p.name for p in (tmp_path / "docker" / "hosts").iterdir()) == [f"{d}.log" for d in DEVICES]

    # the containers stay for status and logs until `testbed down`
    status = run_cli("status")
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines() if f" {SCENARIO_NAME} " in line]
    assert sorted(row[2] for row in rows) == list(DEVICES)
    assert all(row[4] == "running" and row[5] in ("starting", "healthy") for row in rows), status.stdout
    logs = run_cli("logs", "tester-b2", "--scenario", SCENARIO_NAME)
    # stdout and stderr reach the engine through separate pipes, so their interleaving is not ordered
    assert logs.returncode == 0, logs.stderr
    assert any(line.startswith("LISTENING 127.0.0.1:") for line in logs.stdout.splitlines()), logs.stdout[:400]
    assert '"event": "loaded"' in logs.stdout
    unknown = run_cli("logs", "tester-c", "--scenario", SCENARIO_NAME)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no testbed container of scenario")


def _run_in_background(scenario_file: Path, out: Path, stderr_path: Path) -> subprocess.Popen[str]:
    with open(stderr_path, "w") as err:
        return subprocess.Popen([*TESTBED, "--log-level", "info", *_docker_run_args(scenario_file, out)],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)


def _wait_for(proc: subprocess.Popen[str], stderr_path: Path, event: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while event not in stderr_path.read_text():
        assert proc.poll() is None, stderr_path.read_text()[-2000:]
        assert time.monotonic() < deadline, f"no {event!r} within {timeout_s:g} s"
        time.sleep(0.1)


def _failed_run(proc: subprocess.Popen[str], stderr_path: Path, out: Path, victim: str) -> tuple[str, dict]:
    """The run's one error line, and its results.json, once it has failed naming ``victim``."""
    stderr = stderr_path.read_text()
    assert proc.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and results["run"]["failed_host"] == victim
    assert errors[0] == f"error: {results['error']}; partial results: {out / 'results.json'}"
    print(errors[0])
    return errors[0], results


# `docker kill` (SIGKILL), and `docker stop` (SIGTERM, what a pod's eviction sends too: the host stops gracefully)
@pytest.mark.parametrize(("command", "how"), [(("kill",), "with code 137 (SIGKILL)"),
                                              (("stop", "--time", "10"), "with code 0 after SIGTERM")],
                         ids=["killed", "stopped"])
def test_a_container_killed_mid_run_fails_the_run_within_seconds_naming_it(engine_and_image: None,
                                                                          scenario_file: Path,
                                                                          tmp_path: Path, command: tuple[str, ...],
                                                                          how: str) -> None:
    stderr_path = tmp_path / "stderr.log"
    proc = _run_in_background(scenario_file, tmp_path / "out", stderr_path)
    try:
        _wait_for(proc, stderr_path, "hosts loaded and connected")
        time.sleep(1.5)  # well into the run (it takes about 10 s)
        assert proc.poll() is None, "the run finished before the container could be killed"
        victim = "tester-b2"
        signalled_at = time.monotonic()
        _docker(*command, f"testbed-{SCENARIO_NAME}-{victim}")
        proc.communicate(timeout=60)
        elapsed = time.monotonic() - signalled_at
        print(f"run ended {elapsed:.2f} s after docker {command[0]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert elapsed < 5.0, f"took {elapsed:.1f} s to notice"
    error_line, results = _failed_run(proc, stderr_path, tmp_path / "out", victim)
    assert error_line.startswith(f"error: device host '{victim}' failed: container "
                                 f"testbed-{SCENARIO_NAME}-{victim} exited {how}"), error_line
    assert set(results["devices"]) == {"tester-a", "tester-a2", "tester-b"}  # the survivors' partial results
    assert 0 < results["virtual_end_ps"] < results["scenario"]["duration_ps"]


def test_a_container_removed_while_the_hosts_start_fails_the_run_naming_it(engine_and_image: None,
                                                                          scenario_file: Path,
                                                                          tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.log"
    victim = "tester-a2"
    proc = _run_in_background(scenario_file, tmp_path / "out", stderr_path)
    try:
        _wait_for(proc, stderr_path, f'"container": "testbed-{SCENARIO_NAME}-{victim}"')  # "container started"
        _docker("rm", "--force", f"testbed-{SCENARIO_NAME}-{victim}")
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    error_line, results = _failed_run(proc, stderr_path, tmp_path / "out", victim)
    # `docker rm --force` kills, then removes: the coordinator may look in between
    assert re.match(f"error: device host '{victim}' failed: container testbed-{SCENARIO_NAME}-{victim} "
                    r"(was removed|(exited|dead) with code 137 \(SIGKILL\))", error_line), error_line
    assert victim not in results["devices"] and victim in results["run"]["missing_hosts"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_run_stops_it_and_keeps_every_containers_results(engine_and_image: None,
                                                                        scenario_file: Path, tmp_path: Path,
                                                                        sig: signal.Signals) -> None:
    """Ctrl-C (or SIGTERM) to `testbed run --backend docker` mid-run: one line, exit 128 + the signal,
    and what every container had measured, with status "interrupted"."""
    stderr_path, out = tmp_path / "stderr.log", tmp_path / "out"
    proc = _run_in_background(scenario_file, out, stderr_path)
    try:
        _wait_for(proc, stderr_path, "hosts loaded and connected")
        time.sleep(1.5)  # well into the run (it takes about 10 s)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = stderr_path.read_text()
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: interrupted by {sig.name} at "), errors
    assert errors[0].endswith(f"of 10 ms (virtual time); partial results: {out / 'results.json'}"), errors
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted" and results["run"]["interrupted_by"] == sig.name
    assert set(results["devices"]) == set(DEVICES)  # every container answered with what it measured
    assert 0 < results["virtual_end_ps"] < results["scenario"]["duration_ps"]
