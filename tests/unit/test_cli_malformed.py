"""Every malformed command line of tests/data/malformed/cli/cases.yaml gets one `error:` line naming
what to fix, the expected exit code, and nothing written or started."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli
from tests.cli_cases import CliCase, load_cases, prepare, snapshot

CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_malformed_command_line_is_one_error_line(case: CliCase, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)  # keep structlog off the captured stderr
    prepared = prepare(case, tmp_path)
    before = snapshot(prepared.files)
    assert cli.main(prepared.argv) == case.exit
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert prepared.stderr in lines[0]
    assert snapshot(prepared.files) == before  # refused before anything was written
    assert list(prepared.untouched.iterdir()) == []


def test_the_cases_cover_every_category_the_issue_names() -> None:
    categories = {case.category for case in CASES}
    assert categories >= {"pace", "window-timeout", "seed", "tail", "out", "baseline", "scenario", "report", "replay"}
    assert any(case.process for case in CASES)
