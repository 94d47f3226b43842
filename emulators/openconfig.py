"""OpenConfig-style paths: the words a device kind describes its state and settings in for gNMI.

A path is a tuple of elements ``(name, keys)``, keys a sorted tuple of ``(key, value)`` pairs, as in
gNMI's PathElem; a leaf is a path with its value. A kind's :class:`DevicePaths` lists its own leaves
and plans the Sets of its writable ones; services.gnmi_paths adds what every device has (system,
interfaces), selects and serves them.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Keys = tuple[tuple[str, str], ...]
Elem = tuple[str, Keys]
Path = tuple[Elem, ...]
Leaf = tuple[Path, Any]

MAX_RATE_MBPS = 100_000_000  # 100 Tb/s: beyond any line the testbed models


class PathNotFound(LookupError):
    """The path names nothing this device has."""


class InvalidValue(ValueError):
    """The path is writable but the value has the wrong type or is out of range."""


def elem(name: str, /, **keys: str) -> Elem:
    return (name, tuple(sorted(keys.items())))


def render(path: Path) -> str:
    return "/" + "/".join(name + "".join(f"[{k}={v}]" for k, v in keys) for name, keys in path)


@dataclass(frozen=True)
class Change:
    """One checked configuration change: ``apply()`` puts it in force (at a window boundary). A
    change of a link's rate names the link; ``shared`` when the link's other end is on another host,
    which must change its side at the same virtual time."""

    device: str
    path: str
    value: Any
    apply: Callable[[], None]
    link: str = ""
    rate_bps: int = 0
    shared: bool = False


def uint_value(path: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(f"{path} takes an unsigned integer, not {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise InvalidValue(f"{path} must be between {lo} and {hi}, not {value}")
    return value


def bool_value(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(f"{path} takes a boolean, not {type(value).__name__} {value!r}")
    return value


def fraction_value(path: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidValue(f"{path} takes a number between 0 and 1, not {value!r}")
    return float(value)


D = TypeVar("D")


class DevicePaths(Generic[D]):
    """A kind's own paths, beyond the system and interface leaves every device has. The base has none."""

    writable: tuple[str, ...] = ()  # the patterns of its writable leaves, as an error lists them

    def leaves(self, device: D) -> list[Leaf]:
        """Its leaves with their current values, after the interfaces'."""
        return []

    def plan(self, device: D, path: Path, value: Any, local_links: Set[str],
             staged: dict[str, Any]) -> list[Change] | None:
        """The changes one update of a Set makes, or None when ``path`` is not one of its writable
        leaves. ``staged`` gathers, over one Set, what several updates change together (``finish``)."""
        return None

    def finish(self, device: D, staged: dict[str, Any]) -> list[Change]:
        """The changes of what the Set's updates staged together, after the last update."""
        return []


NO_PATHS: DevicePaths[Any] = DevicePaths()
