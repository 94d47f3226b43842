"""Links and their two directions (channels).

A link joins two ports. It has a rate, a length (so a propagation delay), a bit error rate and an
up/down state; each may change at any virtual time. Each direction draws its bit errors from its
own seeded generator, owned by the sending side, so draws happen in the same order in every
partition.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from emulators.kernel.rng import stream_for
from emulators.model.scenario import FIBER_DELAY_PS_PER_M, propagation_ps

if TYPE_CHECKING:
    from emulators.kernel.engine import Engine
    from emulators.kernel.frame import Frame

# (arrival_ps, origin_device_id, origin_seq, dst_device_id, dst_port_name, frame)
Outgoing = tuple[int, int, int, int, str, "Frame"]


class LinkEnd(Protocol):
    """A port as its link sees it (emulators.kernel.port.Port)."""

    def on_link_change(self) -> None: ...

    def receive(self, frame: Frame) -> None: ...


class Sender(Protocol):
    """The device a channel sends for (emulators.kernel.device.Device): an arrival is its event."""

    id: int
    engine: Engine

    def at(self, time_ps: int, handler: Callable[[Any], None], arg: Any = None) -> None: ...

    def next_seq(self) -> int: ...


class Link:
    __slots__ = ("name", "rate_bps", "length_mm", "delay_ps_per_m", "propagation_ps", "ber", "up",
                 "epoch", "ports", "fec", "_packet_error_cache")

    def __init__(self, name: str, rate_bps: int, length_mm: int, ber: float = 0.0,
                 delay_ps_per_m: int = FIBER_DELAY_PS_PER_M) -> None:
        self.name = name
        self.rate_bps = rate_bps
        self.delay_ps_per_m = delay_ps_per_m
        self.length_mm = length_mm
        self.propagation_ps = propagation_ps(length_mm, delay_ps_per_m)
        self.ber = ber
        self.up = True
        self.epoch = 0  # bumped on every down transition: frames started in an older epoch are lost
        self.ports: list[LinkEnd] = []  # local endpoints only (one or two)
        self.fec: Any = None  # forward error correction (e.g. OLink's): what it lets through is what counts
        self._packet_error_cache: dict[int, float] = {}

    # -- changes (faults, protection switching, resizing) ----------------------------------------
    def set_state(self, up: bool) -> None:
        if up == self.up:
            return
        self.up = up
        if not up:
            self.epoch += 1
        for port in self.ports:
            port.on_link_change()

    def set_rate(self, rate_bps: int) -> None:
        self.rate_bps = rate_bps
        for port in self.ports:
            port.on_link_change()

    def set_ber(self, ber: float) -> None:
        self.ber = ber
        self._packet_error_cache.clear()
        for port in self.ports:
            port.on_link_change()

    def set_length(self, length_mm: int) -> None:
        self.length_mm = length_mm
        self.propagation_ps = propagation_ps(length_mm, self.delay_ps_per_m)
        for port in self.ports:
            port.on_link_change()

    def packet_error_probability(self, packet_bytes: int) -> float:
        """P(a packet is corrupted): at least one bit error, 1 - (1 - BER)^bits, computed without
        cancellation; on a link with FEC, an error the code cannot correct."""
        p = self._packet_error_cache.get(packet_bytes)
        if p is None:
            if self.fec is not None:
                p = self.fec.packet_error_probability(self.ber, packet_bytes)
            else:
                p = -math.expm1(packet_bytes * 8 * math.log1p(-self.ber))
            self._packet_error_cache[packet_bytes] = p
        return p


class Channel:
    """One direction of a link, from a local sending port to a local or remote receiving port."""

    __slots__ = ("link", "sender", "rng", "local_dst", "remote_device_id", "remote_port", "outbox")

    def __init__(self, link: Link, sender: LinkEnd, seed: int, direction: str) -> None:
        self.link = link
        self.sender = sender
        self.rng = stream_for(seed, f"link:{link.name}:{direction}")
        self.local_dst: LinkEnd | None = None
        self.remote_device_id = -1
        self.remote_port = ""
        self.outbox: list[Any] | None = None  # the host's list for the peer host owning the far end

    def transmit(self, frame: Frame, device: Sender) -> None:
        """The last bit left the sender now: apply bit errors and schedule the arrival."""
        link = self.link
        if link.ber > 0.0:
            self._corrupt(frame)
        arrival = device.engine.now + link.propagation_ps
        if self.local_dst is not None:
            device.at(arrival, self.local_dst.receive, frame)
        else:
            assert self.outbox is not None, f"link {link.name} has no far end"
            self.outbox.append((arrival, device.id, device.next_seq(), self.remote_device_id, self.remote_port, frame))

    def _corrupt(self, frame: Frame) -> None:
        """Mark the packets hit by bit errors: where the first one is (go-back-N restarts there) and
        how many there are. The first is drawn geometrically, the rest binomially: exact and cheap."""
        link = self.link
        rng = self.rng
        full = frame.packets - 1
        first = -1
        bad = 0
        if full:
            p_full = link.packet_error_probability(frame.mtu)
            good_run = int(rng.geometric(p_full)) - 1 if p_full > 0.0 else full
            if good_run < full:
                first = good_run
                bad = 1 + int(rng.binomial(full - good_run - 1, p_full))
        last_bad = rng.random() < link.packet_error_probability(frame.last_packet_bytes)
        if last_bad:
            if first < 0:
                first = full
            bad += 1
        if bad:
            frame.corrupt_packets += bad
            frame.corrupt_bytes += (bad - 1) * frame.mtu + (frame.last_packet_bytes if last_bad else frame.mtu)
            if frame.first_corrupt < 0 or first < frame.first_corrupt:
                frame.first_corrupt = first
