"""`testbed report` as a user meets it: after a real `testbed run`, and on directories that are not runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from orchestrator.results import RESULTS_SCHEMA
from tests.helpers import run_cli

pytestmark = pytest.mark.integration


def test_report_of_a_real_incast_run(tmp_path):
    done = run_cli("run", "scenarios/fabric/incast-pfc.yaml", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr

    done = run_cli("report", str(tmp_path))
    assert done.returncode == 0, done.stderr
    written = [Path(line) for line in done.stdout.splitlines()]
    assert [p.name for p in written] == ["report.html", "timeseries.csv", "links.csv"]
    assert all(p.parent == tmp_path and p.stat().st_size > 0 for p in written)

    html = (tmp_path / "report.html").read_text()
    assert "incast-pfc" in html and "frames lost" in html
    # nine servers into one: the links are loaded, the leaf buffers and pauses, there is no training job
    for section in ("Link utilisation", "Buffer and queue depth", "PFC pauses"):
        assert html.index('src="data:image/png;base64,', html.index(section)) < html.index("<h2>", html.index(section))
    assert html.count("no data: the run has no training job") == 2

    results = json.loads((tmp_path / "results.json").read_text())
    with (tmp_path / "timeseries.csv").open(newline="") as f:
        rows = sum(1 for _ in csv.reader(f)) - 1
    assert rows == sum((len(s) - 1) * len(s["t_ps"]) for s in results["timeseries"].values())
    with (tmp_path / "links.csv").open(newline="") as f:
        links = list(csv.DictReader(f))
    assert links and max(float(r["utilisation"]) for r in links) > 0.9  # the incast port runs at line rate


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("absent", "no such directory"),
        ("empty", "no results.json in"),
        ("corrupt", "is not valid JSON"),
        ("foreign", "is not a testbed results file"),
    ],
)
def test_report_of_something_that_is_not_a_run_is_one_clear_line(tmp_path, setup, words):
    run_dir = tmp_path / "run"
    if setup != "absent":
        run_dir.mkdir()
    if setup == "corrupt":
        (run_dir / "results.json").write_text('{"schema": "' + RESULTS_SCHEMA + '", "devices": {')
    if setup == "foreign":
        (run_dir / "results.json").write_text('{"schema": "other/v1"}')
    done = run_cli("report", str(run_dir))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and str(run_dir) in lines[0], done.stderr
    assert done.stdout == "" and not (run_dir / "report.html").exists()
