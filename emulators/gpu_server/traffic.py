"""What a server's ranks send, by parallelism dimension and by the class of link it crosses."""

from __future__ import annotations

from emulators.gpu_server.rank import Rank
from emulators.model.job import DIMENSIONS

SCALE_UP, FABRIC, WAN = "scale_up", "fabric", "wan"  # link classes traffic is accounted to
LINK_CLASSES = (SCALE_UP, FABRIC, WAN)


def _zeros() -> dict[str, dict[str, int]]:
    return {dim: dict.fromkeys(LINK_CLASSES, 0) for dim in DIMENSIONS}


class Traffic:
    def __init__(self, timeline_iteration: int) -> None:
        self.timeline_iteration = timeline_iteration
        self.bytes = _zeros()  # the whole run
        self.iteration_bytes = _zeros()  # the iteration whose timeline is kept

    def account(self, rank: Rank, dim: str, link_class: str, nbytes: int) -> None:
        """Count bytes ``rank`` sends: over the run, and in the iteration whose timeline is kept."""
        self.bytes[dim][link_class] += nbytes
        if rank.iteration == self.timeline_iteration:
            self.iteration_bytes[dim][link_class] += nbytes

    def restart_from(self, iteration: int) -> None:
        """The job goes back to ``iteration``: if it runs the kept one again, count that afresh."""
        if iteration <= self.timeline_iteration:
            self.iteration_bytes = _zeros()
