"""Scenario files (YAML, version 0) to a resolved :class:`~emulators.model.scenario.Scenario`.

One pipeline, each pass failing with one line that names the file, the key path and what is allowed:

1. strict YAML (:mod:`~orchestrator.scenario.strict_yaml`: duplicate keys and oversized files refused);
2. the JSON Schema in ``schema.json`` (:mod:`~orchestrator.scenario.schema`);
3. units: every quantity the schema marks with ``x-unit`` converted (:mod:`~orchestrator.scenario.units`);
4. building blocks: fabrics, the WAN, supernodes, traffic patterns and faults expanded into the devices,
   links, flows and faults they stand for (:mod:`~orchestrator.scenario.expand`);
5. the model's objects, references and device options checked (:mod:`~orchestrator.scenario.resolver`),
   with the checks across the whole scenario (:mod:`~orchestrator.scenario.checks`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from emulators.model.scenario import Scenario
from emulators.model.units import format_bytes
from orchestrator.errors import KeyProblem, ScenarioError, key_path
from orchestrator.scenario.builder import Expansion
from orchestrator.scenario.expand import expand
from orchestrator.scenario.resolver import Resolver
from orchestrator.scenario.schema import check_against_schema, scenario_schema
from orchestrator.scenario.strict_yaml import read_yaml
from orchestrator.scenario.units import convert_units

__all__ = ["MAX_FILE_BYTES", "ScenarioError", "load_scenario", "parse_scenario", "scenario_schema"]

# Limits on what a scenario file may hold: this one before reading it, the others while YAML composes it.
# 1 MiB: ~450x the largest scenario here (2.3 KiB), and ~10 s for PyYAML; fabrics describe larger topologies
MAX_FILE_BYTES = 2**20

_FILE_TYPES: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def load_scenario(path: str | os.PathLike[str], seed: int | None = None) -> Scenario:
    """Read, validate and resolve a scenario file; ``seed`` (when given) overrides the file's seed."""
    source = str(path)
    try:
        text = _read_file(Path(path), source).decode("utf-8-sig")
    except FileNotFoundError:
        raise ScenarioError(source, None, "no such file") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(source, None, f"is not UTF-8 text (bad byte at offset {e.start})") from None
    except OSError as e:
        raise ScenarioError(source, None, f"cannot be read: {e.strerror or e}") from None
    return parse_scenario(text, source, seed)


def _read_file(path: Path, source: str) -> bytes:
    """The file's bytes, refusing what is not a regular file (a device, a pipe: read forever or block)
    and files larger than :data:`MAX_FILE_BYTES`, before reading them."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise ScenarioError(source, None, "is a directory; give a scenario .yaml file")
    if not stat.S_ISREG(mode):
        what = next((word for test, word in _FILE_TYPES if test(mode)), "a special file")
        raise ScenarioError(source, None, f"is {what}, not a regular file; give a scenario .yaml file")
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)  # the size may have changed since stat
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(source, None, (
            f"is larger than {format_bytes(MAX_FILE_BYTES)}, the most a scenario file may be; describe repeated "
            "parts with fabrics, supernodes or traffic patterns"))
    return data


def parse_scenario(text: str, source: str = "<string>", seed: int | None = None) -> Scenario:
    """Validate and resolve scenario YAML held in memory; ``source`` names it in error messages."""
    try:
        written = read_yaml(text, source)
        expansion = _expanded(written, source)
        try:
            return Resolver(source, expansion, written).scenario(seed)
        except KeyProblem as e:  # at a key path of the expanded document: named as written
            raise ScenarioError(source, expansion.where(e.path), e.problem) from None
    except ScenarioError:
        raise
    except Exception as e:  # a bug here must still reach the user as one line naming their file
        raise ScenarioError(
            source, None, f"internal error while loading ({type(e).__name__}: {e}); please report it"
        ) from e


def _expanded(written: object, source: str) -> Expansion:
    """Passes 2 to 4, whose problems are at key paths of the file as written."""
    try:
        check_against_schema(written)
        assert isinstance(written, dict)  # the schema asks for a mapping
        return expand(convert_units(written))
    except KeyProblem as e:
        raise ScenarioError(source, key_path(e.path), e.problem) from None
