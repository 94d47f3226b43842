"""An RDMA NIC (RoCEv2 reliable connection) on one or two ports of its owning device.

The NIC feeds its ports itself: whenever a port has nothing to send it picks the next queue pair
(round robin) whose path on that port has data, window and pacing credit, and hands the port one
chunk. So a PFC pause holds exactly one chunk in the port, and DCQCN pacing, the in-flight window
and recovery decide everything else. Feedback (ACK, NAK, CNP) rides at CONTROL_PRIORITY.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from emulators.kernel.frame import (
    ACK,
    CNP,
    CONTROL_FRAME_BYTES,
    CONTROL_PRIORITY,
    DATA,
    NAK,
    PATH_INFO,
    PFC,
    Frame,
    device_of,
    honour_pfc,
)
from emulators.kernel.port import Port
from emulators.kernel.rng import stream_for
from emulators.kernel.vtime import NEVER
from emulators.model.scenario import FlowSpec
from emulators.rdma.path import Path
from emulators.rdma.qp import ACTIVE, IDLE, QueuePair
from emulators.rdma.receiver import FlowReceiver, PathReceiver
from emulators.rdma.retry import format_ps
from emulators.rdma.settings import FALLBACK_RTT_PS, FIRST_EPHEMERAL_PORT, GO_BACK_N, PACKET_OVERHEAD_BYTES, NicSettings


class NicOwner(Protocol):
    """A device that owns NICs: its clock and counters, and hooks for its queue pairs' fate."""

    counters: dict[str, int]

    @property
    def now(self) -> int: ...

    def at(self, time_ps: int, handler: Callable[[Any], None], arg: Any = None) -> None: ...

    def on_qp_error(self, qp: QueuePair) -> None: ...

    def on_qp_complete(self, qp: QueuePair) -> None: ...

    def on_delivered(self, receiver: FlowReceiver) -> None: ...

    def accepts(self, flow: int) -> bool: ...


DATA_PRIORITIES = (1 << CONTROL_PRIORITY) - 1  # bit mask of the priorities below control frames

NIC_COUNTERS = ("rdma_tx_payload_bytes", "rdma_retx_bytes", "rdma_rx_payload_bytes", "rdma_qp_errors",
                "rdma_timeouts", "rdma_probes", "rdma_slow_restarts", "rdma_corrupt_control_frames")


