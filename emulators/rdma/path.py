"""A QP's path: one plane of a reliable connection with its own PSN space, and the segments (runs of
packets) it has sent and not yet had acknowledged."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emulators.kernel.port import Port


class Segment:
    """Packets [psn, psn + packets) carrying message bytes [offset, offset + payload)."""

    __slots__ = ("psn", "packets", "offset", "payload", "resets")

    def __init__(self, psn: int, packets: int, offset: int, payload: int, resets: bool = False) -> None:
        self.psn = psn
        self.packets = packets
        self.offset = offset
        self.payload = payload
        self.resets = resets  # first segment on a path that came back: the receiver restarts its PSN here


class Path:
    """One plane of a QP: a local port, the far NIC's port on the same plane, a PSN space."""

    __slots__ = ("index", "port", "src", "dst", "entropy", "up", "psn_next", "una", "unacked", "cursor",
                 "retransmit", "deadline", "timer_armed", "timer_at", "retries", "resync", "arm_ps", "progress_ps",
                 "probed", "backed_off", "stalled_ps", "adp_exponent", "adp_range", "adp_used")

    def __init__(self, index: int, port: Port, src: int, dst: int, entropy: int) -> None:
        self.index = index
        self.port = port
        self.src = src
        self.dst = dst
        self.entropy = entropy  # UDP source port: what ECMP hashes
        self.up = True
        self.psn_next = 0
        self.una = 0  # oldest unacknowledged PSN
        self.unacked: deque[Segment] = deque()
        self.cursor = 0  # index in unacked of the next segment to send: < len(unacked) after go-back-N
        self.retransmit: deque[Segment] = deque()  # selective repeat: just the missing runs
        self.deadline = 0
        self.timer_armed = False
        self.timer_at = 0  # when the armed timer wakes
        self.retries = 0
        self.resync = False  # the next new segment carries a PSN reset
        self.arm_ps = 0  # the retransmit timer in force (the retry policy sets it)
        self.progress_ps = 0  # when the timer last restarted: the last acknowledged progress, or the first send
        self.probed = False  # a corruption probe went out since the last progress
        self.backed_off = False  # the timer moved on from its start since the last progress
        self.stalled_ps = 0  # the last progress before the timeouts in a row now under way
        self.adp_exponent = self.adp_range = self.adp_used = 0  # adaptive retransmission: where in the profile

    @property
    def sent_all(self) -> bool:
        return self.cursor >= len(self.unacked) and not self.retransmit
