"""What every part of a GPU server acts through: the server's clock and its event queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Done = Callable[[], None]


class Clock(Protocol):
    """The GPU server itself, as its parts see it: every part schedules on the server's own event
    sequence, so the events keep one order whichever part schedules them."""

    @property
    def now(self) -> int: ...

    def at(self, time_ps: int, handler: Callable[[Any], None], arg: Any = None) -> None: ...


def call(done: Done) -> None:
    """An event handler that runs a continuation."""
    done()
