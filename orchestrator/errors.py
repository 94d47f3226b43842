"""Where a problem is, for one-line errors: key paths into a scenario file and listings of what exists.

Shared by the scenario loader and the workload compiler (which checks the job block), so neither imports
the other for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

KeyPath = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class ScenarioError(Exception):
    """A problem with a scenario file, as one line: ``<source>: <key.path>: <what is wrong and allowed>``."""

    def __init__(self, source: str, where: str | None, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        text = f"{source}: {where}: {problem}" if where else f"{source}: {problem}"
        super().__init__(" ".join(text.splitlines()))


class KeyProblem(Exception):
    """A problem at a key path of the document a stage reads, before the loader names the file."""

    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def key_path(path: Iterable[str | int]) -> str:
    """``("links", 2, "rate")`` -> ``links[2].rate``; the empty path is the ``top level``."""
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif _PLAIN_KEY.fullmatch(key):
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key)}]"
    return text or "top level"


def listing(names: Iterable[str], limit: int = 12) -> str:
    """Names for a message that says what exists: ``a, b, c``, cut short past ``limit``."""
    names = list(names)
    if not names:
        return "none are declared"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
