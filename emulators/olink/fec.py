"""Light forward error correction on OLink ports, and what gets past it.

A Reed-Solomon code RS(n, k) over m-bit symbols corrects up to t = (n - k) // 2 symbol errors per
codeword. With independent bit errors at rate BER a symbol is wrong with probability
q = 1 - (1 - BER)^m, and a codeword fails when more than t of its n symbols are: the binomial upper
tail. A packet is lost to CRC when any of the codewords it spans fails. Below the code's threshold
(about 2e-4 for RS(272, 257)) that probability underflows to nothing; above it replays begin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emulators.model.scenario import LinkSpec, Scenario
from emulators.olink.spec import DEFAULT_FEC, KIND


@dataclass(frozen=True)
class Fec:
    n: int  # symbols per codeword
    k: int  # data symbols per codeword
    m: int  # bits per symbol

    @property
    def t(self) -> int:
        return (self.n - self.k) // 2

    @property
    def data_bits(self) -> int:
        return self.k * self.m

    def codeword_failure(self, ber: float) -> float:
        """P(more than t of n symbols wrong) at bit error rate ``ber``: the upper tail, summed from
        its first term (the terms fall fast), in logs so tiny probabilities don't underflow early."""
        if ber <= 0.0:
            return 0.0
        if ber >= 0.5:
            return 1.0
        log_q = math.log(-math.expm1(self.m * math.log1p(-ber)))  # log P(symbol wrong)
        log_ok = self.m * math.log1p(-ber)  # log P(symbol right)
        total = 0.0
        for i in range(self.t + 1, self.n + 1):
            log_term = (math.lgamma(self.n + 1) - math.lgamma(i + 1) - math.lgamma(self.n - i + 1)
                        + i * log_q + (self.n - i) * log_ok)
            term = math.exp(log_term)
            total += term
            if term < total * 1e-17:
                break
        return min(1.0, total)

    def packet_error_probability(self, ber: float, packet_bytes: int) -> float:
        """P(a packet of ``packet_bytes`` fails CRC after correction): any of its codewords fails."""
        p = self.codeword_failure(ber)
        if p == 0.0:
            return 0.0
        codewords = -(-packet_bytes * 8 // self.data_bits)
        return -math.expm1(codewords * math.log1p(-p)) if p < 1.0 else 1.0


def fec_of(option: object) -> Fec | None:
    """An OLink switch's ``fec`` option: false for none, a mapping {n, k, m}, or absent (the default)."""
    if option is False:
        return None
    if isinstance(option, dict):
        return Fec(int(option["n"]), int(option["k"]), int(option["m"]))
    return Fec(*DEFAULT_FEC)


def link_fec(scenario: Scenario, link: LinkSpec) -> Fec | None:
    """The FEC of a link with an OLink switch at one end (the first such end's setting); None otherwise."""
    for end in (link.a, link.z):
        device = scenario.device(end.device)
        if device.kind == KIND:
            return fec_of(device.options.get("fec"))
    return None
