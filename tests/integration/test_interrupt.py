"""SIGINT and SIGTERM to a process running a scenario: the run stops on every host, the partial results
are written with status "interrupted", and run_scenario raises RunInterrupted carrying the signal.

A small script runs the scenario (as `testbed run` does) and says READY at a chosen point: while the
engine of an in-process run is busy, mid-run, or while the hosts start. The test then signals it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import process_alive

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

RUNNER = '''
import asyncio, sys, threading, time
from pathlib import Path

from orchestrator.run import RunInterrupted, run_scenario
from orchestrator.scenario.loader import parse_scenario
from services.logs import configure_logging
from tests.helpers import two_testers

backend, partition, when, out = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
configure_logging("info", json=True)
# far longer than any test waits: the run ends only by the signal
duration = "60s" if backend == "inproc" else "500ms"
flow = f"  - {{name: f, src: ta/p0, dst: tb/p0, rate: 100G, frame: 64KiB, for: {duration}}}"
scenario = parse_scenario(two_testers(duration=duration, flows=flow), "<t>")
progress = prepare = None


def ready():
    print("READY", flush=True)


if when == "engine":  # well into the engine's work, which an in-process run does without a break
    def prepare(runtime, watched=[]):
        def watch():
            while runtime.engine.now < 10**9:
                time.sleep(0.01)
            ready()
        if not watched:  # one host's engine is enough
            watched.append(runtime)
            threading.Thread(target=watch, daemon=True).start()
elif when == "window":
    def progress(end_ps, seen=[]):
        seen.append(end_ps)
        if len(seen) == 50:
            ready()
elif when == "starting":  # the hosts serve, and are never loaded
    import orchestrator.backends.process as process

    async def load_never(*args, **kwargs):
        ready()
        await asyncio.sleep(3600)

    process.load_and_connect = load_never
try:
    run_scenario(scenario, partition, backend, out_dir=out, progress=progress, prepare=prepare)
except RunInterrupted as e:
    print(f"INTERRUPTED {e.signal_number} {e}", flush=True)
    sys.exit(128 + e.signal_number)
print("FINISHED", flush=True)
'''


def _host_pids(stderr: str) -> list[int]:
    pids = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "host started":
            pids.append(entry["pid"])
    return pids


def _interrupt(tmp_path: Path, backend: str, partition: str, when: str, sig: signal.Signals,
               times: int = 1) -> tuple[subprocess.CompletedProcess[str], float, dict]:
    """Run the script, signal it ``times`` once it is READY; its output, the seconds from the first
    signal to its exit, and its results.json."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), backend, partition, when, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if first != "READY\n":
            proc.kill()
            raise AssertionError(first + proc.communicate()[1][-3000:])
        signalled_at = time.monotonic()
        for _ in range(times):
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        elapsed = time.monotonic() - signalled_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, first + stdout, stderr)
    return done, elapsed, json.loads((out / "results.json").read_text())


def _assert_interrupted(done: subprocess.CompletedProcess[str], results: dict, sig: signal.Signals) -> None:
    assert done.returncode == 128 + sig, done.stdout + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("INTERRUPTED"))
    assert line.startswith(f"INTERRUPTED {int(sig)} interrupted by {sig.name} at "), line
    assert line.endswith(f"of {'60 s' if results['run']['backend'] == 'inproc' else '500 ms'} (virtual time)"), line
    assert results["status"] == "interrupted" and results["run"]["interrupted_by"] == sig.name
    assert results["error"] == f"interrupted by {sig.name}"


@pytest.mark.parametrize(("partition", "sig"), [("single", signal.SIGINT), ("device", signal.SIGTERM)])
def test_a_signal_stops_an_in_process_run_at_once_and_keeps_what_it_measured(tmp_path, partition, sig):
    """An in-process run may be a single window the engine never leaves: the signal still stops it."""
    done, elapsed, results = _interrupt(tmp_path, "inproc", partition, "engine", sig)
    _assert_interrupted(done, results, sig)
    assert elapsed < 5.0, f"took {elapsed:.1f} s to stop"
    assert set(results["devices"]) == {"ta", "tb"}
    assert results["devices"]["ta"]["counters"]["frames_sent"] > 0
    assert 10**9 <= results["virtual_end_ps"] < results["scenario"]["duration_ps"]


