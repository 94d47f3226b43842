"""GSE (Global Scheduling Ethernet) at a leaf switch.

Source side (GSP): data from a NIC toward another leaf is cut into packet containers (PDC) and
queued per destination port (DGSQ); every container is announced to the destination leaf with a
REQUEST. A GRANT releases the head container, sprayed over every uplink toward that leaf.

Destination side: requests wait per local NIC port and per source leaf; grants go out round-robin
over source leaves, paced at the port's line rate, while granted-but-not-arrived bytes stay within
the credit and the port is not backed up. Containers carry the grant's sequence number so the
destination leaf can put them back in order before they reach the NIC.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from emulators.ethernet.mmu import EgressQueue
from emulators.kernel.frame import (
    CONTROL_FRAME_BYTES,
    CONTROL_PRIORITY,
    Frame,
    FrameKind,
    address,
    device_of,
)
from emulators.kernel.vtime import PS_PER_US, serialization_ps

if TYPE_CHECKING:
    from emulators.context import ScenarioContext
    from emulators.ethernet.leaf import LeafSwitch
    from emulators.kernel.port import Port

# A container lost on a cut link must not stall its stream for ever: after this long the
# destination leaf gives up on the gap and releases what waits behind it.
REORDER_TIMEOUT_PS = 100 * PS_PER_US
# Requests and grants lost on a cut link must not deadlock a stream either: a grant whose container
# has not come within this long gives its credit back, and a source queue that has had no grant for
# this long restates its whole backlog to the destination leaf (idempotent, so never double-counted).
SIGNAL_TIMEOUT_PS = 200 * PS_PER_US
GSE_FIELDS = ("gse_seq", "gse_src")


class Dgsq(EgressQueue):
    """Destination-port queue at the source leaf: containers waiting for their grant."""

    __slots__ = ("dst", "dst_leaf", "containers", "spray_turn", "last_grant_ps", "audit_armed")

    def __init__(self, dst: int, dst_leaf: int) -> None:
        super().__init__()
        self.dst = dst
        self.dst_leaf = dst_leaf
        self.containers: deque[Frame] = deque()
        self.spray_turn = 0  # where this queue's round-robin among equally loaded uplinks resumes
        self.last_grant_ps = 0
        self.audit_armed = False


class PortGrants:
    """Grant scheduling for one NIC-facing port of the destination leaf."""

    __slots__ = ("port", "dst", "requests", "turns", "outstanding", "granted", "next_seq", "next_grant_ps",
                 "timer_armed", "issued", "audit_armed")

    def __init__(self, port: Port, dst: int) -> None:
        self.port = port
        self.dst = dst  # the NIC address behind the port
        self.requests: dict[int, deque[int]] = {}  # source leaf -> requested container bytes, in order
        self.turns: deque[int] = deque()  # source leaves with requests, in round-robin order
        self.outstanding = 0  # granted bytes not yet arrived
        self.granted: dict[int, dict[int, int]] = {}  # source leaf -> grant seq -> bytes
        self.next_seq: dict[int, int] = {}
        self.next_grant_ps = 0
        self.timer_armed = False
        self.issued: deque[tuple[int, int, int]] = deque()  # (granted at, source leaf, seq), oldest first
        self.audit_armed = False


class ReorderStream:
    """Containers of one (source leaf, destination address) stream, put back in grant order."""

    __slots__ = ("expected", "held", "gap_seq", "timer_armed")

    def __init__(self) -> None:
        self.expected = 0
        self.held: dict[int, Frame] = {}
        self.gap_seq = -1
        self.timer_armed = False


# Grants run slightly faster than the egress port (1/16): containers arrive with jitter (spines,
# reordering), and a scheduler that grants at exactly the drain rate can never make up an idle gap.
# The egress backlog this could build is bounded by the credit check before each grant.
GRANT_SPEEDUP = 16
EGRESS_BACKLOG_CONTAINERS = 4


def payload_per_packet(mtu: int) -> int:
    """Payload of a full packet of wire size ``mtu``: RoCE path MTUs are powers of two (256..4096),
    so it is the largest power of two not above the wire size (headers fill the rest)."""
    return 1 << (mtu.bit_length() - 1)


def cut_containers(frame: Frame, container_bytes: int) -> list[Frame]:
    """Cut a data frame into containers of at most ``container_bytes`` of payload on packet boundaries
    (at least one packet each). Every piece is a valid run of packets: its own first PSN, offset and
    count; only the first keeps a PSN reset the sender put on the run."""
    mtu = frame.mtu
    per_piece = max(1, container_bytes // payload_per_packet(mtu))
    if frame.packets <= per_piece:
        return [frame]
    bad = _corrupt_packet_indices(frame)
    pieces = []
    for start in range(0, frame.packets, per_piece):
        count = min(per_piece, frame.packets - start)
        last = start + count == frame.packets
        piece = Frame(frame.kind, frame.flow, frame.src, frame.dst,
                      (count - 1) * mtu + (frame.last_packet_bytes if last else mtu), mtu,
                      seq=frame.seq + start, priority=frame.priority, created_ps=frame.created_ps, op=frame.op,
                      fields=dict(frame.fields) if frame.fields is not None else None)
        if start and piece.fields is not None:
            piece.fields.pop("psn_reset", None)
            piece.fields = piece.fields or None
        piece.ecn = frame.ecn
        piece.entropy = frame.entropy
        piece.offset = frame.offset + start * payload_per_packet(mtu) if frame.offset >= 0 else -1
        if bad:
            _place_corruption(piece, frame, start, count, bad)
        pieces.append(piece)
    return pieces


def _corrupt_packet_indices(frame: Frame) -> list[int]:
    """Which packets are bad, as far as the frame tells: the first, then the rest right behind it,
    except that a bad last packet (its bytes give it away when it is short) stays last."""
    n = frame.corrupt_packets
    if n == 0:
        return []
    first = max(0, frame.first_corrupt)
    short_last = frame.last_packet_bytes != frame.mtu
    last_bad = n > 1 and short_last and frame.corrupt_bytes == (n - 1) * frame.mtu + frame.last_packet_bytes
    run = list(range(first, min(frame.packets, first + n - int(last_bad))))
    return run + [frame.packets - 1] if last_bad else run


def _place_corruption(piece: Frame, frame: Frame, start: int, count: int, bad: list[int]) -> None:
    mine = [i - start for i in bad if start <= i < start + count]
    if not mine:
        return
    piece.corrupt_packets = len(mine)
    piece.first_corrupt = mine[0]
    piece.corrupt_bytes = sum(piece.last_packet_bytes if i == count - 1 else piece.mtu for i in mine)


def _is_gse_leaf(context: ScenarioContext, switch: str) -> bool:
    """Only a GSE leaf answers requests: toward anything else, data is forwarded as it is."""
    options = context.scenario.device(switch).options
    return options.get("mode") == "gse" and options.get("role", "leaf") == "leaf"


class GseLeaf:
    """The GSE half of a leaf switch in ``mode: gse``; the switch does routing and the MMU."""

    def __init__(self, switch: LeafSwitch, context: ScenarioContext, container_bytes: int, credit_bytes: int) -> None:
        self.switch = switch
        self.counters = switch.counters
        self.container_bytes = container_bytes
        self.credit_bytes = credit_bytes
        # the egress backlog grants may build toward a NIC: enough to cover arrival jitter
        self.backlog_bytes = min(credit_bytes, EGRESS_BACKLOG_CONTAINERS * container_bytes)
        self.me = address(switch.id)
        attachments = context.attachments
        self.leaf_of = {nic: context.ids[sw] for nic, (sw, _) in attachments.items() if _is_gse_leaf(context, sw)}
        self.grants = {nic: PortGrants(switch.ports[port], nic)
                       for nic, (sw, port) in attachments.items() if sw == switch.name}
        self.grants_by_port = {g.port.name: g for g in self.grants.values()}
        self.dgsqs: dict[int, Dgsq] = {}
        self.streams: dict[tuple[int, int], ReorderStream] = {}

    # -- ingress ----------------------------------------------------------------------------------
    def claims(self, in_port: int, frame: Frame) -> bool:
        """Take a data frame into GSE handling (source or destination side); False: forward it normally."""
        switch = self.switch
        dst = frame.dst
        if switch.nic_facing[in_port]:
            dst_leaf = self.leaf_of.get(dst)
            if dst_leaf is None or dst_leaf == switch.id or dst not in switch.routes:
                return False
            dgsq = self.dgsqs.get(dst)
            if dgsq is None:
                dgsq = self.dgsqs[dst] = Dgsq(dst, dst_leaf)
            if switch.mmu.admit(frame, in_port, dgsq, None):
                switch.after_pipeline(self._on_source_data, frame)
            return True
        fields = frame.fields
        grants = self.grants.get(dst)
        if grants is None or fields is None or "gse_seq" not in fields:
            return False
        if switch.admit(frame, in_port, grants.port):
            switch.after_pipeline(self._on_container, frame)
        return True

    def on_signal(self, frame: Frame) -> bool:
        if frame.kind == FrameKind.REQUEST:
            self._on_request(frame)
        elif frame.kind == FrameKind.GRANT:
            self._on_grant(frame)
        else:
            return False
        return True

    # -- source leaf ------------------------------------------------------------------------------
    def _on_source_data(self, frame: Frame) -> None:
        dgsq: Dgsq = frame.ingress[1]
        for container in cut_containers(frame, self.container_bytes):
            container.ingress = frame.ingress
            dgsq.containers.append(container)
            self.counters["dgsq_bytes"] += container.nbytes
            self._signal(FrameKind.REQUEST, dgsq.dst_leaf, {"dst": dgsq.dst, "bytes": container.nbytes})
            self.counters["requests_sent"] += 1
        if not dgsq.audit_armed:
            dgsq.audit_armed = True
            dgsq.last_grant_ps = self.switch.now
            self.switch.at(self.switch.now + SIGNAL_TIMEOUT_PS, self._audit_dgsq, dgsq)

    def _audit_dgsq(self, dgsq: Dgsq) -> None:
        """No grant for a whole timeout while containers wait: restate the backlog (requests may be lost)."""
        dgsq.audit_armed = False
        if not dgsq.containers:
            return
        now = self.switch.now
        if now - dgsq.last_grant_ps >= SIGNAL_TIMEOUT_PS:
            self.counters["requests_restated"] += 1
            self._signal(FrameKind.REQUEST, dgsq.dst_leaf, {
                "dst": dgsq.dst, "restate": 1, "count": len(dgsq.containers),
                "bytes": sum(c.nbytes for c in dgsq.containers)})
            dgsq.last_grant_ps = now
        dgsq.audit_armed = True
        self.switch.at(dgsq.last_grant_ps + SIGNAL_TIMEOUT_PS, self._audit_dgsq, dgsq)

    def _on_grant(self, grant: Frame) -> None:
        self.counters["grants_received"] += 1
        assert grant.fields is not None
        dgsq = self.dgsqs.get(grant.fields["dst"])
        if dgsq is not None:
            dgsq.last_grant_ps = self.switch.now
        if dgsq is None or not dgsq.containers:
            self.counters["grants_unused"] += 1
            return
        container = dgsq.containers.popleft()
        self.counters["dgsq_bytes"] -= container.nbytes
        container.fields = (container.fields or {}) | {"gse_seq": grant.fields["gse_seq"], "gse_src": self.switch.id}
        uplink = self._spray(dgsq, container.priority)
        if uplink is None:
            self.counters["no_route_frames"] += 1
            self.switch.mmu.release(container)
            return
        in_port, queue, _ = container.ingress
        container.ingress = (in_port, queue, uplink)
        self.counters["containers_sent"] += 1
        self.switch.enqueue(uplink, container)

    def _spray(self, dgsq: Dgsq, priority: int) -> Port | None:
        """The up uplink toward the destination leaf with the fewest bytes of this priority queued or
        on the wire (tiny control frames would otherwise tip every tie); ties round-robin per DGSQ, so
        each destination's containers cross every spine."""
        switch = self.switch
        ports = switch.routes.get(dgsq.dst, ())
        n = len(ports)
        turn = dgsq.spray_turn
        best: Port | None = None
        best_k = best_load = 0
        for k in range(n):
            port = ports[(turn + k) % n]
            load = switch.mmu.egress[switch.port_index[port.name]][priority].queued
            if port.link is not None and port.link.up and (best is None or load < best_load):
                best, best_k, best_load = port, k, load
        if best is not None:
            dgsq.spray_turn = (turn + best_k + 1) % n
        return best

    def respray(self, frame: Frame) -> bool:
        """A container of ours was flushed from an uplink that went down: send it over another."""
        fields = frame.fields
        if frame.ingress is None or fields is None or fields.get("gse_src") != self.switch.id:
            return False
        dgsq = self.dgsqs.get(frame.dst)
        uplink = self._spray(dgsq, frame.priority) if dgsq is not None else None
        if uplink is None:
            return False
        in_port, queue, _ = frame.ingress
        frame.ingress = (in_port, queue, uplink)
        self.counters["containers_resprayed"] += 1
        self.switch.enqueue(uplink, frame)
        return True

    # -- destination leaf -------------------------------------------------------------------------
    def _on_request(self, request: Frame) -> None:
        self.counters["requests_received"] += 1
        assert request.fields is not None
        grants = self.grants.get(request.fields["dst"])
        if grants is None:
            self.counters["no_route_frames"] += 1
            return
        src_leaf = device_of(request.src)
        queue = grants.requests.setdefault(src_leaf, deque())
        had_requests = bool(queue)
        if request.fields.get("restate"):
            count, total = request.fields["count"], request.fields["bytes"]
            in_flight = len(grants.granted.get(src_leaf, {}))  # granted, not arrived: not waiting there
            waiting = max(0, count - in_flight)
            queue.clear()
            queue.extend([total // count] * waiting)
        else:
            queue.append(request.fields["bytes"])
        if queue and not had_requests:
            grants.turns.append(src_leaf)
        elif had_requests and not queue:
            grants.turns.remove(src_leaf)
        self.pump(grants)

    def pump(self, grants: PortGrants) -> None:
        """Grant what the port can take now; come back when pacing, credit or the port allows more."""
        port = grants.port
        switch = self.switch
        while grants.turns:
            now = switch.now
            if now < grants.next_grant_ps:
                if not grants.timer_armed:
                    grants.timer_armed = True
                    switch.at(grants.next_grant_ps, self._grant_timer, grants)
                return
            link = port.link
            # a NIC that paused its port stops grants, and so does a backlog beyond the credit (a slower
            # link); a burst the reorder buffer just released does not, or the port would starve a loop later
            if link is None or not link.up or port.paused or port.queue_bytes > self.backlog_bytes:
                return  # resume_grants picks up when the port sends, idles, resumes or comes up
            src_leaf = grants.turns[0]
            queue = grants.requests[src_leaf]
            nbytes = queue[0]
            if grants.outstanding and grants.outstanding + nbytes > self.credit_bytes:
                return  # resumed when a container arrives
            grants.turns.popleft()
            queue.popleft()
            if queue:
                grants.turns.append(src_leaf)
            seq = grants.next_seq.get(src_leaf, 0)
            grants.next_seq[src_leaf] = seq + 1
            grants.granted.setdefault(src_leaf, {})[seq] = nbytes
            grants.outstanding += nbytes
            grants.issued.append((now, src_leaf, seq))
            if not grants.audit_armed:
                grants.audit_armed = True
                switch.at(now + SIGNAL_TIMEOUT_PS, self._audit_grants, grants)
            grants.next_grant_ps = now + serialization_ps(nbytes, link.rate_bps + link.rate_bps // GRANT_SPEEDUP)
            self._signal(FrameKind.GRANT, src_leaf, {"dst": grants.dst, "bytes": nbytes, "gse_seq": seq})
            self.counters["grants_sent"] += 1

    def _audit_grants(self, grants: PortGrants) -> None:
        """Grants whose containers never came (a lost grant or container): give the credit back and
        let the stream move past them."""
        grants.audit_armed = False
        now = self.switch.now
        issued = grants.issued
        while issued and issued[0][0] + SIGNAL_TIMEOUT_PS <= now:
            _, src_leaf, seq = issued.popleft()
            if seq in grants.granted.get(src_leaf, {}):
                self.counters["grants_expired"] += 1
                self._credit_back(grants, src_leaf, seq)
                stream = self.streams.get((src_leaf, grants.dst))
                if stream is not None and stream.expected == seq:
                    stream.expected += 1
                    self._deliver_ready(stream)
        while issued and issued[0][2] not in grants.granted.get(issued[0][1], {}):
            issued.popleft()  # arrived: nothing to watch
        if issued:
            grants.audit_armed = True
            self.switch.at(issued[0][0] + SIGNAL_TIMEOUT_PS, self._audit_grants, grants)
        self.pump(grants)

    def _grant_timer(self, grants: PortGrants) -> None:
        grants.timer_armed = False
        self.pump(grants)

    def held_frames(self) -> Iterator[Frame]:
        """Data waiting in DGSQs and reorder buffers (not in any port queue or event)."""
        for dgsq in self.dgsqs.values():
            yield from dgsq.containers
        for stream in self.streams.values():
            yield from stream.held.values()

    def resume_grants(self, port: Port) -> None:
        grants = self.grants_by_port.get(port.name)
        if grants is not None and grants.turns:
            self.pump(grants)

    def _on_container(self, container: Frame) -> None:
        fields = container.fields
        assert fields is not None
        src_leaf, seq = fields["gse_src"], fields["gse_seq"]
        grants = self.grants[container.dst]
        self._credit_back(grants, src_leaf, seq)
        key = (src_leaf, container.dst)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = ReorderStream()
        if seq == stream.expected:
            self._deliver(container)
            stream.expected += 1
            self._deliver_ready(stream)
        elif seq > stream.expected:
            self._hold(stream, seq, container, key)
        else:  # its gap was given up on: late is better than never
            self.counters["late_containers"] += 1
            self._deliver(container)
        self.pump(grants)

    def _credit_back(self, grants: PortGrants, src_leaf: int, seq: int) -> None:
        nbytes = grants.granted.get(src_leaf, {}).pop(seq, 0)
        grants.outstanding -= nbytes

    def _hold(self, stream: ReorderStream, seq: int, container: Frame, key: tuple[int, int]) -> None:
        stream.held[seq] = container
        counters = self.counters
        counters["reordered_containers"] += 1
        counters["reorder_frames"] += 1
        counters["reorder_bytes"] += container.nbytes
        if counters["reorder_bytes"] > counters["reorder_peak_bytes"]:
            counters["reorder_peak_bytes"] = counters["reorder_bytes"]
        if not stream.timer_armed:
            stream.timer_armed = True
            stream.gap_seq = stream.expected
            self.switch.at(self.switch.now + REORDER_TIMEOUT_PS, self._reorder_timeout, key)

    def _deliver_ready(self, stream: ReorderStream) -> None:
        held = stream.held
        while stream.expected in held:
            container = held.pop(stream.expected)
            self.counters["reorder_frames"] -= 1
            self.counters["reorder_bytes"] -= container.nbytes
            self._deliver(container)
            stream.expected += 1

    def _reorder_timeout(self, key: tuple[int, int]) -> None:
        stream = self.streams[key]
        stream.timer_armed = False
        if not stream.held:
            return
        if stream.expected == stream.gap_seq:  # the same gap for a whole timeout: skip it
            self.counters["reorder_timeouts"] += 1
            src_leaf, dst = key
            grants = self.grants[dst]
            first_held = min(stream.held)
            for seq in range(stream.expected, first_held):
                self._credit_back(grants, src_leaf, seq)
            stream.expected = first_held
            self._deliver_ready(stream)
            self.pump(grants)
        if stream.held:
            stream.timer_armed = True
            stream.gap_seq = stream.expected
            self.switch.at(self.switch.now + REORDER_TIMEOUT_PS, self._reorder_timeout, key)

    def _deliver(self, container: Frame) -> None:
        """Toward the NIC, without the fabric's own fields."""
        fields = container.fields
        assert fields is not None
        rest = {k: v for k, v in fields.items() if k not in GSE_FIELDS}
        container.fields = rest or None
        self.switch.enqueue(container.ingress[2], container)

    # -- signalling -------------------------------------------------------------------------------
    def _signal(self, kind: FrameKind, leaf: int, fields: dict[str, int]) -> None:
        frame = Frame(kind, -1, self.me, address(leaf), CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES,
                      priority=CONTROL_PRIORITY, created_ps=self.switch.now, fields=fields)
        self.switch.send_control(frame)