class RdmaNic:
    def __init__(self, owner: NicOwner, name: str, ports: list[Port], addresses: list[int],
                 settings: NicSettings) -> None:
        self.owner = owner
        self.name = name
        self.ports = ports  # one per plane
        self.addresses = addresses
        self.settings = settings
        self.counters = owner.counters
        for counter in NIC_COUNTERS:
            self.counters.setdefault(counter, 0)
        self.qps: list[QueuePair] = []
        self.on_port: dict[str, list[tuple[QueuePair, Path]]] = {p.name: [] for p in ports}
        self.next_turn: dict[str, int] = {p.name: 0 for p in ports}
        self.wake_at: dict[str, int] = {p.name: NEVER for p in ports}
        self.by_source: dict[tuple[int, int], tuple[QueuePair, Path]] = {}  # (flow, our address) -> path
        self.receivers: dict[int, FlowReceiver] = {}
        self.path_receivers: dict[tuple[int, int], PathReceiver] = {}
        self.flow_names: dict[int, str] = {}
        self.finished: set[int] = set()  # flows whose receiver was let go: data for them is only ACKed
        self.wan_reference: dict[int, int] = {}  # gateway id -> the first WAN round trip it reported
        self.wan_told: dict[int, dict[str, int]] = {}  # gateway id -> its latest report
        self.events: list[dict[str, Any]] = []
        self._go_back_n = settings.recovery == GO_BACK_N

    # -- set-up -----------------------------------------------------------------------------------
    def open_qp(self, flow: int, spec: FlowSpec, remote: list[int], seed: int, hops: int, rtt_ps: int,
                path_devices: frozenset[int] = frozenset(), entropy: int | None = None, *, timeout_ps: int = 0,
                retry_cnt: int = -1, persistent: bool = False, windowed: bool = True) -> QueuePair:
        """A QP for ``spec`` toward the far NIC's port addresses ``remote`` (one per plane), over a path
        of ``hops`` links and round trip ``rtt_ps`` (serialisation aside; the settings may fix it).
        Each path's UDP source port (what ECMP hashes) is drawn from the seed and the flow's name,
        or derived from ``entropy`` when the caller has one (cheaper for many short-lived QPs).
        ``timeout_ps`` and ``retry_cnt`` are the QP's own (default: the NIC settings' ``rto`` and
        ``retries``); a ``persistent`` QP carries work requests posted to it until it is retired;
        ``windowed`` False: no in-flight window until a gateway tells the path's round trip."""
        if entropy is None:
            rng = stream_for(seed, f"qp:{spec.name}")
            ports = [int(rng.integers(0, 1 << 14)) for _ in self.ports]
        else:
            ports = [(entropy >> (14 * index)) & 0x3FFF for index in range(len(self.ports))]
        paths = []
        for index, port in enumerate(self.ports):
            paths.append(Path(index, port, self.addresses[index], remote[index % len(remote)],
                              FIRST_EPHEMERAL_PORT + ports[index]))
        settings = self.settings
        timer_rng = (stream_for(seed, f"qp-timer:{spec.name}")
                     if settings.timer_spread > 1.0 or settings.adaptive_retransmission is not None else None)
        qp = QueuePair(self, flow, spec.name, spec.message_bytes, spec.start_ps, spec.rate_bps, spec.priority, paths,
                       settings.rtt_ps or rtt_ps or FALLBACK_RTT_PS, max(1, hops), timeout_ps=timeout_ps,
                       retry_cnt=retry_cnt, rng=timer_rng, persistent=persistent, windowed=windowed)
        qp.path_devices = path_devices
        now = self.owner.now
        for via, info in self.wan_told.items():  # what gateways on its path said before it existed
            if via in path_devices:
                if via in self.wan_reference:
                    qp.wan_reference[via] = self.wan_reference[via]
                qp.told({key: value for key, value in info.items() if key != "switch"}, now)
        self.qps.append(qp)
        for path in paths:
            self.on_port[path.port.name].append((qp, path))
            self.by_source[(flow, path.src)] = (qp, path)
        return qp

    def expect(self, flow: int, name: str) -> FlowReceiver:
        receiver = self.receivers[flow] = FlowReceiver(flow, name)
        return receiver

    def start(self) -> None:
        for qp in self.qps:
            self.owner.at(qp.start_ps, self._begin, qp)

    def send_now(self, qp: QueuePair) -> None:
        """Start a QP opened while the run is going (a message posted by a program)."""
        self._begin(qp)

    def retire(self, qp: QueuePair) -> None:
        """Let go of a QP that is finished (or abandoned): the NIC no longer offers it to its ports,
        and feedback still on its way for it is ignored. Its results are the owner's to keep."""
        if qp.state == ACTIVE:
            qp.fail(self.owner.now, "abandoned")
        qp.rate.limited = False  # its rate timers stop at their next tick
        qp.rate.generation += 1
        self.qps.remove(qp)
        for path in qp.paths:
            self.on_port[path.port.name].remove((qp, path))
            self.by_source.pop((qp.flow, path.src), None)

    def finish_flow(self, flow: int) -> None:
        """Forget what arrived for ``flow``: its message is complete (or abandoned). Late copies of its
        data are acknowledged so a sender that missed the last ACK can finish. (Data for a flow the
        owner no longer ``accepts`` is treated alike, so an owner may clear ``finished`` once it
        refuses those flows.)"""
        self.receivers.pop(flow, None)
        for address in self.addresses:
            self.path_receivers.pop((flow, address), None)
        self.finished.add(flow)

    def _begin(self, qp: QueuePair) -> None:
        if qp.state == IDLE:
            qp.state = ACTIVE
            for path in qp.paths:
                path.up = path.port.link is not None and path.port.link.up
            if not any(p.up for p in qp.paths):
                for path in qp.paths:
                    path.up = True  # nothing is up: wait on the timers like a single-plane NIC
            qp.line_changed()
            self.pump_qp(qp)

    def schedule(self, delay_ps: int, handler: Callable[[Any], None], arg: Any) -> None:
        self.owner.at(self.owner.now + delay_ps, handler, arg)

    # -- transmit ---------------------------------------------------------------------------------
    def pump(self, port: Port) -> None:
        """Give an idle port its next chunk, if any QP may send one now."""
        if port.link is None or not port.link.up:
            self._start_timers(port)  # data that cannot leave counts against the retry budget too
            return
        if port.busy or port.waiting & DATA_PRIORITIES:
            return  # our chunk waits behind the port's own (a PFC pause holds it)
        candidates = self.on_port[port.name]
        count = len(candidates)
        if not count:
            return
        now = self.owner.now
        turn = self.next_turn[port.name]
        wake = NEVER
        for i in range(count):
            qp, path = candidates[(turn + i) % count]
            # qp.has_data(path), written out: this loop runs for every QP on every idle port
            if qp.state != ACTIVE or not path.up or (
                    path.cursor >= len(path.unacked) and not path.retransmit and not qp.returned
                    and qp.next_offset >= qp.message_bytes):
                continue
            if qp.next_send_ps > now:
                wake = min(wake, qp.next_send_ps)
                continue
            frame = qp.next_frame(path, now)
            if frame is None:
                continue
            self.next_turn[port.name] = (turn + i + 1) % count
            port.send(frame)
            return
        if (wake < self.wake_at[port.name] or self.wake_at[port.name] <= now) and wake < NEVER:
            self.wake_at[port.name] = wake
            self.owner.at(wake, self._wake, port)

    def _start_timers(self, port: Port) -> None:
        for qp, path in self.on_port[port.name]:
            if not path.timer_armed and qp.has_data(path):
                path.progress_ps = self.owner.now
                path.deadline = path.progress_ps + path.arm_ps
                self.arm_timer(qp, path)

    def _wake(self, port: Port) -> None:
        if self.wake_at[port.name] <= self.owner.now:
            self.wake_at[port.name] = NEVER
        self.pump(port)

    def pump_qp(self, qp: QueuePair) -> None:
        """Offer the ports of ``qp``'s paths its data (it has new work, or new window)."""
        for path in qp.paths:
            self.pump(path.port)

    def count_sent(self, payload: int, retransmission: bool) -> None:
        self.counters["rdma_tx_payload_bytes"] += payload
        if retransmission:
            self.counters["rdma_retx_bytes"] += payload

    def arm_timer(self, qp: QueuePair, path: Path) -> None:
        """Wake at the path's deadline (a timer armed for a later time is superseded: it does nothing)."""
        path.timer_armed = True
        path.timer_at = path.deadline
        self.owner.at(path.deadline, self._timer, (qp, path, path.deadline))

    def _timer(self, armed: tuple[QueuePair, Path, int]) -> None:
        qp, path, at_ps = armed
        if at_ps != path.timer_at or not path.timer_armed:
            return  # superseded by a timer for an earlier deadline
        path.timer_armed = False
        if qp.state != ACTIVE or not (path.unacked or qp.has_data(path)):
            return
        now = self.owner.now
        if now < path.deadline:  # progress since the timer was set: wait from the last ACK
            self.arm_timer(qp, path)
            return
        waited = now - path.progress_ps
        slow_restarts = qp.slow_restarts
        probe, reason = qp.on_timer(path, now)
        if reason is not None:
            self._path_failed(qp, path, reason)
            return
        self.counters["rdma_probes" if probe else "rdma_timeouts"] += 1
        if not probe:
            restarted = qp.slow_restarts > slow_restarts
            self.counters["rdma_slow_restarts"] += restarted
            self._event(qp, "timeout", f"local ack timeout after {format_ps(waited)} (retry {path.retries})"
                        + (f", rate restarts at {qp.rate.rate_bps / 1e9:g} Gb/s" if restarted else ""),
                        since_ps=path.stalled_ps, rtt_ps=qp.rtt_ps)
        self.arm_timer(qp, path)
        self.pump(path.port)

    def _path_failed(self, qp: QueuePair, path: Path, reason: str) -> None:
        if any(p.up for p in qp.paths if p is not path):
            self._fail_over(qp, path, reason)
            return
        qp.fail(self.owner.now, reason)
        self.counters["rdma_qp_errors"] += 1
        self._event(qp, "qp_error", reason, since_ps=path.stalled_ps if path.backed_off else self.owner.now,
                    rtt_ps=qp.rtt_ps)
        self.owner.on_qp_error(qp)

    def _event(self, qp: QueuePair, kind: str, reason: str, **extra: int) -> None:
        """A QP's event for results.json's qp_events; ``since_ps``: when the QP last made progress,
        ``rtt_ps``: its path's round trip."""
        self.events.append({"at_ps": self.owner.now, "kind": kind, "flow": qp.name, "nic": self.name,
                            "reason": reason, **extra})

    def completed(self, qp: QueuePair) -> None:
        self.owner.on_qp_complete(qp)

    # -- receive ----------------------------------------------------------------------------------
    def on_frame(self, port: Port, frame: Frame) -> None:
        kind = frame.kind
        if kind == DATA:
            self._on_data(port, frame)
        elif frame.corrupt_packets:  # a control frame that fails its CRC is dropped, never acted on
            self.counters["rdma_corrupt_control_frames"] += 1
        elif kind in (ACK, NAK, CNP):
            found = self.by_source.get((frame.flow, frame.dst))
            if found is None:
                return
            qp, path = found
            now = self.owner.now
            if kind == ACK:
                qp.on_ack(path, frame.seq, now)
            elif kind == NAK:
                reason = qp.on_nak(path, frame.seq, frame.fields["missing"] if frame.fields else 1, now)
                if reason is not None:
                    self._path_failed(qp, path, reason)
                    return
            else:
                qp.on_cnp(now)
            self.pump_qp(qp)
        elif kind == PFC:
            honour_pfc(port, frame)
        elif kind == PATH_INFO and frame.fields:
            self.on_path_info(frame.fields)

    def on_path_info(self, info: dict[str, int]) -> None:
        """What the network says about a path (端网协同): its round trip, BER and protection switches.
        With ``via`` (a gateway's device id) it concerns the QPs whose path crosses that device, and the
        round trip is the gateway's WAN part: the QP adds its change to the path's own round trip.
        Without, ``rtt_ps`` is the whole round trip toward ``device`` (every QP when -1)."""
        via = info.get("via", -1)
        if via >= 0:
            self.wan_told[via] = info
            if "rtt_ps" in info:
                self.wan_reference.setdefault(via, info["rtt_ps"])
        now = self.owner.now
        for qp in self.qps:
            if via >= 0:
                if via not in qp.path_devices:
                    continue
                qp.told(info, now)
            elif "rtt_ps" in info and (info.get("device", -1) < 0
                                       or any(device_of(p.dst) == info["device"] for p in qp.paths)):
                qp.set_rtt(info["rtt_ps"])
            self.pump_qp(qp)

    def set_path_rtt(self, rtt_ps: int, device: int = -1) -> None:
        """A path's round trip as another device reported it: QPs toward ``device`` (every QP when -1)
        resize their in-flight window to the new bandwidth-delay product."""
        self.on_path_info({"rtt_ps": rtt_ps, "device": device})

    def _on_data(self, port: Port, frame: Frame) -> None:
        flow = self.receivers.get(frame.flow)
        if flow is None and (frame.flow in self.finished or not self.owner.accepts(frame.flow)):
            self._reply(port, frame, ACK, frame.seq + frame.packets)
            return
        if flow is None:
            flow = self.expect(frame.flow, str(frame.flow))
        now = self.owner.now
        flow.frames += 1
        flow.corrupt_packets += frame.corrupt_packets
        if frame.ecn:
            flow.ecn_frames += 1
            if now - flow.last_cnp_ps >= self.settings.cnp_interval_ps:
                flow.last_cnp_ps = now
                flow.cnps_sent += 1
                self._reply(port, frame, CNP, 0)
        key = (frame.flow, frame.dst)
        path = self.path_receivers.get(key)
        if path is None:
            path = self.path_receivers[key] = PathReceiver()
        if frame.fields and frame.fields.get("psn_reset"):
            path.epsn = frame.seq  # the sender restarted this path after a plane failure
            path.nak_psn = -1
            path.early = type(path.early)()
        if self._go_back_n:
            self._go_back_n_receive(port, frame, flow, path, now)
        else:
            self._selective_receive(port, frame, flow, path, now)

    def _accept(self, frame: Frame, flow: FlowReceiver, first: int, last: int, now: int) -> None:
        """Packets [first, last) of ``frame`` arrived intact and in order."""
        settings = self.settings
        size = settings.payload_of(first, last, frame.nbytes - frame.packets * PACKET_OVERHEAD_BYTES)
        before = flow.payload_bytes
        flow.deliver(frame.offset + first * settings.mtu, size, now)
        if flow.payload_bytes > before:
            self.counters["rdma_rx_payload_bytes"] += flow.payload_bytes - before
            self.owner.on_delivered(flow)

    def _go_back_n_receive(self, port: Port, frame: Frame, flow: FlowReceiver, path: PathReceiver,
                           now: int) -> None:
        psn = frame.seq
        packets = frame.packets
        if psn > path.epsn:  # an earlier packet never came: drop, ask for it once
            flow.out_of_sequence_frames += 1
            self._nak(port, frame, flow, path, 1)
            return
        skip = path.epsn - psn  # packets we already have (a retransmission overlapping what arrived)
        if skip >= packets:
            flow.duplicate_frames += 1
            self._ack(port, frame, flow, path.epsn)
            return
        intact = packets if frame.first_corrupt < 0 else frame.first_corrupt
        if intact > skip:
            self._accept(frame, flow, skip, intact, now)
            path.epsn = psn + intact
        if intact == packets:
            self._ack(port, frame, flow, path.epsn)
        elif intact < packets - 1:
            self._nak(port, frame, flow, path, 1)  # packets after the corrupted one are out of sequence
        elif intact > skip:
            self._ack(port, frame, flow, path.epsn)  # the last packet was hit: the next frame shows the gap

    def _selective_receive(self, port: Port, frame: Frame, flow: FlowReceiver, path: PathReceiver,
                           now: int) -> None:
        psn = frame.seq
        packets = frame.packets
        intact = packets if frame.first_corrupt < 0 else frame.first_corrupt
        first = max(0, path.epsn - psn)
        if first >= packets:
            flow.duplicate_frames += 1
            self._ack(port, frame, flow, path.epsn)
            return
        if psn > path.epsn:
            flow.out_of_sequence_frames += 1
        if intact > first:
            self._accept(frame, flow, first, intact, now)
            path.early.add(psn + first, psn + intact)
            path.epsn = path.early.take_prefix(path.epsn)
        if path.early or intact < packets:
            hole_end = path.early.first_start() if path.early else psn + packets
            self._nak(port, frame, flow, path, max(1, hole_end - path.epsn))
        else:
            self._ack(port, frame, flow, path.epsn)

    def _ack(self, port: Port, frame: Frame, flow: FlowReceiver, epsn: int) -> None:
        flow.acks_sent += 1
        self._reply(port, frame, ACK, epsn)

    def _nak(self, port: Port, frame: Frame, flow: FlowReceiver, path: PathReceiver, missing: int) -> None:
        if path.nak_psn == path.epsn:
            return  # already asked for this packet: the retransmission or the timer will come
        path.nak_psn = path.epsn
        flow.naks_sent += 1
        reply = self._reply(port, frame, NAK, path.epsn)
        reply.fields = {"missing": missing}

    def _reply(self, port: Port, frame: Frame, kind: int, psn: int) -> Frame:
        reply = Frame(kind, frame.flow, frame.dst, frame.src, CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES, seq=psn,
                      priority=CONTROL_PRIORITY, created_ps=self.owner.now)
        reply.entropy = frame.entropy
        port.send(reply)
        return reply

    # -- ports ------------------------------------------------------------------------------------
    def on_link_change(self, port: Port) -> None:
        """The NIC sees its own port's link go down, come up or change rate."""
        up = port.link is not None and port.link.up
        for qp, path in self.on_port[port.name]:
            if qp.state != ACTIVE:
                continue
            if not up and path.up and any(p.up for p in qp.paths if p is not path):
                self._fail_over(qp, path, "link down")
            elif up and not path.up:
                qp.restore(path)
                self._event(qp, "restored", f"plane {path.index}: link up")
                for other in qp.paths:  # data stranded on a plane that went down while this one was out
                    if other.up and other is not path and not _link_up(other.port):
                        self._fail_over(qp, other, "link down")
            qp.line_changed()
            self.pump_qp(qp)
        self.pump(port)

    def _fail_over(self, qp: QueuePair, path: Path, reason: str) -> None:
        qp.fail_over(path)
        self._event(qp, "failover", f"plane {path.index}: {reason}")
        self.pump_qp(qp)

    def on_frame_dropped(self, frame: Frame) -> None:
        found = self.by_source.get((frame.flow, frame.src))
        if found is not None and frame.kind == DATA:
            found[0].dropped_frames += 1

    def results(self) -> dict[str, Any]:
        return {
            "tx": {qp.name: qp.results() for qp in self.qps},
            "rx": {r.name: r.results() for r in self.receivers.values()},
        }


def _link_up(port: Port) -> bool:
    return port.link is not None and port.link.up
