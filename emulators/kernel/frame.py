"""Frames: the unit that crosses links.

A data frame stands for a run of MTU packets of one flow (a chunk); control frames are single small
packets (ACK/NAK, CNP, PFC, credit, request/grant, APS, path info) that ride the same links.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Protocol


class FrameKind(IntEnum):
    DATA = 0
    ACK = 1
    NAK = 2
    CNP = 3
    PFC = 4
    CREDIT = 5
    REQUEST = 6
    GRANT = 7
    APS = 8
    PATH_INFO = 9


DATA = FrameKind.DATA
ACK = FrameKind.ACK
NAK = FrameKind.NAK
CNP = FrameKind.CNP
PFC = FrameKind.PFC
PATH_INFO = FrameKind.PATH_INFO

# Priorities of control traffic: PFC above everything (it must never wait behind what it pauses),
# transport feedback (ACK/NAK/CNP) and fabric signalling (request/grant) just below.
PFC_PRIORITY = 7
CONTROL_PRIORITY = 6

# Frames are addressed to a port of a device (a NIC), or to a device itself (a switch's control
# plane): address = device id << 8 | port index, with port index 255 meaning the device.
# A control frame on the wire: the 64-byte minimum Ethernet frame plus preamble and inter-frame gap.
CONTROL_FRAME_BYTES = 84

PORT_BITS = 8
DEVICE_ITSELF = (1 << PORT_BITS) - 1
MAX_PORTS = DEVICE_ITSELF  # port indices 0..254: the scenario schema allows no more


def address(device_id: int, port_index: int = DEVICE_ITSELF) -> int:
    return device_id << PORT_BITS | port_index


def device_of(addr: int) -> int:
    return addr >> PORT_BITS


class Frame:
    __slots__ = (
        "kind", "flow", "src", "dst", "nbytes", "packets", "mtu", "seq", "priority", "ecn",
        "created_ps", "corrupt_packets", "corrupt_bytes", "first_corrupt", "epoch", "op", "offset",
        "entropy", "ingress", "fields",
    )

    def __init__(
        self,
        kind: int,
        flow: int,
        src: int,
        dst: int,
        nbytes: int,
        mtu: int,
        seq: int = 0,
        priority: int = 0,
        created_ps: int = 0,
        op: int = -1,
        fields: dict[str, int] | None = None,
    ) -> None:
        self.kind = kind
        self.flow = flow  # flow index in the scenario, -1 for none
        self.src = src  # addresses (see address()): who sent it, who it is for
        self.dst = dst
        self.nbytes = nbytes  # bytes on the wire, headers included
        self.mtu = mtu
        self.packets = -(-nbytes // mtu) if nbytes else 1
        self.seq = seq
        self.priority = priority
        self.ecn = False
        self.created_ps = created_ps
        self.corrupt_packets = 0  # packets hit by bit errors (CRC fails at the receiver)
        self.corrupt_bytes = 0
        self.first_corrupt = -1  # index of the first corrupted packet in the frame, -1 if none
        self.epoch = 0  # the link's up-epoch when transmission started: a change means the frame died
        self.op = op  # the operation (collective step, etc.) this frame belongs to
        self.offset = -1  # byte offset of the frame's payload in its message (transport frames)
        self.entropy = 0  # the flow's UDP source port (RoCEv2): what ECMP hashes besides the addresses
        self.ingress: Any = None  # a switch's own bookkeeping while it holds the frame; never sent
        self.fields = fields  # small integer fields of control frames

    @property
    def last_packet_bytes(self) -> int:
        return self.nbytes - (self.packets - 1) * self.mtu

    def __repr__(self) -> str:
        return (f"Frame(kind={FrameKind(self.kind).name}, flow={self.flow}, seq={self.seq}, "
                f"{self.src}->{self.dst}, {self.nbytes}B/{self.packets}p)")


def pfc_frame(src: int, dst: int, priority: int, pause: bool, now: int) -> Frame:
    """An 802.1Qbb frame: XOFF (pause) or XON (resume) for one priority, to the link's far end."""
    return Frame(PFC, -1, src, dst, CONTROL_FRAME_BYTES, CONTROL_FRAME_BYTES, priority=PFC_PRIORITY,
                 created_ps=now, fields={"class": priority, "pause": int(pause)})


class Pausable(Protocol):
    """An egress whose priorities PFC stops and restarts (emulators.kernel.port.Port)."""

    def pause(self, priority: int) -> None: ...

    def resume(self, priority: int) -> None: ...


def honour_pfc(port: Pausable, frame: Frame) -> None:
    """What every device does with a PFC frame that arrives on ``port``: stop or restart that
    priority's egress (the frame on the wire finishes)."""
    assert frame.fields is not None
    if frame.fields["pause"]:
        port.pause(frame.fields["class"])
    else:
        port.resume(frame.fields["class"])
