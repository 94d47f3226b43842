"""Progress of virtual time: a single-host run in slices gives the same results as in one window."""

from __future__ import annotations

import functools
import io
import json

import pytest
from tqdm import tqdm

from orchestrator import cli
from orchestrator.coordinator import PROGRESS_WINDOWS
from orchestrator.results import deterministic_view
from orchestrator.run import run_scenario
from orchestrator.scenario.loader import load_scenario


def test_a_watched_single_host_run_moves_in_slices_and_ends_alike() -> None:
    scenario = load_scenario("scenarios/cross-traffic.yaml")
    seen: list[int] = []
    sliced = run_scenario(scenario, "single", progress=seen.append)
    whole = run_scenario(scenario, "single")
    assert json.dumps(deterministic_view(sliced), sort_keys=True) == json.dumps(deterministic_view(whole),
                                                                                sort_keys=True)
    assert whole["run"]["windows"] == 2
    step = scenario.duration_ps // PROGRESS_WINDOWS
    assert 100 < sliced["run"]["windows"] <= PROGRESS_WINDOWS + 1  # + the closing window at the end
    assert seen == sorted(seen) and seen[-1] == scenario.duration_ps
    assert all(t % step == 0 for t in seen)  # slices of equal length on one grid


def test_a_multi_host_run_reports_every_window() -> None:
    scenario = load_scenario("scenarios/cross-traffic.yaml")
    seen: list[int] = []
    results = run_scenario(scenario, "site", progress=seen.append)
    assert len(seen) == results["run"]["windows"] and seen[-1] == scenario.duration_ps


def test_the_bar_shows_virtual_time_and_is_gone_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(cli.sys, "stderr", err)
    monkeypatch.setattr(cli, "tqdm", functools.partial(tqdm, mininterval=0))  # draw every update
    with pytest.raises(RuntimeError), cli.progress_bar(40_000_000_000, show=True) as reached:
        assert reached is not None
        reached(12_300_000_000)
        raise RuntimeError("a host failed")
    shown = err.getvalue()
    assert "virtual 12.3 ms / 40 ms" in shown and " 31%" in shown
    assert shown.endswith("\r") and not shown.rsplit("\r", 2)[-2].strip()  # cleared when the run failed
    with cli.progress_bar(40_000_000_000, show=False) as reached:
        assert reached is None


def test_no_progress_flag() -> None:
    args = cli.build_parser().parse_args(["run", "x.yaml", "--no-progress"])
    assert args.no_progress is True
    assert cli.build_parser().parse_args(["run", "x.yaml"]).no_progress is False
