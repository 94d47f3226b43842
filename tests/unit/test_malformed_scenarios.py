"""Malformed and meaningless scenario files, kept as data in tests/data/malformed/.

``scenarios/``: each file fails to load with one line that names the key; its first line says what the
line must contain, ``# expect: fragment | fragment``. ``scenarios-warn/``: each file loads, with one
warning in ``Scenario.warnings`` (``# warn: ...``). The limits fire while the file is read or before a
building block expands, so every case stays small in memory however large it asks to be.
"""

from __future__ import annotations

import os
import re
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from emulators.model.scenario import scenario_to_dict
from orchestrator.scenario.loader import MAX_FILE_BYTES, ScenarioError, load_scenario, parse_scenario
from tests.helpers import TESTBED

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "malformed"
ERRORS = sorted((DATA / "scenarios").glob("*.yaml"))
WARNINGS = sorted((DATA / "scenarios-warn").glob("*.yaml"))
PEAK_BYTES = 64 * 2**20  # the largest case makes a 15,110-device fabric (~18 MiB) before refusing a second one


def expected(path: Path, tag: str) -> list[str]:
    """The fragments a case's first line (``# <tag>: a | b``) says its message must contain."""
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# {tag}: "), f"{path.name} must start with '# {tag}: <fragment> | <fragment>'"
    return [fragment.strip() for fragment in first.removeprefix(f"# {tag}: ").split(" | ")]


def test_the_cases_are_there() -> None:
    assert len(ERRORS) >= 100 and len(WARNINGS) >= 8


@pytest.mark.parametrize("path", ERRORS, ids=lambda path: path.stem)
def test_a_malformed_scenario_fails_with_one_line_naming_the_key(path: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioError) as caught:
            load_scenario(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert "internal error" not in message, message
    for fragment in expected(path, "expect"):
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert peak < PEAK_BYTES, f"{path.name} took {peak / 2**20:.0f} MiB before it was refused"


@pytest.mark.parametrize("path", WARNINGS, ids=lambda path: path.stem)
def test_a_meaningless_scenario_loads_with_one_warning(path: Path) -> None:
    scenario = load_scenario(path)
    assert len(scenario.warnings) == 1, scenario.warnings
    warning = scenario.warnings[0]
    assert warning.startswith(f"{path}: ") and "\n" not in warning, warning
    for fragment in expected(path, "warn"):
        assert fragment in warning, f"{fragment!r} not in: {warning}"
    assert "warnings" not in scenario_to_dict(scenario)  # hosts and results never see them


def test_a_valid_scenario_has_no_warnings() -> None:
    assert load_scenario(ROOT / "scenarios" / "testers.yaml").warnings == ()


def test_the_sample_interval_the_cap_suggests_fits() -> None:
    path = DATA / "scenarios" / "time-sample-interval-default-100us.yaml"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    found = re.search(r"a sample_interval of at least (\w+),", str(caught.value))
    assert found is not None and found[1] == "250us", caught.value  # 16,001 samples of 1,232 counters
    assert parse_scenario(path.read_text().replace("100us", found[1])).sample_interval_ps == 250 * 10**6
    with pytest.raises(ScenarioError, match="a run keeps at most 20,000,000"):
        parse_scenario(path.read_text().replace("100us", "240us"))


def test_a_file_larger_than_the_limit_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "large.yaml"
    path.write_text("duration: 1ms\n" + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ScenarioError, match=r"large\.yaml: is larger than 1 MiB, the most a scenario file may be"):
        load_scenario(path)


def test_a_name_from_the_file_is_made_a_dns_label(tmp_path: Path) -> None:
    path = tmp_path / "My_Run 2.yaml"
    path.write_text("duration: 1ms\n")
    assert load_scenario(path).name == "my-run-2"
    (tmp_path / "2.yaml").write_text("duration: 1ms\n")
    assert load_scenario(tmp_path / "2.yaml").name == "scenario"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """``testbed validate`` as a user runs it; a path it would read forever fails the timeout, not the suite."""
    return subprocess.run([*TESTBED, "validate", str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["yaml-billion-laughs", "yaml-nesting-list-10000", "time-duration-1000-years",
                                  "time-sample-interval-default-100us", "topology-100000-servers-per-leaf",
                                  "size-frame-1-byte", "flops-tflops-denormal", "name-newline"])
def test_validate_refuses_with_one_line_and_exit_2(name: str) -> None:
    path = DATA / "scenarios" / f"{name}.yaml"
    done = validate(path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {path}: "), done.stderr
    assert "Traceback" not in done.stderr
    assert all(fragment in done.stderr for fragment in expected(path, "expect")), done.stderr


@pytest.mark.parametrize("kind", ["character device", "named pipe", "directory"])
def test_validate_refuses_what_is_not_a_regular_file_without_reading_it(kind: str, tmp_path: Path) -> None:
    paths: dict[str, Path] = {"character device": Path("/dev/zero"), "directory": tmp_path,
                              "named pipe": tmp_path / "pipe.yaml"}
    path = paths[kind]
    if kind == "named pipe":
        os.mkfifo(path)  # opening it would wait for a writer forever
    done = validate(path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and kind in done.stderr and "Traceback" not in done.stderr, done.stderr
