"""The OLink link layer of one port: credit flow control per virtual channel and link-level retry.

Both directions of a link run it, so one :class:`OLinkPort` is a sender (its egress) and a receiver
(its ingress) at once.

- **Credits.** The far end announces a receive buffer per virtual channel (its ``credit``). The
  sender transmits a frame only while the bytes it has sent on that channel and not had back fit in
  that buffer. The receiver hands credit back as frames leave its buffer: a GPU at once, a switch
  when the frame has left through its egress. Many senders into one port therefore wait at their own
  ports instead of overflowing anything: lossless without PFC. The receiver reports the bytes it has
  freed per channel as a running total, so a lost report costs nothing; a frame that dies on the
  wire, or that the receiver discards, is freed as it arrives.
- **Link-level retry.** Every data frame carries a link sequence number and stays in the sender's
  replay buffer until acknowledged. A frame that fails its CRC (bit errors FEC could not correct,
  see :mod:`emulators.olink.fec`) is NAKed. The sender then replays from that frame onwards (go back
  N, on the link only), and the receiver discards what follows it until the replay arrives. A replay
  timer covers a lost NAK and a link that went down.
- **Status frames.** Acknowledgements and credits share one small status frame, sent once a quarter
  of the receive buffer has been freed, or a quarter buffer's time at line rate after the first news
  it carries, whichever comes first (hardware returns credits in batches too). While one waits in
  the egress queue, later news updates it instead of queueing another. NAKs go at once.

Frames are handed to the kernel port one at a time, when it is idle, so each choice (replay first,
then the virtual channels in turn) is made with the credits of the moment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emulators.kernel.frame import CONTROL_FRAME_BYTES, CONTROL_PRIORITY, DATA, Frame, FrameKind
from emulators.kernel.vtime import serialization_ps

if TYPE_CHECKING:
    from emulators.kernel.device import Device
    from emulators.kernel.port import Port

STATUS = FrameKind.CREDIT  # acknowledgement and credits
NAK = FrameKind.NAK
POLL = FrameKind.REQUEST  # a sender short of credit for too long asks for a status frame
MAX_POLL_BACKOFF = 64  # polls back off up to this many replay timeouts apart

OLINK_COUNTERS = (
    "crc_errors",  # frames that arrived with errors FEC could not correct
    "naks_sent", "naks_received",
    "replayed_frames", "replayed_bytes",  # frames sent again from the replay buffer
    "replay_timeouts",
    "discarded_frames",  # intact frames dropped because an earlier one had to be replayed
    "replay_buffer_bytes", "replay_buffer_peak_bytes",
    "credit_stalls", "credit_stall_ps",  # times, and time, data waited for credit
    "replay_stalls",  # times data waited for room in the replay buffer
)

Accept = Callable[["OLinkPort", Frame], None]


class _Sent:
    """A frame in the replay buffer."""

    __slots__ = ("seq", "frame", "vc", "sent_ps")

    def __init__(self, seq: int, frame: Frame, vc: int, sent_ps: int) -> None:
        self.seq = seq
        self.frame = frame
        self.vc = vc
        self.sent_ps = sent_ps


class OLinkPort:
    """The link layer on ``port`` of ``device``. ``accept(olink_port, frame)`` receives every intact,
    in-order data frame; its owner calls :meth:`release` once the frame has left its buffer.
    ``refill(olink_port, vc)``, if given, is asked for more data whenever a channel's queue is empty,
    so one channel waiting for credit never holds up another."""

    def __init__(self, device: Device, port: Port, address: int, peer_address: int, *, vcs: int,
                 far_credit: int, own_credit: int, replay_buffer: int, largest_wire_bytes: int,
                 replay_timeout_ps: int | None, accept: Accept,
                 refill: Callable[[OLinkPort, int], None] | None = None) -> None:
        self.device = device
        self.port = port
        self.address = address
        self.peer_address = peer_address
        self.vcs = vcs
        self.accept = accept
        self.refill = refill
        self.queues: list[deque[Frame]] = [deque() for _ in range(vcs)]  # data waiting for its turn
        self.next_vc = 0
        # sender
        self.far_credit = far_credit  # the far end's receive buffer per virtual channel
        self.sent_bytes = [0] * vcs  # running totals, against the receiver's freed totals
        self.freed_by_far = [0] * vcs
        self.replay_limit = replay_buffer
        self.largest_wire_bytes = largest_wire_bytes
        self.fixed_timeout_ps = replay_timeout_ps  # as configured; None: follow the link (see link_changed)
        self.replay_timeout_ps = replay_timeout_ps or self._default_timeout_ps()
        self.link_generation = 0  # link changes so far: a deferred timeout belongs to one of them
        self.next_seq = 0
        self.unacked: deque[_Sent] = deque()
        self.resend: deque[_Sent] = deque()
        self.timer_armed = False
        self.stalled_since = -1
        self.stalled_on_credit = False
        self.poll_interval_ps = self.replay_timeout_ps
        # receiver
        self.expected = 0
        self.nak_pending = False
        self.freed = [0] * vcs
        self.status_frame: Frame | None = None
        self.status_batch = max(1, own_credit // 4)  # freed bytes that call for a status frame at once
        self.unreported = 0  # bytes freed since the last status frame
        self.reported_ack = 0
        self.flush_armed = False
        self.sent_since_armed = False
        self.link_up = True
        # counters (OLINK_COUNTERS)
        self.crc_errors = self.naks_sent = self.naks_received = 0
        self.replayed_frames = self.replayed_bytes = self.replay_timeouts = self.discarded_frames = 0
        self.replay_buffer_bytes = self.replay_buffer_peak_bytes = 0
        self.credit_stalls = self.credit_stall_ps = self.replay_stalls = 0

    # -- sending ----------------------------------------------------------------------------------
    def enqueue(self, frame: Frame) -> None:
        """Queue a data frame on its virtual channel (``frame.priority``) and send when allowed."""
        self.queues[frame.priority].append(frame)
        if not self.port.busy:
            self.pump()

    def pump(self) -> None:
        """Hand the port its next data frame if it is idle and the credits and replay buffer allow."""
        port = self.port
        if port.busy or not self.link_up or port.link is None or not port.link.up:
            return  # (a link coming back up retrains first: see link_changed)
        if self.resend:
            entry = self.resend[0]
            nbytes = entry.frame.nbytes
            if self.sent_bytes[entry.vc] - self.freed_by_far[entry.vc] + nbytes > self.far_credit:
                self._stall(credit=True)
                return
            self.resend.popleft()
            self._transmit(entry, _copy(entry.frame, entry.seq))
            self.replayed_frames += 1
            self.replayed_bytes += nbytes
            return
        queues = self.queues
        refill = self.refill
        if refill is not None:
            for vc in range(self.vcs):
                if not queues[vc]:
                    refill(self, vc)
        waiting = False
        credit_short = False
        for i in range(self.vcs):
            vc = (self.next_vc + i) % self.vcs
            queue = queues[vc]
            if not queue:
                continue
            waiting = True
            nbytes = queue[0].nbytes
            if self.sent_bytes[vc] - self.freed_by_far[vc] + nbytes > self.far_credit:
                credit_short = True
                continue
            if self.replay_buffer_bytes + nbytes > self.replay_limit:
                break
            frame = queue.popleft()
            self.next_vc = vc + 1
            entry = _Sent(self.next_seq, frame, vc, 0)
            self.next_seq += 1
            self.unacked.append(entry)
            self.replay_buffer_bytes += nbytes
            if self.replay_buffer_bytes > self.replay_buffer_peak_bytes:
                self.replay_buffer_peak_bytes = self.replay_buffer_bytes
            frame.seq = entry.seq
            self._transmit(entry, frame)
            return
        if waiting:
            self._stall(credit=credit_short)
        elif self.stalled_since >= 0:  # nothing left to send (e.g. a job aborted): no longer waiting
            self._unstall()

    def _unstall(self) -> None:
        if self.stalled_on_credit:
            self.credit_stall_ps += self.device.engine.now - self.stalled_since
        self.stalled_since = -1
        self.poll_interval_ps = self.replay_timeout_ps

    def _transmit(self, entry: _Sent, frame: Frame) -> None:
        device = self.device
        now = device.engine.now
        if self.stalled_since >= 0:
            self._unstall()
        entry.sent_ps = now
        self.sent_bytes[entry.vc] += frame.nbytes
        self.port.send(frame)
        if not self.timer_armed:
            self.timer_armed = True
            device.at(now + self.replay_timeout_ps, self._timer)

    def _stall(self, credit: bool) -> None:
        now = self.device.engine.now
        if self.stalled_since < 0:
            self.stalled_since = now
            self.stalled_on_credit = credit
            if credit:
                self.credit_stalls += 1
            else:
                self.replay_stalls += 1
        if not self.timer_armed:  # a lost status frame must not leave us waiting for ever
            self.timer_armed = True
            self.device.at(now + self.replay_timeout_ps, self._timer)

    def dropped(self, frame: Frame) -> None:
        """Our port dropped ``frame`` (the link was down when it was due): it never used the far end's
        buffer. The replay buffer still holds it; the timer or the link's return sends it again."""
        if frame.kind == DATA:
            self.sent_bytes[frame.priority] -= frame.nbytes

    def _timer(self, _: Any = None) -> None:
        """Replay what has waited too long for its acknowledgement; and, short of credit for too long,
        ask the far end for a status frame (the one that freed it may have been lost), backing off
        while the wait goes on (a late partner of an in-network collective may keep us waiting)."""
        self.timer_armed = False
        now = self.device.engine.now
        next_ps = 0
        if self.stalled_since >= 0 and self.stalled_on_credit:
            poll_at = self.stalled_since + self.poll_interval_ps
            if now >= poll_at:
                self.port.send(Frame(POLL, -1, self.address, self.peer_address, CONTROL_FRAME_BYTES,
                                     CONTROL_FRAME_BYTES, priority=CONTROL_PRIORITY, created_ps=now))
                self.poll_interval_ps = min(2 * self.poll_interval_ps, MAX_POLL_BACKOFF * self.replay_timeout_ps)
                poll_at = now + self.poll_interval_ps
            next_ps = poll_at
        if self.unacked and not self.resend:
            due = self.unacked[0].sent_ps + self.replay_timeout_ps
            if due <= now:
                self.replay_timeouts += 1
                self._go_back()
                due = now + self.replay_timeout_ps
            next_ps = min(next_ps, due) if next_ps else due
        elif self.unacked:  # replaying: look again later
            next_ps = min(next_ps, now + self.replay_timeout_ps) if next_ps else now + self.replay_timeout_ps
        if next_ps and not self.timer_armed:
            self.timer_armed = True
            self.device.at(max(next_ps, now + 1), self._timer)

    def _go_back(self) -> None:
        self.resend = deque(self.unacked)
        self.pump()

    # -- feedback from the far end ----------------------------------------------------------------
    def _acked(self, expected: int) -> None:
        unacked = self.unacked
        while unacked and unacked[0].seq < expected:
            self.replay_buffer_bytes -= unacked.popleft().frame.nbytes
        resend = self.resend
        while resend and resend[0].seq < expected:
            resend.popleft()

    def on_status(self, frame: Frame) -> None:
        fields = frame.fields
        assert fields is not None
        self._acked(fields["ack"])
        self._credits(fields)
        self.pump()

    def on_nak(self, frame: Frame) -> None:
        fields = frame.fields
        assert fields is not None
        self.naks_received += 1
        self._acked(fields["seq"])
        self._credits(fields)
        self._go_back()

    def _credits(self, fields: dict[str, int]) -> None:
        freed = self.freed_by_far
        for vc in range(self.vcs):
            freed[vc] = max(freed[vc], fields[f"c{vc}"])

    # -- receiving --------------------------------------------------------------------------------
    def receive(self, frame: Frame) -> None:
        """A frame arrived on our port."""
        kind = frame.kind
        if kind != DATA:
            if frame.corrupt_packets:
                self.crc_errors += 1  # feedback is cumulative or timed: the next one will do
            elif kind == STATUS:
                self.on_status(frame)
            elif kind == NAK:
                self.on_nak(frame)
            elif kind == POLL:
                self._status(urgent=True)
            return
        seq = frame.seq
        if frame.corrupt_packets or seq != self.expected:
            if frame.corrupt_packets:
                self.crc_errors += 1
            else:
                self.discarded_frames += 1
            self.freed[frame.priority] += frame.nbytes
            # NAK the frame we expect when it is the one hit, or the first gap after it
            gap = seq > self.expected and not self.nak_pending
            if gap or (frame.corrupt_packets and seq == self.expected):
                self.nak_pending = True
                self._send_nak()
            self.unreported += frame.nbytes
            self._status(urgent=seq < self.expected)  # a replay of what we have: the sender missed our ack
            return
        self.expected = seq + 1
        self.nak_pending = False
        self._status()
        self.accept(self, frame)

    def lost(self, frame: Frame) -> None:
        """``frame`` was on the wire toward us when the link went down: its space is free again."""
        if frame.kind == DATA:
            self.freed[frame.priority] += frame.nbytes
            self.unreported += frame.nbytes

    def release(self, vc: int, nbytes: int) -> None:
        """An accepted frame of ``nbytes`` on ``vc`` has left our buffer: credit goes back."""
        self.freed[vc] += nbytes
        self.unreported += nbytes
        self._status()

    def _status(self, urgent: bool = False) -> None:
        """Tell the far end what we have accepted and freed: now if ``urgent`` or a batch of credit
        is due, else once the flush timer fires. A status frame already waiting in our egress queue
        takes the news instead of a new one."""
        if not urgent and self.unreported < self.status_batch:
            if not self.flush_armed:
                self._arm_flush()
            return
        self.sent_since_armed = True
        self.unreported = 0
        self.reported_ack = self.expected
        fields: dict[str, int] = {"ack": self.expected}
        for vc in range(self.vcs):
            fields[f"c{vc}"] = self.freed[vc]
        queued = self.port.queues[CONTROL_PRIORITY]
        pending = self.status_frame
        if pending is not None and queued and queued[-1] is pending:
            pending.fields = fields
            return
        frame = Frame(STATUS, -1, self.address, self.peer_address, CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES,
                      priority=CONTROL_PRIORITY, created_ps=self.device.engine.now, fields=fields)
        self.status_frame = frame
        self.port.send(frame)

    def _arm_flush(self) -> None:
        self.flush_armed = True
        self.sent_since_armed = False
        link = self.port.link
        rate = link.rate_bps if link is not None and link.rate_bps else 1
        self.device.at(self.device.engine.now + serialization_ps(self.status_batch, rate), self._flush)

    def _flush(self, _: Any = None) -> None:
        """News has waited a batch's time: send it, unless a status frame went out meanwhile (then
        the rest waits one more period: while frames stream in, batches carry the news)."""
        self.flush_armed = False
        if not self.unreported and self.reported_ack == self.expected:
            return
        if self.sent_since_armed:
            self._arm_flush()
        else:
            self._status(urgent=True)

    def _send_nak(self) -> None:
        """Ask for a replay from the frame we expect; the credit we have freed rides along."""
        self.naks_sent += 1
        fields = {"seq": self.expected}
        for vc in range(self.vcs):
            fields[f"c{vc}"] = self.freed[vc]
        self.port.send(Frame(NAK, -1, self.address, self.peer_address, CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES,
                             priority=CONTROL_PRIORITY, created_ps=self.device.engine.now, fields=fields))

    # -- the link ---------------------------------------------------------------------------------
    def _default_timeout_ps(self) -> int:
        link = self.port.link
        if link is None:
            return replay_timeout_ps(self.largest_wire_bytes, self.far_credit, 0, 0)
        return replay_timeout_ps(self.largest_wire_bytes, self.far_credit, link.rate_bps, link.propagation_ps)

    def link_changed(self) -> None:
        """Back up: the two ends retrain. Tell the far end where we are and replay what it may have
        missed. A new rate or length: the default replay timeout follows it (a shorter one once the
        old one has passed). Down, or a new BER: nothing else to do."""
        link = self.port.link
        if self.fixed_timeout_ps is None:
            timeout = self._default_timeout_ps()
            self.link_generation += 1
            if timeout >= self.replay_timeout_ps:
                self._set_timeout((timeout, self.link_generation))
            else:  # what was sent at the old rate may take the old timeout to be acknowledged
                self.device.at(self.device.engine.now + self.replay_timeout_ps, self._set_timeout,
                               (timeout, self.link_generation))
        up = link is not None and link.up
        came_back, self.link_up = up and not self.link_up, up
        if not came_back:  # still up (a new rate, BER or length), or down
            return
        self._status(urgent=True)
        if self.unacked:
            self._go_back()
        else:
            self.pump()

    def _set_timeout(self, args: tuple[int, int]) -> None:
        timeout, change = args
        if change != self.link_generation:
            return  # the link changed again since
        self.replay_timeout_ps = timeout
        if self.stalled_since < 0:
            self.poll_interval_ps = timeout
        else:  # polling: keep the backoff, within its bounds at the new timeout
            self.poll_interval_ps = min(max(self.poll_interval_ps, timeout), MAX_POLL_BACKOFF * timeout)

    # -- counters ---------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in OLINK_COUNTERS}

    def counter_values(self) -> list[int]:
        return [getattr(self, name) for name in OLINK_COUNTERS]


