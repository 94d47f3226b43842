"""What a run writes and prints holds no non-finite number, no control character from a name, and no
figure for a job that completed no iteration."""

from __future__ import annotations

import errno
import math
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cli
from orchestrator import run as run_module
from orchestrator.report import write_report
from orchestrator.results import null_non_finite, read_json
from orchestrator.run import run_scenario, write_results
from orchestrator.scenario.loader import parse_scenario
from tests.helpers import run_text, two_testers
from tests.integration.test_job_cli import JOB

FIGURES = ("iteration_time_ps", "tokens_per_gpu_per_s", "pool_efficiency", "communication_share",
           "exposed_communication_ps")  # a job's figures of merit, each over its iteration time


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


def test_non_finite_numbers_are_written_as_null_and_named_by_key_path(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    log = RecordingLog()
    monkeypatch.setattr(run_module, "log", log)
    results = {"status": "ok", "ratio": math.inf, "job": {"iterations": [{"time_ps": 5, "x": math.nan},
                                                                         {"pair": (1.0, -math.inf)}]}}
    path = write_results(results, tmp_path)
    written = read_json(path)  # strict: a NaN or an infinity in the file would be refused
    assert written == {"status": "ok", "ratio": None, "job": {"iterations": [{"time_ps": 5, "x": None},
                                                                             {"pair": [1.0, None]}]}}
    assert log.warnings == [("non-finite numbers written as null",
                             {"keys": ["ratio", "job.iterations[0].x", "job.iterations[1].pair[1]"], "count": 3})]


def test_a_write_that_fails_keeps_the_results_written_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_results({"status": "ok"}, tmp_path)

    def disk_full(path: Path, text: str) -> None:
        with path.open("w") as f:
            f.write(text[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_results({"status": "failed", "devices": {}}, tmp_path)
    monkeypatch.undo()
    assert read_json(tmp_path / "results.json") == {"status": "ok"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no partial file left


def test_a_job_that_completes_no_iteration_says_so_with_no_figures(tmp_path: Path) -> None:
    scenario = parse_scenario(JOB.format(name="short", line="400G").replace("duration: 2s", "duration: 1ms"), "<t>")
    results = run_scenario(scenario, "single")
    job = results["job"]
    assert job["iterations"] == [] and job["status"] == "incomplete"
    assert [job[key] for key in FIGURES] == [None] * len(FIGURES)
    assert null_non_finite(results) == []  # nothing to replace: no ratio over zero was taken
    text = cli.summary(results)
    assert "no iteration completed in 1 ms of virtual time" in text
    assert "iteration 0 ps" not in text and "n/a" not in text
    write_results(results, tmp_path)
    assert (tmp_path / "report.html") in write_report(tmp_path)  # the report takes the nulls too


def test_the_summary_escapes_control_characters_taken_from_results() -> None:
    results = run_text(two_testers(flows="  - {name: f, src: ta/p0, dst: tb/p0, rate: 10G, count: 10}"))
    plain = cli.summary(results)
    results["scenario"]["name"] = "t\x1b[2J\nscenario forged: ok\r"
    results["flows"]["f\x1b]0;title\x07"] = results["flows"].pop("f")
    text = cli.summary(results)
    assert all(c.isprintable() or c == "\n" for c in text)
    assert text.count("\n") == plain.count("\n")  # no line forged
    assert text.startswith("scenario t\\x1b[2J\\nscenario forged: ok\\r (seed 1)")
    assert "f\\x1b]0;title\\x07" in text
