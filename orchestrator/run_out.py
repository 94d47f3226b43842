"""A run's results directory (``--out``), made ready before the run starts: refused with a reason
when it cannot take the results."""

from __future__ import annotations

import tempfile
from pathlib import Path

from emulators.model.scenario import Scenario
from orchestrator.deploy import DeployError
from orchestrator.deploy.k8s_render import check_scenario_name
from orchestrator.run import INPUTS_FILE


class OutError(Exception):
    """``--out`` cannot take the run's results; the message says why and what to pass instead."""


def default_out(scenario: Scenario) -> Path:
    """out/NAME: every scenario its own results directory."""
    try:
        check_scenario_name(scenario.name)
    except DeployError as e:
        raise OutError(f"{e}; give --out DIR") from None
    return Path("out") / scenario.name


def prepare_out(out: Path, force: bool) -> Path:
    """``out``, ready for a run's results before the run starts: a directory (created) this process can
    write in, holding no earlier run's results, unless ``force`` (then those results, their recorded
    inputs and their report go)."""
    if out.exists() and not out.is_dir():
        raise OutError(f"--out {out} is not a directory")
    results = out / "results.json"
    if (results.exists() or results.is_symlink()) and not force:
        raise OutError(f"{out} holds an earlier run's results; choose another --out or pass --force to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutError(f"--out {out} cannot be created: {e.strerror or e}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise OutError(f"--out {out} is not writable: a file cannot be created in it ({e.strerror or e})") from None
    if results.exists() or results.is_symlink():
        from orchestrator.report import HTML_NAME, ITERATIONS_CSV, LINKS_CSV, TIMESERIES_CSV

        try:
            for name in ("results.json", INPUTS_FILE, HTML_NAME, TIMESERIES_CSV, LINKS_CSV, ITERATIONS_CSV):
                (out / name).unlink(missing_ok=True)
        except OSError as e:
            raise OutError(f"the earlier results in {out} cannot be replaced: {e.strerror or e}") from None
    return out
