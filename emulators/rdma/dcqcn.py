"""DCQCN at the sender (the reaction point): cut on CNP, then recover with a timer and a byte counter.

Zhu et al., "Congestion Control for Large-Scale RDMA Deployments" (SIGCOMM 2015): on a CNP the
target rate takes the current rate, the current rate drops by alpha/2 and alpha rises by g; alpha
decays by (1 - g) every alpha-timer period without a CNP (applied when the next CNP comes, so it
costs no events). Each rate-timer expiry or byte-counter wrap is an increase event: the first F
are fast recovery (halfway back to the target), then additive increase, then hyper increase once
both counters have passed F. The limiter switches off at line rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulators.rdma.settings import NicSettings


class RateControl:
    __slots__ = ("settings", "line_bps", "rate_bps", "target_bps", "alpha", "schedule", "limited",
                 "timer_count", "byte_count", "bytes_since", "generation", "last_cnp_ps",
                 "cuts", "min_seen_bps", "ai_bps", "hai_bps", "floor_bps", "first_cut_ps")

    def __init__(self, settings: NicSettings, line_bps: int,
                 schedule: Callable[[int, Callable[[Any], None], Any], None]) -> None:
        self.settings = settings
        self.schedule = schedule  # (delay_ps, handler, arg): the owning device's clock
        self.line_bps = line_bps
        self.rate_bps = line_bps
        self.target_bps = line_bps
        self.alpha = 1.0
        self.limited = False
        self.timer_count = 0
        self.byte_count = 0
        self.bytes_since = 0
        self.generation = 0  # timers of an older generation are stale
        self.cuts = 0
        self.min_seen_bps = line_bps
        self.ai_bps = settings.ai_rate_bps or line_bps // 1000
        self.hai_bps = settings.hai_rate_bps or line_bps // 100
        self.floor_bps = settings.min_rate_bps or line_bps // 1000
        self.last_cnp_ps = 0
        self.first_cut_ps = -1  # when the first CNP cut the rate: how fast the sender reacted

    def set_line_rate(self, line_bps: int) -> None:
        """The NIC's usable line rate changed (a plane failed or came back)."""
        self.line_bps = line_bps
        if not self.limited:
            self.rate_bps = self.target_bps = line_bps
        else:
            self.rate_bps = min(self.rate_bps, line_bps)
            self.target_bps = min(self.target_bps, line_bps)

    def on_cnp(self, now: int) -> None:
        g = self.settings.dcqcn_g
        if self.cuts:  # alpha decayed once per alpha-timer period without a CNP since the last one
            self.alpha *= (1.0 - g) ** ((now - self.last_cnp_ps) // self.settings.alpha_timer_ps)
        self.last_cnp_ps = now
        if self.first_cut_ps < 0:
            self.first_cut_ps = now
        self.target_bps = self.rate_bps
        self.rate_bps = max(self.floor_bps, int(self.rate_bps * (1.0 - self.alpha / 2)))
        self.alpha = (1.0 - g) * self.alpha + g
        self.cuts += 1
        self.min_seen_bps = min(self.min_seen_bps, self.rate_bps)
        self.timer_count = self.byte_count = self.bytes_since = 0
        self.limited = True
        self.generation += 1
        self.schedule(self.settings.rate_timer_ps, self._rate_timer, self.generation)

    def restart_at(self, rate_bps: int) -> None:
        """Slow restart after a retransmission timeout (ConnectX roce_slow_restart): the rate drops to
        ``rate_bps`` and climbs back through the increase events, like after a cut."""
        self.target_bps = self.rate_bps = max(self.floor_bps, rate_bps)
        self.min_seen_bps = min(self.min_seen_bps, self.rate_bps)
        self.timer_count = self.byte_count = self.bytes_since = 0
        if self.rate_bps >= self.line_bps:
            return
        self.limited = True
        self.generation += 1
        self.schedule(self.settings.rate_timer_ps, self._rate_timer, self.generation)

    def on_sent(self, wire_bytes: int) -> None:
        if not self.limited:
            return
        self.bytes_since += wire_bytes
        while self.bytes_since >= self.settings.byte_counter and self.limited:
            self.bytes_since -= self.settings.byte_counter
            self.byte_count += 1
            self._increase()

    def _rate_timer(self, generation: int) -> None:
        if generation != self.generation or not self.limited:
            return
        self.timer_count += 1
        self._increase()
        if self.limited:
            self.schedule(self.settings.rate_timer_ps, self._rate_timer, generation)

    def _increase(self) -> None:
        f = self.settings.fast_recovery_steps
        most = max(self.timer_count, self.byte_count)
        least = min(self.timer_count, self.byte_count)
        if most < f:
            pass  # fast recovery: the target stays
        elif least >= f:
            self.target_bps += (least - f + 1) * self.hai_bps  # hyper increase
        else:
            self.target_bps += self.ai_bps  # additive increase
        self.target_bps = min(self.target_bps, self.line_bps)
        self.rate_bps = (self.target_bps + self.rate_bps) // 2
        if self.line_bps - self.rate_bps <= self.line_bps // 10_000:
            self.rate_bps = self.target_bps = self.line_bps
            self.limited = False
            self.generation += 1