def _copy(frame: Frame, seq: int) -> Frame:
    """A fresh copy of a frame as it was first sent (the original may have travelled on meanwhile)."""
    copy = Frame(frame.kind, frame.flow, frame.src, frame.dst, frame.nbytes, frame.mtu, seq=seq,
                 priority=frame.priority, created_ps=frame.created_ps, op=frame.op, fields=frame.fields)
    copy.offset = frame.offset
    copy.entropy = frame.entropy
    return copy


def replay_timeout_ps(chunk_wire_bytes: int, far_credit: int, rate_bps: int, propagation_ps: int) -> int:
    """The default replay timeout: four times what an acknowledgement may take (our frame, the far
    end's reply waiting behind one of its own frames, the round trip) plus twice the far end's
    status batching (a quarter of its credit at line rate), plus 1 us."""
    if not rate_bps:
        return 1_000_000
    frame_ps = serialization_ps(chunk_wire_bytes, rate_bps)
    batch_ps = serialization_ps(max(1, far_credit // 4), rate_bps)
    return 1_000_000 + 4 * (2 * frame_ps + 2 * propagation_ps) + 2 * batch_ps


def counter_names(ports: dict[str, OLinkPort]) -> list[str]:
    return [f"{name}.{c}" for name in ports for c in OLINK_COUNTERS]


def counter_values(ports: dict[str, OLinkPort]) -> list[int]:
    values: list[int] = []
    for port in ports.values():
        values.extend(port.counter_values())
    return values
