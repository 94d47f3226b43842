"""Frames and bus messages to and from the wire: the only place kernel frames meet protobuf.

Flow ids are 64-bit on the wire (``sint64``; GPU message ids use 63 bits): zigzag varints read the
same as the ``sint32`` of old, so nothing else changes for frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from testbed.sync.v1 import sync_pb2

from emulators.kernel.frame import Frame
from emulators.kernel.link import Outgoing
from emulators.runtime import BusMessage, bus_json


def encode_batch(from_host: str, window: int, frames: list[Outgoing]) -> Any:
    batch = sync_pb2.FrameBatch(from_host=from_host, window=window)
    add = batch.frames.add
    for arrival, origin, seq, dst_device, dst_port, f in frames:
        wire = add(
            arrival_ps=arrival, origin=origin, origin_seq=seq, dst_device=dst_device, dst_port=dst_port,
            kind=f.kind, flow=f.flow, src=f.src, dst=f.dst, nbytes=f.nbytes, packets=f.packets,
            mtu=f.mtu, seq=f.seq, priority=f.priority, ecn=f.ecn, created_ps=f.created_ps,
            corrupt_packets=f.corrupt_packets, corrupt_bytes=f.corrupt_bytes, epoch=f.epoch, op=f.op,
            first_corrupt=f.first_corrupt, offset=f.offset, entropy=f.entropy,
        )
        if f.fields:
            wire.fields.update(f.fields)
    return batch


def decode_batch(batch: Any) -> list[Outgoing]:
    out: list[Outgoing] = []
    for w in batch.frames:
        f = Frame(w.kind, w.flow, w.src, w.dst, w.nbytes, w.mtu, seq=w.seq, priority=w.priority,
                  created_ps=w.created_ps, op=w.op, fields=dict(w.fields) if w.fields else None)
        f.packets = w.packets
        f.ecn = w.ecn
        f.corrupt_packets = w.corrupt_packets
        f.corrupt_bytes = w.corrupt_bytes
        f.epoch = w.epoch
        f.first_corrupt = w.first_corrupt
        f.offset = w.offset
        f.entropy = w.entropy
        out.append((w.arrival_ps, w.origin, w.origin_seq, w.dst_device, w.dst_port, f))
    return out


def encode_bus(messages: Iterable[BusMessage]) -> list[Any]:
    """Bus messages as ``BusMessage`` protos, for ``Report.bus`` and ``Advance.bus``."""
    return [sync_pb2.BusMessage(at_ps=at, key=key, payload_json=bus_json(payload)) for at, key, payload in messages]


def decode_bus(wire: Iterable[Any]) -> list[BusMessage]:
    """``BusMessage`` protos back to (at_ps, key, payload)."""
    return [(m.at_ps, m.key, json.loads(m.payload_json)) for m in wire]
