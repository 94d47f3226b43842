"""``testbed replay``: a recorded run run again with the faults and gNMI Sets injected into it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from orchestrator.partition import PartitionError
from orchestrator.results import deterministic_view, read_json
from orchestrator.run import INPUTS_FILE, RunFailed, run_scenario
from orchestrator.run_out import OutError, prepare_out
from orchestrator.scenario.loader import ScenarioError
from orchestrator.summary import summary


def replay_run(run_dir: Path, out: Path | None, force: bool = False) -> int:
    """``testbed replay``: the recorded scenario with its injected faults in the timeline, run again;
    0 when its results equal the recorded ones (everything outside ``run``), 1 when they differ."""
    from orchestrator.control import replay_scenario, schedule_sets

    try:
        if not run_dir.is_dir():
            raise ValueError(f"{run_dir} is not a directory" if run_dir.exists() else f"no such directory {run_dir}")
        inputs = read_json(run_dir / INPUTS_FILE)
        recorded = read_json(run_dir / "results.json")
        _check_recorded(inputs, recorded)
    except (OSError, ValueError) as e:
        print(f"error: {run_dir} is not a recorded run (`testbed run --control ... --out {run_dir}`): "
              f"{getattr(e, 'strerror', None) or e}", file=sys.stderr)
        return 2
    try:
        scenario = replay_scenario(inputs)
    except (OSError, ScenarioError, ValueError, yaml.YAMLError, LookupError, TypeError, AttributeError) as e:
        print(f"error: {run_dir / INPUTS_FILE}: its scenario cannot be replayed: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        out = prepare_out(out, force) if out is not None else prepare_out(run_dir / "replay", force=True)
    except OutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        results = run_scenario(scenario, recorded["run"].get("partition", "single"), "inproc", out,
                               prepare=schedule_sets(inputs.get("gnmi_sets", [])))
    except PartitionError as e:
        print(f"error: {run_dir / 'results.json'}: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (LookupError, TypeError, ValueError) as e:  # from putting the recorded gNMI Sets back
        print(f"error: {run_dir / INPUTS_FILE}: a recorded gNMI Set cannot be replayed: {_one_line(e)}",
              file=sys.stderr)
        return 2
    print(summary(results))
    differing = sorted(k for k in set(deterministic_view(results)) | set(deterministic_view(recorded))
                       if results.get(k) != recorded.get(k))
    if differing:
        print(f"replay differs from {run_dir}/results.json in: {', '.join(differing)}")
        return 1
    print(f"replay identical to {run_dir}/results.json ({len(inputs.get('faults', []))} injected faults, "
          f"{len(inputs.get('gnmi_sets', []))} gNMI Sets); results: {out}")
    return 0


def _check_recorded(inputs: Any, recorded: Any) -> None:
    """ValueError naming what a run directory's inputs.json or results.json lacks for a replay."""
    if not isinstance(inputs, dict) or not isinstance(inputs.get("scenario"), str):
        raise ValueError("inputs.json names no scenario file")
    if isinstance(inputs.get("seed"), bool) or not isinstance(inputs.get("seed"), int):
        raise ValueError("inputs.json has no integer seed")
    for key in ("faults", "gnmi_sets", "timeline"):
        entries = inputs.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ValueError(f"inputs.json {key} is not a list of records")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("run"), dict):
        raise ValueError("results.json is not a run's results")


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return " ".join(str(error).split()) or type(error).__name__
