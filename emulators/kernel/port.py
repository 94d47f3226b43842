"""Ports: an egress queue per priority that serialises frames at the link's rate.

Frames are sent strictly by priority (7 highest); a paused priority holds its queue. The frame on
the wire finishes even if a pause arrives, as on real MACs.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

from emulators.kernel.link import Sender
from emulators.kernel.vtime import serialization_ps

if TYPE_CHECKING:
    from emulators.kernel.frame import Frame
    from emulators.kernel.link import Channel, Link

PRIORITIES = 8

PORT_COUNTERS = (
    "tx_frames", "tx_bytes", "rx_frames", "rx_bytes",
    "drop_frames", "drop_bytes",  # egress buffer full
    "down_drop_frames", "down_drop_bytes",  # sent while the link was down
    "lost_frames", "lost_bytes",  # on the wire when the link went down
    "rx_corrupt_packets", "rx_corrupt_bytes",  # hit by bit errors
    "queue_bytes", "queue_peak_bytes",
)


class PortOwner(Sender, Protocol):
    """The device a port belongs to, as the port sees it (emulators.kernel.device.Device)."""

    counters: dict[str, int]

    def on_frame(self, port: Port, frame: Frame) -> None: ...

    def on_frame_dropped(self, port: Port, frame: Frame) -> None: ...

    def on_frame_lost(self, port: Port, frame: Frame) -> None: ...

    def on_link_change(self, port: Port) -> None: ...

    def on_frame_sent(self, port: Port, frame: Frame) -> None: ...

    def on_port_idle(self, port: Port) -> None: ...


class Port:
    __slots__ = ("device", "name", "index", "buffer_bytes", "link", "channel", "queues", "waiting", "paused", "busy",
                 "wire_ps", *PORT_COUNTERS)

    def __init__(self, device: PortOwner, name: str, buffer_bytes: int, index: int) -> None:
        self.device = device
        self.name = name
        self.index = index  # its place among the device's ports: the port part of its address
        self.buffer_bytes = buffer_bytes
        self.link: Link | None = None
        self.channel: Channel | None = None
        self.queues: list[deque[Frame]] = [deque() for _ in range(PRIORITIES)]
        self.waiting = 0  # bit per priority whose queue holds frames
        self.paused = 0  # bit per priority
        self.busy = False
        self.wire_ps: dict[int, int] = {}  # frame bytes -> serialisation time at the link's rate
        self.tx_frames = self.tx_bytes = self.rx_frames = self.rx_bytes = 0
        self.drop_frames = self.drop_bytes = 0
        self.down_drop_frames = self.down_drop_bytes = 0
        self.lost_frames = self.lost_bytes = 0
        self.rx_corrupt_packets = self.rx_corrupt_bytes = 0
        self.queue_bytes = self.queue_peak_bytes = 0

    @property
    def rate_bps(self) -> int:
        return self.link.rate_bps if self.link is not None else 0

    # -- egress -----------------------------------------------------------------------------------
    def send(self, frame: Frame) -> bool:
        """Queue a frame for transmission. False (and counted) if the egress buffer is full."""
        nbytes = frame.nbytes
        queue_bytes = self.queue_bytes + nbytes
        if queue_bytes > self.buffer_bytes:
            self.drop_frames += 1
            self.drop_bytes += nbytes
            self.device.on_frame_dropped(self, frame)
            return False
        priority = frame.priority
        self.queues[priority].append(frame)
        self.waiting |= 1 << priority
        self.queue_bytes = queue_bytes
        if queue_bytes > self.queue_peak_bytes:
            self.queue_peak_bytes = queue_bytes
        if not self.busy:
            self._start_next()
        return True

    def _start_next(self) -> None:
        """Put the next frame on the wire: the highest priority that has frames and is not paused."""
        while True:
            sendable = self.waiting & ~self.paused  # bit masks, not a scan of 8 queues per frame
            if not sendable:
                self.busy = False
                self.device.on_port_idle(self)
                return
            priority = sendable.bit_length() - 1
            queue = self.queues[priority]
            frame = queue.popleft()
            if not queue:
                self.waiting &= ~(1 << priority)
            nbytes = frame.nbytes
            self.queue_bytes -= nbytes
            link = self.link
            if link is None or not link.up:
                self.down_drop_frames += 1
                self.down_drop_bytes += nbytes
                self.device.on_frame_dropped(self, frame)
                continue
            frame.epoch = link.epoch
            self.busy = True
            wire_ps = self.wire_ps.get(nbytes)
            if wire_ps is None:  # big-integer division once per frame size, not once per frame
                wire_ps = self.wire_ps[nbytes] = serialization_ps(nbytes, link.rate_bps)
            device = self.device
            device.at(device.engine.now + wire_ps, self._tx_done, frame)
            return

    def _tx_done(self, frame: Frame) -> None:
        self.tx_frames += 1
        self.tx_bytes += frame.nbytes
        assert self.channel is not None
        self.channel.transmit(frame, self.device)
        self.device.on_frame_sent(self, frame)
        self._start_next()

    def pause(self, priority: int) -> None:
        self.paused |= 1 << priority

    def resume(self, priority: int) -> None:
        self.paused &= ~(1 << priority)
        if not self.busy:
            self._start_next()

    def on_link_change(self) -> None:
        self.wire_ps.clear()  # the rate may have changed
        if not self.busy:
            self._start_next()  # a link back up drains what queued meanwhile (or flushes it if down)
        self.device.on_link_change(self)

    # -- ingress ----------------------------------------------------------------------------------
    def receive(self, frame: Frame) -> None:
        link = self.link
        assert link is not None
        if frame.epoch != link.epoch or not link.up:
            self.lost_frames += 1
            self.lost_bytes += frame.nbytes
            self.device.on_frame_lost(self, frame)
            return
        self.rx_frames += 1
        self.rx_bytes += frame.nbytes
        if frame.corrupt_packets:
            self.rx_corrupt_packets += frame.corrupt_packets
            self.rx_corrupt_bytes += frame.corrupt_bytes
        self.device.on_frame(self, frame)

    def counters(self) -> dict[str, int]:
        return {c: getattr(self, c) for c in PORT_COUNTERS}

    def counter_values(self) -> list[int]:
        return [getattr(self, c) for c in PORT_COUNTERS]
