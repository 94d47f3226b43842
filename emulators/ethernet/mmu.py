"""A switch's memory management unit: one shared packet buffer, accounted per ingress port and
priority (for PFC) and per egress queue (for lossy admission and ECN).

Lossless priorities are protected by PFC: when a (port, priority) holds ``xoff`` bytes the switch
sends XOFF upstream and admits what is still in flight into that pair's headroom; at ``xon`` or
below it sends XON. Lossy priorities are admitted by a dynamic threshold: an egress queue may grow
to ``alpha`` x the free shared buffer. ECN marks data frames at egress enqueue on a RED-like ramp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from emulators.kernel.frame import CONTROL_FRAME_BYTES, Frame
from emulators.kernel.port import PRIORITIES
from emulators.kernel.vtime import PS_PER_S

if TYPE_CHECKING:
    import numpy as np

    from emulators.kernel.port import Port

# A frame the NIC emits (its default chunk); the unit of the default PFC headroom.
HEADROOM_FRAME_BYTES = 64 * 1024


def default_headroom(rate_bps: int, propagation_ps: int, frame_bytes: int = HEADROOM_FRAME_BYTES) -> int:
    """Bytes that may still arrive on a (port, priority) after it reaches XOFF.

    The XOFF may wait behind one frame on our own egress, then takes its serialisation and one
    propagation to reach the upstream port, which finishes the frame it is sending; everything sent
    meanwhile needs another propagation to land. Bytes arriving in that window are at most
    rate x (2 x propagation) + 2 frames + the XOFF itself, plus the part of the frame that crossed
    XOFF: 2 x rate x delay + 3 frames + 2 control frames (the second one is slack for rounding).
    ``frame_bytes`` is the largest frame in the scenario (the largest NIC chunk).
    """
    in_flight = 2 * rate_bps * propagation_ps // (8 * PS_PER_S)
    return in_flight + 3 * frame_bytes + 2 * CONTROL_FRAME_BYTES


class EgressQueue:
    """What a switch holds for one egress: admitted bytes (``held``, from ingress until the last bit
    leaves) and bytes handed to the port (``queued``, waiting or on the wire)."""

    __slots__ = ("held", "queued")

    def __init__(self) -> None:
        self.held = 0
        self.queued = 0


class SharedBuffer:
    def __init__(self, size: int, ports: int, lossless: frozenset[int], xoff: int, xon: int,
                 headroom: list[int], alpha: float, counters: dict[str, int],
                 send_pfc: Callable[[int, int, bool], None]) -> None:
        self.size = size
        self.used = 0
        self.lossless = lossless  # empty when PFC is off: every priority is then lossy
        self.xoff = xoff
        self.xon = xon
        self.headroom = headroom  # per ingress port
        self.alpha = alpha
        self.counters = counters
        self.send_pfc = send_pfc  # (ingress port index, priority, pause)
        self.ingress = [[0] * PRIORITIES for _ in range(ports)]
        self.xoff_sent = [[False] * PRIORITIES for _ in range(ports)]
        self.egress = [[EgressQueue() for _ in range(PRIORITIES)] for _ in range(ports)]

    def admit(self, frame: Frame, in_port: int, queue: EgressQueue, egress: Port | None) -> bool:
        """Take ``frame`` into the buffer, charged to ``in_port`` and ``queue``, or drop it (counted).
        On success ``frame.ingress`` remembers the charge until ``release``."""
        nbytes = frame.nbytes
        prio = frame.priority
        counters = self.counters
        held = self.ingress[in_port][prio]
        lossless = prio in self.lossless
        if lossless:
            if self.used + nbytes > self.size:
                counters["drop_buffer_frames"] += 1
                counters["drop_buffer_bytes"] += nbytes
                return False
            if self.xoff_sent[in_port][prio] and held + nbytes > self.xoff + self.headroom[in_port]:
                counters["drop_headroom_frames"] += 1
                counters["drop_headroom_bytes"] += nbytes
                return False
        else:
            free = self.size - self.used
            if nbytes > free or queue.held + nbytes > self.alpha * free:
                counters["drop_lossy_frames"] += 1
                counters["drop_lossy_bytes"] += nbytes
                return False
        held += nbytes
        self.ingress[in_port][prio] = held
        queue.held += nbytes
        self.used += nbytes
        counters["buffer_bytes"] = self.used
        if self.used > counters["buffer_peak_bytes"]:
            counters["buffer_peak_bytes"] = self.used
        if held > counters["ingress_peak_bytes"]:
            counters["ingress_peak_bytes"] = held
        frame.ingress = (in_port, queue, egress)
        if lossless and held >= self.xoff and not self.xoff_sent[in_port][prio]:
            self.xoff_sent[in_port][prio] = True
            self.send_pfc(in_port, prio, True)
        return True

    def release(self, frame: Frame) -> None:
        """The frame left (or died): give its bytes back; XON when its ingress pair drained."""
        in_port, queue, _ = frame.ingress
        frame.ingress = None
        nbytes = frame.nbytes
        prio = frame.priority
        held = self.ingress[in_port][prio] - nbytes
        self.ingress[in_port][prio] = held
        queue.held -= nbytes
        self.used -= nbytes
        self.counters["buffer_bytes"] = self.used
        if held <= self.xon and self.xoff_sent[in_port][prio]:
            self.xoff_sent[in_port][prio] = False
            self.send_pfc(in_port, prio, False)

    def forget_pauses(self, in_port: int) -> None:
        """The link on ``in_port`` went down: the peer forgot our XOFF, so we re-send it if needed."""
        self.xoff_sent[in_port] = [False] * PRIORITIES


class EcnMarker:
    """Marks with probability 0 at or below kmin, pmax x (q - kmin)/(kmax - kmin) between, 1 from kmax."""

    def __init__(self, kmin: int, kmax: int, pmax: float, rng: np.random.Generator) -> None:
        self.kmin = kmin
        self.kmax = kmax
        self.pmax = pmax
        self.rng = rng

    def mark(self, queued: int) -> bool:
        if queued <= self.kmin:
            return False
        if queued >= self.kmax:
            return True
        return bool(self.rng.random() < self.pmax * (queued - self.kmin) / (self.kmax - self.kmin))
