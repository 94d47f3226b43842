"""The receiving side of reliable connections: in-order acceptance per path (PSN space), ACK / NAK,
CNP on ECN marks, and the message bytes that arrived (each counted once, whatever path brought it)."""

from __future__ import annotations

from array import array
from typing import Any

from emulators.rdma.intervals import IntervalSet


class PathReceiver:
    """Expected PSN of one path of one QP."""

    __slots__ = ("epsn", "nak_psn", "early")

    def __init__(self) -> None:
        self.epsn = 0
        self.nak_psn = -1  # the expected PSN a NAK was sent for: one NAK per sequence error
        self.early = IntervalSet()  # selective repeat: PSNs accepted ahead of epsn


class FlowReceiver:
    """What one flow delivered here."""

    def __init__(self, flow: int, name: str) -> None:
        self.flow = flow
        self.name = name
        self.delivered = IntervalSet()
        self.payload_bytes = 0  # distinct message bytes delivered
        self.duplicate_bytes = 0
        self.frames = 0
        self.out_of_sequence_frames = 0
        self.duplicate_frames = 0
        self.corrupt_packets = 0
        self.ecn_frames = 0
        self.acks_sent = self.naks_sent = self.cnps_sent = 0
        self.last_cnp_ps = -(1 << 62)
        self.first_rx_ps = -1
        self.last_rx_ps = -1
        self.first_payload = 0
        self.latencies_ps = array("q")

    def deliver(self, offset: int, size: int, now: int) -> None:
        new = self.delivered.add(offset, offset + size)
        self.payload_bytes += new
        self.duplicate_bytes += size - new
        if new:
            if self.first_rx_ps < 0:
                self.first_rx_ps = now
                self.first_payload = new
            self.last_rx_ps = now

    def results(self) -> dict[str, Any]:
        span = self.last_rx_ps - self.first_rx_ps
        return {
            "rx_payload_bytes": self.payload_bytes, "rx_duplicate_bytes": self.duplicate_bytes,
            "rx_frames": self.frames, "out_of_sequence_frames": self.out_of_sequence_frames,
            "duplicate_frames": self.duplicate_frames, "corrupt_packets": self.corrupt_packets,
            "ecn_marked_frames": self.ecn_frames, "acks_sent": self.acks_sent, "naks_sent": self.naks_sent,
            "cnps_sent": self.cnps_sent, "first_rx_ps": self.first_rx_ps, "last_rx_ps": self.last_rx_ps,
            # bytes after the first delivery over the time to the last: exact for a steady stream
            "rx_goodput_bps": (self.payload_bytes - self.first_payload) * 8 * 10**12 // span if span > 0 else 0,
        }
