"""Frames: the unit that crosses links.

A data frame stands for a run of MTU packets of one flow (a chunk); control frames are single small
packets (ACK/NAK, CNP, PFC, credit, request/grant, APS, path info) that ride the same links.
"""

from __future__ import annotations

from enum import IntEnum


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


class Frame:
    __slots__ = (
        "kind", "flow", "src", "dst", "nbytes", "packets", "mtu", "seq", "priority", "ecn",
        "created_ps", "corrupt_packets", "corrupt_bytes", "epoch", "op", "fields",
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
        self.src = src  # device ids
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
        self.epoch = 0  # the link's up-epoch when transmission started: a change means the frame died
        self.op = op  # the operation (collective step, etc.) this frame belongs to
        self.fields = fields  # small integer fields of control frames

    @property
    def last_packet_bytes(self) -> int:
        return self.nbytes - (self.packets - 1) * self.mtu

    def __repr__(self) -> str:
        return (f"Frame(kind={FrameKind(self.kind).name}, flow={self.flow}, seq={self.seq}, "
                f"{self.src}->{self.dst}, {self.nbytes}B/{self.packets}p)")
