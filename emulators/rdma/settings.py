"""RDMA NIC settings and RoCEv2 framing: what every option means, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulators.kernel.vtime import PS_PER_NS, PS_PER_US

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

# InfiniBand Architecture Specification vol. 1, 9.7.6.1.3 (Local ACK Timeout): 4.096 us x 2^exponent
ACK_TIMEOUT_UNIT_PS = 4096 * PS_PER_NS
MAX_TIMER_SPREAD = 4.0  # NVIDIA, "Adaptive Retransmission: Parameters Control" (2025): up to 4x the configured timeout


def local_ack_timeout_ps(exponent: int) -> int:
    """The IB Local ACK Timeout for a QP's timeout exponent (5 bits: 0..31)."""
    return ACK_TIMEOUT_UNIT_PS << exponent


@dataclass(frozen=True)
class AdpRange:
    """One timeout range of a ConnectX adaptive-retransmission profile: exponents [low, low + size),
    each used ``retries`` times before it doubles."""

    low: int
    size: int
    retries: int


@dataclass(frozen=True)
class AdpProfile:
    """A ConnectX adaptive-retransmission (ADP) profile (NVIDIA, "Adaptive Retransmission: Parameters
    Control", 2025): timeouts of ``time_base_ps`` x 2^exponent, the first drawn from [init_low,
    init_low + init_size) and used once, then the ranges in order. NVIDIA publishes no default profile
    (profile 0 is reserved), so every number is the scenario's."""

    time_base_ps: int
    init_low: int
    init_size: int
    ranges: tuple[AdpRange, ...]
    start_range: int = 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AdpProfile:
        return cls(time_base_ps=options["time_base"], init_low=options["init_low"], init_size=options["init_size"],
                   ranges=tuple(AdpRange(r["low"], r["size"], r["retries"]) for r in options["ranges"]),
                   start_range=options.get("start_range", 0))


@dataclass(frozen=True)
class Cooperation:
    """End-network co-operation (端网协同): what the NIC does with what a gateway tells it of its path.
    A stock NIC does none of this; each acts only on a gateway's path information (on by default there)."""

    distance: bool = True  # the path's round trip sizes the in-flight window (and the NCCL transport's buffers)
    ber: bool = True  # a loss on a path with a told BER is corruption: a probe retransmits it, no slow restart
    protection: bool = True  # a told protection switch retransmits at once from the oldest unacknowledged packet


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
    # ConnectX loss behaviour. NVIDIA documents these but publishes no numbers for them, so each is off
    # unless the scenario gives its parameters.
    timer_spread: float = 1.0  # a timeout fires between 1x and this x its nominal value (at most 4)
    adaptive_retransmission: AdpProfile | None = None  # ROCE_ACCL roce_adp_retrans_en with this profile
    slow_restart_rate_bps: int = 0  # ROCE_ACCL roce_slow_restart_en: after a timeout the rate restarts here
    # excessive retransmissions (WinOF-2 EXT_QP_MAX_RETRY_LIMIT / _PERIOD): more than ``retry_limit`` in
    # ``retry_period_ps`` errors the QP as if the retry count were exceeded; 0: off
    retry_limit: int = 0
    retry_period_ps: int = 0
    cooperation: Cooperation = field(default_factory=Cooperation)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> NicSettings:
        renamed = {"rto": "rto_ps", "rtt": "rtt_ps", "cnp_interval": "cnp_interval_ps",
                   "alpha_timer": "alpha_timer_ps", "rate_timer": "rate_timer_ps", "ai_rate": "ai_rate_bps",
                   "hai_rate": "hai_rate_bps", "min_rate": "min_rate_bps", "slow_restart_rate": "slow_restart_rate_bps",
                   "retry_period": "retry_period_ps"}
        values = {renamed.get(k, k): v for k, v in options.items()}
        if "adaptive_retransmission" in values:
            values["adaptive_retransmission"] = AdpProfile.from_options(values["adaptive_retransmission"])
        if "cooperation" in values:
            values["cooperation"] = Cooperation(**values["cooperation"])
        return cls(**values)

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
