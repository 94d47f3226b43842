"""RDMA NIC settings and RoCEv2 framing: what every option means, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulators.kernel.vtime import PS_PER_US

# Per packet on the wire: Ethernet 14 + IPv4 20 + UDP 8 + BTH 12 + ICRC 4 + FCS 4 = 62 bytes of
# headers, plus 8 bytes of preamble/SFD and a 12-byte inter-frame gap.
ROCE_HEADER_BYTES = 62
WIRE_GAP_BYTES = 20
PACKET_OVERHEAD_BYTES = ROCE_HEADER_BYTES + WIRE_GAP_BYTES
FIRST_EPHEMERAL_PORT = 49152

FALLBACK_RTT_PS = 10 * PS_PER_US  # when the topology gives no path (e.g. a peer across a gateway)
# The in-flight window covers four bandwidth-delay products of the idle path: room for queueing
# on the way (and for GSE's request/grant round trip at the source leaf) without stalling the pipe.
WINDOW_BDPS = 4

GO_BACK_N = "go-back-n"
SELECTIVE_REPEAT = "selective-repeat"


@dataclass(frozen=True)
class NicSettings:
    mtu: int = 4096  # payload bytes per packet
    chunk: int = 64 * 1024  # payload bytes per frame
    recovery: str = GO_BACK_N
    rto_ps: int = 4096 * 2**14 * 1000  # 4.096 us x 2^14 = 67.1 ms
    retries: int = 7
    rtt_ps: int = 0  # 0: the path's round trip (propagation, switch latency), from the topology
    window: int = 0  # 0: WINDOW_BDPS x the path's bandwidth-delay product
    # DCQCN as the paper sets it (N = 50 us, K = T = 55 us, B = 10 MB, F = 5, g = 1/256), with the
    # increase steps scaled from its 40 Gb/s NICs to the line rate (R_AI 40 Mb/s = line / 1000).
    dcqcn: bool = True
    cnp_interval_ps: int = 50 * PS_PER_US
    dcqcn_g: float = 1 / 256
    alpha_timer_ps: int = 55 * PS_PER_US
    rate_timer_ps: int = 55 * PS_PER_US
    byte_counter: int = 10 * 1024 * 1024
    fast_recovery_steps: int = 5
    ai_rate_bps: int = 0  # 0: line rate / 1000
    hai_rate_bps: int = 0  # 0: line rate / 100
    min_rate_bps: int = 0  # 0: line rate / 1000

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> NicSettings:
        renamed = {"rto": "rto_ps", "rtt": "rtt_ps", "cnp_interval": "cnp_interval_ps",
                   "alpha_timer": "alpha_timer_ps", "rate_timer": "rate_timer_ps", "ai_rate": "ai_rate_bps",
                   "hai_rate": "hai_rate_bps", "min_rate": "min_rate_bps"}
        return cls(**{renamed.get(k, k): v for k, v in options.items()})

    @property
    def wire_mtu(self) -> int:
        return self.mtu + PACKET_OVERHEAD_BYTES

    def packets(self, payload: int) -> int:
        return -(-payload // self.mtu)

    def wire_bytes(self, payload: int) -> int:
        return payload + self.packets(payload) * PACKET_OVERHEAD_BYTES

    def payload_of(self, first: int, last: int, frame_payload: int) -> int:
        """Payload bytes of packets [first, last) of a frame carrying ``frame_payload`` bytes."""
        return min(last * self.mtu, frame_payload) - first * self.mtu

    def goodput_fraction(self) -> float:
        """Payload share of the wire for full packets: the ceiling of goodput over line rate."""
        return self.mtu / self.wire_mtu