@pytest.mark.parametrize(("sig", "times"), [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGTERM, 2)])
def test_a_signal_stops_every_host_process_and_keeps_their_partial_results(tmp_path, sig, times):
    """Mid-run, on the process backend; a second signal while the run stops changes nothing."""
    done, elapsed, results = _interrupt(tmp_path, "process", "device", "window", sig, times)
    _assert_interrupted(done, results, sig)
    assert elapsed < 10.0, f"took {elapsed:.1f} s to stop"
    assert set(results["devices"]) == {"ta", "tb"}  # every host answered with what it measured
    assert results["devices"]["ta"]["counters"]["frames_sent"] > 0
    assert 0 < results["virtual_end_ps"] < results["scenario"]["duration_ps"]
    assert results["run"]["windows"] >= 50
    pids = _host_pids(done.stderr)
    assert len(pids) == 2 and not any(process_alive(pid) for pid in pids)


def test_a_signal_while_the_hosts_start_stops_them_and_writes_what_there_is(tmp_path):
    done, _, results = _interrupt(tmp_path, "process", "device", "starting", signal.SIGTERM)
    _assert_interrupted(done, results, signal.SIGTERM)
    assert results["devices"] == {} and results["virtual_end_ps"] == 0
    assert results["run"]["missing_hosts"] == ["ta", "tb"]
    pids = _host_pids(done.stderr)
    assert len(pids) == 2 and not any(process_alive(pid) for pid in pids)


def test_run_scenario_gives_the_signals_back_and_a_finished_run_is_unchanged():
    from orchestrator.results import deterministic_view
    from orchestrator.run import run_scenario
    from orchestrator.scenario.loader import parse_scenario
    from tests.helpers import two_testers

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not expected")

    before = signal.signal(signal.SIGTERM, mine)
    try:
        scenario = parse_scenario(two_testers(duration="1ms", flows="  - {name: f, src: ta/p0, dst: tb/p0, "
                                                                    "rate: 100G, frame: 64KiB, for: 1ms}"), "<t>")
        single = run_scenario(scenario)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        device = run_scenario(scenario, "device", "process")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
    assert single["status"] == device["status"] == "ok" and "interrupted_by" not in device["run"]
    assert deterministic_view(single) == deterministic_view(device)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_testbed_run_says_it_was_stopped_in_one_line_and_exits_with_the_signal(tmp_path, sig):
    """Ctrl-C (or SIGTERM) to the `testbed` command: exit 128 + the signal, one line saying so and where
    the partial results are, and those results written."""
    from tests.helpers import two_testers

    scenario = tmp_path / "long.yaml"
    scenario.write_text(two_testers(duration="60s", flows="  - {name: f, src: ta/p0, dst: tb/p0, rate: 100G, "
                                                          "frame: 64KiB, for: 60s}"))
    out = tmp_path / "out"
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "testbed"), "--log-level", "info", "run", str(scenario),
                             "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # the run has started (signals are the run's from then on)
            seen.append(line)
            if '"run starting"' in line:
                break
        else:
            raise AssertionError("".join(seen)[-3000:])
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    said = [line for line in stderr.splitlines() if not line.startswith("{")]  # what is not a JSON log line
    assert proc.returncode == 128 + sig, stderr[-3000:]
    assert said == [f"error: interrupted by {sig.name} at {said[0].split(' at ', 1)[1]}"], stderr[-3000:]
    assert said[0].endswith(f"of 60 s (virtual time); partial results: {out / 'results.json'}")
    assert stdout == ""
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted" and results["run"]["interrupted_by"] == sig.name
