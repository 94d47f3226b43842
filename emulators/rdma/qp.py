"""The sending side of a reliable connection (RC queue pair): a stream of RDMA writes, cut into chunks,
sent over one path per plane, each path with its own PSN space, go-back-N (or selective repeat)
recovery, a retransmit timer (:mod:`emulators.rdma.retry`), and DCQCN pacing shared by the paths.

A QP carries one message (a tester's flow, the idealised job transport) and completes with it, or is
persistent (the NCCL transport): it lives as long as its connection and each ``post`` appends a work
request whose callback runs once every byte of it has been acknowledged. A frame never spans two
work requests, so a work request's completion is exact.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from emulators.kernel.frame import DATA, Frame
from emulators.kernel.vtime import NEVER, serialization_ps
from emulators.rdma.dcqcn import RateControl
from emulators.rdma.intervals import IntervalSet
from emulators.rdma.path import Path, Segment
from emulators.rdma.retry import RetryPolicy
from emulators.rdma.settings import GO_BACK_N, WINDOW_BDPS, NicSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.random import Generator


IDLE, ACTIVE, COMPLETE, ERROR = "idle", "active", "complete", "error"


class QpNic(Protocol):
    """What a QP asks of the NIC that owns it (emulators.rdma.nic.RdmaNic)."""

    name: str
    settings: NicSettings

    def retire(self, qp: QueuePair) -> None: ...
    def schedule(self, delay_ps: int, handler: Callable[[Any], None], arg: Any) -> None: ...
    def pump_qp(self, qp: QueuePair) -> None: ...
    def count_sent(self, payload: int, retransmission: bool) -> None: ...
    def arm_timer(self, qp: QueuePair, path: Path) -> None: ...
    def completed(self, qp: QueuePair) -> None: ...


class QueuePair:
    def __init__(self, nic: QpNic, flow: int, name: str, message_bytes: int, start_ps: int, rate_cap_bps: int,
                 priority: int, paths: list[Path], rtt_ps: int, hops: int, *, timeout_ps: int = 0,
                 retry_cnt: int = -1, rng: Generator | None = None, persistent: bool = False,
                 windowed: bool = True) -> None:
        self.nic = nic
        self.settings: NicSettings = nic.settings
        self.flow = flow
        self.name = name
        self.message_bytes = message_bytes  # persistent: every byte posted so far
        self.persistent = persistent
        # work-request ends: a frame stops at the next one; persistent QPs complete each in turn
        self.wr_bounds: deque[int] = deque([message_bytes] if message_bytes else [])
        self.wr_done: deque[tuple[int, Callable[[], None]]] = deque()
        self.acked_ranges = IntervalSet() if persistent and len(paths) > 1 else None
        self.windowed = windowed  # False: no in-flight limit of the NIC's own (the user's buffers bound it)
        self.policy = RetryPolicy(timeout_ps or self.settings.rto_ps,
                                  self.settings.retries if retry_cnt < 0 else retry_cnt, self.settings, rng)
        self.probing = False  # told of a BER on the path, with BER co-operation on: losses are probed for
        self.slow_restarts = self.probes = 0
        self.start_ps = start_ps
        self.rate_cap_bps = rate_cap_bps
        self.priority = priority
        self.paths = paths
        self.state = IDLE
        self.next_offset = 0  # first byte never sent
        self.returned: deque[tuple[int, int]] = deque()  # (offset, bytes) taken back from a failed path
        self.acked_bytes = 0
        self.inflight_bytes = 0
        self.next_send_ps = 0
        self.rtt_ps = rtt_ps  # the path's round trip, serialisation aside: what the window is sized for
        self.hops = hops  # links a chunk crosses, each storing and forwarding it whole
        self.base_rtt_ps = rtt_ps
        self.path_devices: frozenset[int] = frozenset()  # devices on the path, by id (for path info)
        self.wan_reference: dict[int, int] = {}  # gateway id -> the WAN round trip it first reported
        self.path_infos = self.protection_switches_told = 0
        self.path_ber = 0.0
        self.rate = RateControl(self.settings, self.line_bps(), nic.schedule)
        self.window_bytes = self._window()
        self.completion_ps = -1
        self.error: dict[str, Any] | None = None
        self.tx_frames = self.tx_packets = self.tx_payload_bytes = self.tx_wire_bytes = 0
        self.retx_frames = self.retx_packets = self.retx_bytes = 0
        self.naks_received = self.timeouts = self.cnps_received = self.failovers = 0
        self.dropped_frames = 0
        for path in paths:
            self.policy.start(path)

    # -- sizing -----------------------------------------------------------------------------------
    def line_bps(self) -> int:
        return sum(p.port.rate_bps for p in self.paths if p.up) or max(p.port.rate_bps for p in self.paths)

    def _window(self) -> int:
        if not self.windowed:
            return NEVER
        if self.settings.window:
            return self.settings.window
        # a bandwidth-delay product: what propagates at line rate in a round trip, plus the chunk
        # each hop holds while it serialises it (the same bytes at any rate)
        in_flight = self.line_bps() * self.rtt_ps // (8 * 10**12) + self.hops * self.settings.wire_bytes(
            self.settings.chunk)
        return max(self.settings.chunk, WINDOW_BDPS * in_flight)

    def set_rtt(self, rtt_ps: int) -> None:
        """The path's round trip (propagation and latency) as another device reported it: resize the
        in-flight window."""
        self.rtt_ps = rtt_ps
        self.window_bytes = self._window()

    def told(self, info: dict[str, int], now: int) -> None:
        """A gateway on the path reported its WAN part. With the co-operation switches on: follow
        changes of its round trip (distance), treat losses on a path with a BER as corruption (ber),
        and retransmit at once after a protection switch (protection)."""
        via = info["via"]
        cooperation = self.settings.cooperation
        self.path_infos += 1
        switched = info.get("switch", 0)
        self.protection_switches_told += switched
        self.path_ber = info.get("ber_e18", 0) / 1e18
        self.probing = cooperation.ber and self.path_ber > 0
        if "rtt_ps" in info:
            reference = self.wan_reference.setdefault(via, info["rtt_ps"])
            if cooperation.distance:
                self.windowed = True  # the NIC now knows what the path holds
                self.set_rtt(max(1, self.base_rtt_ps + info["rtt_ps"] - reference))
        if switched and cooperation.protection and self.state == ACTIVE:
            self.retransmit_now(now)

    def retransmit_now(self, now: int) -> None:
        """Go back to the oldest unacknowledged packet on every path, as if its timer had fired, but
        without counting a retry: the network said the packets in flight were lost."""
        for path in self.paths:
            if path.unacked:
                path.cursor = 0
                path.retransmit.clear()
                self._restart_timer(path, now)

    def line_changed(self) -> None:
        self.rate.set_line_rate(self.line_bps())
        self.window_bytes = self._window()

    # -- sending ----------------------------------------------------------------------------------
    def post(self, nbytes: int, done: Callable[[], None]) -> None:
        """A persistent QP's next RDMA write of ``nbytes``; ``done`` once all of it is acknowledged."""
        end = self.message_bytes + nbytes
        self.message_bytes = end
        self.wr_bounds.append(end)
        self.wr_done.append((end, done))
        if self.state == ACTIVE:
            self.nic.pump_qp(self)

    def has_data(self, path: Path) -> bool:
        return self.state == ACTIVE and path.up and (
            not path.sent_all or bool(self.returned) or self.next_offset < self.message_bytes)

    def next_frame(self, path: Path, now: int) -> Frame | None:
        """The frame this path sends now, or None if the window is full."""
        retransmission = True
        if path.retransmit:
            segment = path.retransmit.popleft()
        elif path.cursor < len(path.unacked):
            segment = path.unacked[path.cursor]
            path.cursor += 1
        else:
            fresh = self._new_segment(path)
            if fresh is None:
                return None
            segment = fresh
            retransmission = False
        settings = self.settings
        wire = segment.payload + segment.packets * (settings.wire_mtu - settings.mtu)
        frame = Frame(DATA, self.flow, path.src, path.dst, wire, settings.wire_mtu, seq=segment.psn,
                      priority=self.priority, created_ps=now)
        frame.offset = segment.offset
        frame.entropy = path.entropy
        if segment.resets:
            frame.fields = {"psn_reset": 1}
        self.tx_frames += 1
        self.tx_packets += segment.packets
        self.tx_payload_bytes += segment.payload
        self.tx_wire_bytes += wire
        if retransmission:
            self.retx_frames += 1
            self.retx_packets += segment.packets
            self.retx_bytes += segment.payload
        self.nic.count_sent(segment.payload, retransmission)
        self.rate.on_sent(wire)
        rate = min(self.rate.rate_bps, self.rate_cap_bps) if self.rate_cap_bps else self.rate.rate_bps
        if rate < self.rate.line_bps:
            self.next_send_ps = now + serialization_ps(wire, rate)
        if not retransmission and len(path.unacked) == 1:
            self._restart_timer(path, now)  # the first packet in flight starts the timer afresh
        if not path.timer_armed:
            self._restart_timer(path, now)
            self.nic.arm_timer(self, path)
        return frame

    def _restart_timer(self, path: Path, now: int) -> None:
        path.progress_ps = now
        path.deadline = now + (self.probe_ps() if self.probing and not path.probed else path.arm_ps)
        if path.timer_armed and path.deadline < path.timer_at:  # a probe comes due before the armed timer
            self.nic.arm_timer(self, path)

    def probe_ps(self) -> int:
        """How long a probing QP waits for an acknowledgement before it retransmits: twice the round
        trip (RFC 8985's probe timeout, 2 x SRTT) plus the time to send what is in flight."""
        return 2 * self.rtt_ps + serialization_ps(self.inflight_bytes, max(1, self.rate.line_bps))

    def _new_segment(self, path: Path) -> Segment | None:
        chunk = self.settings.chunk
        if self.returned:
            offset, size = self.returned[0]
            payload = min(chunk, size)
        elif self.next_offset < self.message_bytes:
            offset = self.next_offset
            payload = min(chunk, self.wr_bounds[0] - offset)  # never past the work request's end
        else:
            return None
        if self.inflight_bytes and self.inflight_bytes + payload > self.window_bytes:
            return None
        if self.returned:
            if payload == size:
                self.returned.popleft()
            else:
                self.returned[0] = (offset + payload, size - payload)
        else:
            self.next_offset += payload
            if self.next_offset == self.wr_bounds[0]:
                self.wr_bounds.popleft()
        packets = self.settings.packets(payload)
        segment = Segment(path.psn_next, packets, offset, payload, path.resync)
        path.resync = False
        path.psn_next += packets
        path.unacked.append(segment)
        path.cursor = len(path.unacked)
        self.inflight_bytes += payload
        return segment

    # -- feedback ---------------------------------------------------------------------------------
    def on_ack(self, path: Path, psn: int, now: int) -> None:
        if psn > path.una:
            self._acknowledge(path, min(psn, path.psn_next), now)

    def on_nak(self, path: Path, psn: int, missing: int, now: int) -> str | None:
        """A NAK sequence error: acknowledge what came before it and recover; why the QP errors, if
        this retransmission exceeds the excessive-retransmission limit."""
        self.naks_received += 1
        if psn > path.una:
            self._acknowledge(path, min(psn, path.psn_next), now)
        if self.state != ACTIVE:
            return None
        reason = self.policy.retransmitted(now)
        if self.settings.recovery == GO_BACK_N or psn < path.una:
            path.cursor = 0  # go back N: resend everything from the lost packet
            path.retransmit.clear()
        else:
            path.retransmit.extend(self._pieces(path, psn, psn + max(1, missing)))
        return reason

    def _pieces(self, path: Path, first: int, last: int) -> list[Segment]:
        """Selective repeat: the parts of unacked segments that hold PSNs [first, last)."""
        mtu = self.settings.mtu
        pieces = []
        for seg in path.unacked:
            lo, hi = max(first, seg.psn), min(last, seg.psn + seg.packets)
            if lo >= hi:
                if seg.psn >= last:
                    break
                continue
            skip = lo - seg.psn
            payload = self.settings.payload_of(skip, hi - seg.psn, seg.payload)
            pieces.append(Segment(lo, hi - lo, seg.offset + skip * mtu, payload, seg.resets and skip == 0))
        return pieces

    def _acknowledge(self, path: Path, psn: int, now: int) -> None:
        mtu = self.settings.mtu
        acked = 0
        unacked = path.unacked
        ranges = self.acked_ranges
        while unacked and unacked[0].psn + unacked[0].packets <= psn:
            segment = unacked.popleft()
            acked += segment.payload
            if ranges is not None:
                ranges.add(segment.offset, segment.offset + segment.payload)
            path.cursor = max(0, path.cursor - 1)
        if unacked and unacked[0].psn < psn:  # a segment acknowledged in part: keep its tail
            head = unacked[0]
            done = psn - head.psn
            acked += done * mtu
            if ranges is not None:
                ranges.add(head.offset, head.offset + done * mtu)
            head.psn = psn
            head.packets -= done
            head.offset += done * mtu
            head.payload -= done * mtu
        while path.retransmit and path.retransmit[0].psn + path.retransmit[0].packets <= psn:
            path.retransmit.popleft()
        path.una = psn
        path.retries = 0
        if path.backed_off or path.probed:  # the timer starts over from its first value
            path.backed_off = path.probed = False
            self.policy.start(path)
        self._restart_timer(path, now)
        self.acked_bytes += acked
        self.inflight_bytes -= acked
        if self.persistent:
            self._complete_work()
        elif self.acked_bytes >= self.message_bytes and self.state == ACTIVE:
            self.state = COMPLETE
            self.completion_ps = now
            self.nic.completed(self)

    def _complete_work(self) -> None:
        """Run the callbacks of work requests now wholly acknowledged, in order."""
        ranges = self.acked_ranges
        done = self.acked_bytes if ranges is None else ranges.prefix()  # one path: acknowledged in order
        completions = self.wr_done
        while completions and completions[0][0] <= done:
            completions.popleft()[1]()

    def on_cnp(self, now: int) -> None:
        self.cnps_received += 1
        if self.settings.dcqcn:
            self.rate.on_cnp(now)

    def on_timer(self, path: Path, now: int) -> tuple[bool, str | None]:
        """The retransmit timer expired without progress: retry from the oldest unacked packet.
        (True, None) for a corruption probe, (False, None) for a timeout, (_, reason) when the QP is
        finished. A QP that was told its path has a BER probes once (no retry counted, no slow
        restart) before its real timeout runs out."""
        if self.probing and not path.probed:
            path.probed = True
            self.probes += 1
            path.cursor = 0
            path.retransmit.clear()
            path.deadline = path.progress_ps + path.arm_ps  # the Local ACK Timeout keeps running
            return True, self.policy.retransmitted(now)
        self.timeouts += 1
        if not path.backed_off:
            path.stalled_ps = path.progress_ps
        path.backed_off = True
        reason = self.policy.expired(path)
        if reason is None:
            reason = self.policy.retransmitted(now)
        if reason is not None:
            return False, reason
        path.cursor = 0
        path.retransmit.clear()
        path.probed = True  # the probe of this episode is spent
        path.progress_ps = now
        path.deadline = now + path.arm_ps
        rate = self.settings.slow_restart_rate_bps
        if rate and not self.probing:  # an unexplained loss: ConnectX restarts slow and climbs
            self.slow_restarts += 1
            self.rate.restart_at(min(rate, self.rate.line_bps))
            self.next_send_ps = now
        return False, None

    # -- planes -----------------------------------------------------------------------------------
    def fail_over(self, path: Path) -> None:
        """Move what ``path`` had in flight to the surviving paths: the message continues there."""
        for seg in path.unacked:
            self.returned.append((seg.offset, seg.payload))
            self.inflight_bytes -= seg.payload
        path.unacked.clear()
        path.retransmit.clear()
        path.cursor = 0
        path.una = path.psn_next
        path.up = False
        path.resync = True
        path.retries = 0
        path.backed_off = path.probed = False
        self.policy.start(path)
        self.failovers += 1
        self.line_changed()

    def restore(self, path: Path) -> None:
        path.up = True
        self.line_changed()

    def fail(self, now: int, reason: str) -> None:
        self.state = ERROR
        self.error = {"at_ps": now, "reason": reason}
        for path in self.paths:
            path.unacked.clear()
            path.retransmit.clear()
            path.cursor = 0

    # -- results ----------------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        elapsed = self.completion_ps - self.start_ps if self.completion_ps >= 0 else 0
        return {
            "transport": "rdma", "state": self.state, "message_bytes": self.message_bytes,
            "acked_bytes": self.acked_bytes,
            "start_ps": self.start_ps, "completion_ps": self.completion_ps, "fct_ps": elapsed,
            "goodput_bps": self.message_bytes * 8 * 10**12 // elapsed if elapsed > 0 else 0,
            "tx_frames": self.tx_frames, "tx_packets": self.tx_packets, "tx_payload_bytes": self.tx_payload_bytes,
            "tx_wire_bytes": self.tx_wire_bytes, "retx_frames": self.retx_frames, "retx_packets": self.retx_packets,
            "retx_bytes": self.retx_bytes, "naks_received": self.naks_received, "timeouts": self.timeouts,
            "cnps_received": self.cnps_received, "rate_cuts": self.rate.cuts,
            "first_rate_cut_ps": self.rate.first_cut_ps, "min_rate_bps": self.rate.min_seen_bps,
            "rate_bps": self.rate.rate_bps, "window_bytes": self.window_bytes, "failovers": self.failovers,
            "tx_dropped_frames": self.dropped_frames, "error": self.error,
            "rtt_ps": self.rtt_ps, "path_infos": self.path_infos,
            "protection_switches_told": self.protection_switches_told, "path_ber": self.path_ber,
            "probes": self.probes, "slow_restarts": self.slow_restarts,
        }
