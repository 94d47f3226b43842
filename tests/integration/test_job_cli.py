"""A training job as a user runs it: the CLI's summary, equivalent compute against a baseline, and
the same results from host processes as from one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.results import deterministic_view
from tests.helpers import run_cli
from tests.unit.test_subpools import MIXED

pytestmark = pytest.mark.integration


JOB = """version: 0
name: {name}
duration: 2s
fabrics:
  dc1: &site {{leaves: 1, spines: 1, servers_per_leaf: 1, server_rate: 100G, server_kind: gpu_server,
              server_options: {{gpus: 2, rdma: {{chunk: 256KiB}}}}}}
  dc2: *site
wan:
  line_rate: {line}
  clients: 1
  pairs:
    - {{a: dc1, b: dc2, length: 100km}}
job:
  model: llama2-7b
  model_overrides: {{layers: 2}}
  parallel: {{tp: 1, pp: 2, dp: 2}}
  global_batch: 8
  micro_batch: 1
  sequence: 1024
  iterations: 2
  placement: dp-across-sites
"""


def write(tmp_path: Path, name: str, line: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(JOB.format(name=name, line=line))
    return path


def test_equivalent_compute_against_a_baseline_scenario(tmp_path):
    fast, slow = write(tmp_path, "fast", "400G"), write(tmp_path, "slow", "25G")
    done = run_cli("run", str(slow), "--baseline", str(fast), "--out", str(tmp_path / "slow"))
    assert done.returncode == 0, done.stderr
    job = json.loads((tmp_path / "slow" / "results.json").read_text())["job"]
    baseline = json.loads((tmp_path / "slow" / "baseline" / "results.json").read_text())["job"]
    # DP crosses the WAN: a 25G line makes the iteration slower than the 400G baseline
    assert job["equivalent_compute"] == baseline["iteration_time_ps"] / job["iteration_time_ps"] < 1
    assert "equivalent compute" in done.stdout and "estimate" in done.stdout
    # a baseline given as a finished run's directory is read, not run again
    again = run_cli("run", str(slow), "--baseline", str(tmp_path / "slow" / "baseline"), "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "b" / "results.json").read_text())["job"]["equivalent_compute"] == pytest.approx(
        job["equivalent_compute"])


def test_a_bad_baseline_is_one_line(tmp_path):
    scenario = write(tmp_path, "x", "100G")
    missing = run_cli("run", str(scenario), "--baseline", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: --baseline ")
    assert len(missing.stderr.strip().splitlines()) == 1
    no_job = run_cli("run", str(scenario), "--baseline", "scenarios/testers.yaml", "--out", str(tmp_path / "t"))
    assert no_job.returncode == 2 and "has no job: block" in no_job.stderr
    assert not (tmp_path / "t").exists()  # refused before anything ran
    not_results = tmp_path / "list.json"
    not_results.write_text("[1, 2]")
    wrong = run_cli("run", str(scenario), "--baseline", str(not_results), "--out", str(tmp_path / "w"))
    assert wrong.returncode == 2 and "no completed iteration of a training job" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "w").exists()


def test_host_processes_give_the_results_of_one_process(tmp_path):
    scenario = write(tmp_path, "procs", "100G")
    one = run_cli("run", str(scenario), "--out", str(tmp_path / "one"))
    many = run_cli("run", str(scenario), "--partition", "site", "--backend", "process", "--out", str(tmp_path / "many"))
    assert one.returncode == 0 and many.returncode == 0, many.stderr
    views = [deterministic_view(json.loads((tmp_path / d / "results.json").read_text())) for d in ("one", "many")]
    assert views[0]["job"]["status"] == "completed"
    assert views[0] == views[1]


def test_a_mixed_pool_reports_both_efficiencies_and_no_subpools_skips_the_extra_runs(tmp_path: Path) -> None:
    scenario = tmp_path / "mixed.yaml"
    scenario.write_text(MIXED)
    done = run_cli("run", str(scenario), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    job = json.loads((tmp_path / "out" / "results.json").read_text())["job"]
    kinds = job["subpools"]["kinds"]
    assert [(k["gpu"], k["gpus"]) for k in kinds] == [("h100", 2), ("l20", 2)]
    assert job["pool_efficiency_measured"] == pytest.approx(
        job["tokens_per_gpu_per_s"] * 4 / sum(k["share_tokens_per_s"] for k in kinds))
    assert 0 < job["pool_efficiency"] < job["pool_efficiency_measured"] <= 1
    measured = f"pool efficiency {100 * job['pool_efficiency_measured']:.1f} % of the measured sub-pool bound"
    assert measured in done.stdout
    skipped = run_cli("run", str(scenario), "--out", str(tmp_path / "skip"), "--no-subpools")
    assert skipped.returncode == 0 and "sub-pool" not in skipped.stdout
    assert "subpools" not in json.loads((tmp_path / "skip" / "results.json").read_text())["job"]
