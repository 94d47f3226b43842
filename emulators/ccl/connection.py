"""One NCCL network connection: the sender's steps and the receiver's grants (CTS) for them.

As NCCL's net transport runs it (src/transport/net.cc, src/transport/net_ib/p2p.cc, NCCL 2.30): a
connection from a sending rank to a receiving rank on one channel owns ``depth`` buffer slots at the
receiver. The receiver's proxy posts a receive for a step once the op that needs it is posted and
the step's slot is free (the GPU has taken what it held ``depth`` steps before); each batch of posted
receives goes back to the sender as an RDMA write of 64-byte FIFO entries (the CTS) on the
connection's first QP, so credits ride the reverse path like any write: delayed by queues, paused by
PFC, lost and retransmitted. The sender writes step s into its granted slot with an RDMA write on QP
(s mod qps_per_connection); its own slot is free again once that write is acknowledged. Ops on a
connection go in the order they were posted: a stalled one holds every one behind it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from emulators.ccl.settings import CTS_ENTRY_BYTES, step_sizes

if TYPE_CHECKING:
    from emulators.rdma.qp import QueuePair

Done = Callable[[], None]


def _nothing() -> None:
    """A CTS write needs no completion: the receiver waits for data, not for its credit's ACK."""


class Part:
    """A message's bytes on one connection, in steps of ``chunk`` (the last one shorter)."""

    __slots__ = ("uid", "steps", "chunk", "last_bytes", "given", "done")

    def __init__(self, uid: int, nbytes: int, chunk: int, done: Done) -> None:
        self.uid = uid
        self.steps, self.last_bytes = step_sizes(nbytes, chunk)
        self.chunk = chunk
        self.given = 0  # steps handed out (sent, or granted)
        self.done = done

    def take(self) -> int:
        """The bytes of the next step."""
        self.given += 1
        return self.chunk if self.given < self.steps else self.last_bytes


class InOrder:
    """Steps that finish in any order (several QPs), taken in order: ``count`` is how many of the
    first steps have all finished, and a part's callback runs once its last step is among them."""

    __slots__ = ("count", "ahead", "parts")

    def __init__(self) -> None:
        self.count = 0
        self.ahead: set[int] = set()  # steps finished before an earlier one
        self.parts: deque[tuple[int, Done]] = deque()  # (last step, done) of parts whose steps are all out

    def finish(self, step: int) -> None:
        if step != self.count:
            self.ahead.add(step)
            return
        self.count += 1
        ahead = self.ahead
        while self.count in ahead:
            ahead.discard(self.count)
            self.count += 1

    def release(self) -> None:
        """Run the callbacks of the parts now wholly finished, oldest first."""
        parts = self.parts
        while parts and parts[0][0] < self.count:
            parts.popleft()[1]()


class SendConnection:
    """Our end of a connection we send on: the data QPs (the first also brings the CTS back)."""

    __slots__ = ("key", "qps", "depth", "queue", "step", "granted", "acked")

    def __init__(self, key: tuple[int, int, int, int], qps: list[QueuePair], depth: int) -> None:
        self.key = key  # (sending rank, receiving rank, communicator, channel)
        self.qps = qps
        self.depth = depth
        self.queue: deque[Part] = deque()  # parts with steps not yet sent, oldest first
        self.step = 0  # the next step to send
        self.granted = 0  # steps the receiver has granted
        self.acked = InOrder()  # steps acknowledged: their slots are free here

    def post(self, part: Part) -> None:
        self.queue.append(part)
        self.pump()

    def pump(self) -> None:
        queue = self.queue
        while queue and self.step < self.granted and self.step < self.acked.count + self.depth:
            part = queue[0]
            nbytes = part.take()
            step = self.step
            self.step += 1
            if part.given == part.steps:
                queue.popleft()
                self.acked.parts.append((step, part.done))
            self.qps[step % len(self.qps)].post(nbytes, partial(self._acked, step))

    def _acked(self, step: int) -> None:
        self.acked.finish(step)
        self.acked.release()
        self.pump()

    def credit(self, cts_bytes: int) -> None:
        """The CTS writes that arrived so far (in order) add up to ``cts_bytes``."""
        granted = cts_bytes // CTS_ENTRY_BYTES
        if granted > self.granted:
            self.granted = granted
            self.pump()

    @property
    def stalled(self) -> bool:
        """Data is waiting for a grant (the receiver has not freed a slot, or its CTS is on its way)."""
        return bool(self.queue) and self.step >= self.granted


class RecvConnection:
    """Our end of a connection we receive on: the slots, and our end of its first QP for the CTS."""

    __slots__ = ("key", "cts_qp", "depth", "queue", "granted", "consumed", "expect", "stream_end")

    def __init__(self, key: tuple[int, int, int, int], cts_qp: QueuePair, qps: int, depth: int) -> None:
        self.key = key
        self.cts_qp = cts_qp
        self.depth = depth
        self.queue: deque[Part] = deque()  # posted receives with steps not yet granted
        self.granted = 0
        self.consumed = InOrder()  # steps wholly arrived and taken by the GPU
        self.expect: list[deque[tuple[int, int]]] = [deque() for _ in range(qps)]  # per QP: (step, stream end)
        self.stream_end = [0] * qps  # bytes granted on each QP's stream

    def post(self, part: Part) -> None:
        self.queue.append(part)
        self.grant()

    def grant(self) -> None:
        queue = self.queue
        count = 0
        while queue and self.granted < self.consumed.count + self.depth:
            part = queue[0]
            nbytes = part.take()
            step = self.granted
            qp = step % len(self.stream_end)
            self.stream_end[qp] += nbytes
            self.expect[qp].append((step, self.stream_end[qp]))
            if part.given == part.steps:
                queue.popleft()
                self.consumed.parts.append((step, part.done))
            self.granted += 1
            count += 1
        if count:
            self.cts_qp.post(CTS_ENTRY_BYTES * count, _nothing)

    def delivered(self, qp: int, prefix: int) -> None:
        """QP ``qp``'s data arrived in order up to byte ``prefix`` of its stream."""
        expect = self.expect[qp]
        if not expect or expect[0][1] > prefix:
            return
        while expect and expect[0][1] <= prefix:
            self.consumed.finish(expect.popleft()[0])
        self.consumed.release()
        self.grant()
