"""The malformed command lines of tests/data/malformed/cli/cases.yaml, ready to run in a test's tmp_path."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

CASES_DIR = Path(__file__).parent / "data" / "malformed" / "cli"


@dataclass(frozen=True)
class CliCase:
    category: str
    argv: tuple[str, ...]
    exit: int
    stderr: str
    process: bool = False

    @property
    def id(self) -> str:
        return f"{self.category}:{' '.join(self.argv)}"[:80]


@dataclass(frozen=True)
class Prepared:
    argv: list[str]
    stderr: str
    files: Path  # the case's copy of files/: no case may change it
    untouched: Path  # an empty directory: no case may write in it


def load_cases() -> list[CliCase]:
    entries = yaml.safe_load((CASES_DIR / "cases.yaml").read_text())
    return [CliCase(e["category"], tuple(e["argv"]), e["exit"], e["stderr"], e.get("process", False))
            for e in entries]


def prepare(case: CliCase, tmp_path: Path) -> Prepared:
    files, untouched = tmp_path / "files", tmp_path / "untouched"
    shutil.copytree(CASES_DIR / "files", files)
    untouched.mkdir()

    def fill(text: str) -> str:
        return text.replace("{files}", str(files)).replace("{tmp}", str(untouched))

    return Prepared([fill(arg) for arg in case.argv], fill(case.stderr), files, untouched)


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its bytes (None for a directory): to show nothing changed."""
    return {str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes() for p in directory.rglob("*")}

