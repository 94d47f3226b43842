"""When a queue pair's retransmit timer fires, how long it waits next, and when the QP gives up.

- InfiniBand RC (IBA vol. 1, 9.7.6.1.3 and 9.9.2): the Local ACK Timeout restarts whenever the
  responder acknowledges progress; each expiry without progress retransmits from the oldest
  unacknowledged packet, and the (retry count + 1)-th expiry in a row puts the QP in the error state.
- ConnectX timer spread (an option): NVIDIA documents that a timeout may fire up to 4x after its
  configured value; each expiry draws the next timer's factor from [1, spread], seeded per QP.
- ConnectX adaptive retransmission (an option, ``AdpProfile``): the first timeout is drawn from the
  profile's initial exponents and used once; then the range that holds it (or the start range) uses
  each exponent ``retries`` times and doubles it up to the range's end, then goes on to the next range.
  Once the last range is spent the QP errors (the profile's retries replace the IB retry count).
  Progress starts the profile over with a fresh initial timeout (NVIDIA's dec_mode, which steps the
  timeout down instead, is not modelled).
- Excessive retransmissions (an option, WinOF-2's EXT_QP_MAX_RETRY_LIMIT/_PERIOD): more than
  ``retry_limit`` retransmissions (timeouts, NAK sequence errors, probes) within ``retry_period``
  error the QP as if the retry count were exceeded.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from emulators.rdma.settings import AdpProfile, NicSettings

if TYPE_CHECKING:
    from numpy.random import Generator

    from emulators.rdma.path import Path


def format_ps(ps: int) -> str:
    """A duration for an error message: 4.29 s, 67.1 ms, 262 us."""
    for unit, scale in (("s", 10**12), ("ms", 10**9), ("us", 10**6)):
        if ps >= scale:
            return f"{ps / scale:.3g} {unit}"
    return f"{ps / 10**3:.3g} ns"


class RetryPolicy:
    """One QP's timers: the IB Local ACK Timeout and retry count, or an ADP profile, with the
    documented spread; and the excessive-retransmission limit."""

    __slots__ = ("timeout_ps", "retry_cnt", "spread", "adp", "rng", "limit", "period_ps", "recent")

    def __init__(self, timeout_ps: int, retry_cnt: int, settings: NicSettings, rng: Generator | None) -> None:
        self.timeout_ps = timeout_ps
        self.retry_cnt = retry_cnt
        self.spread = settings.timer_spread
        self.adp: AdpProfile | None = settings.adaptive_retransmission
        self.rng = rng  # only when a draw is needed (spread or ADP)
        self.limit = settings.retry_limit if settings.retry_period_ps > 0 else 0  # a limit needs its period
        self.period_ps = settings.retry_period_ps
        self.recent: deque[int] = deque()  # times of retransmissions within the period

    def start(self, path: Path) -> None:
        """A fresh timer episode: the path has just made progress (or never sent)."""
        adp = self.adp
        if adp is not None:
            assert self.rng is not None
            path.adp_exponent = adp.init_low + int(self.rng.integers(0, adp.init_size))
            path.adp_range = -1  # the initial timeout, used once
            path.adp_used = 0
        path.arm_ps = self._spread(self._nominal(path))

    def _nominal(self, path: Path) -> int:
        adp = self.adp
        return self.timeout_ps if adp is None else adp.time_base_ps << path.adp_exponent

    def _spread(self, nominal: int) -> int:
        if self.spread <= 1.0:
            return nominal
        assert self.rng is not None
        return round(nominal * (1.0 + (self.spread - 1.0) * float(self.rng.random())))

    def expired(self, path: Path) -> str | None:
        """The timer expired without progress: None and the next timer set, or why the QP errors."""
        path.retries += 1
        adp = self.adp
        if adp is None:
            if path.retries > self.retry_cnt:
                return (f"retry count exceeded: {self.retry_cnt} retries of {format_ps(self.timeout_ps)} "
                        "without an acknowledgement")
        elif not self._adp_next(adp, path):
            return f"adaptive retransmission profile exhausted after {path.retries} timeouts without an acknowledgement"
        path.arm_ps = self._spread(self._nominal(path))
        return None

    @staticmethod
    def _adp_next(adp: AdpProfile, path: Path) -> bool:
        """Move to the next timeout of the profile; False once it is spent."""
        if path.adp_range < 0:  # the initial timeout fired: continue in its range, or at the start range
            for index, span in enumerate(adp.ranges):
                if span.low <= path.adp_exponent < span.low + span.size:
                    path.adp_range, path.adp_used = index, 0
                    return True
            path.adp_range, path.adp_exponent, path.adp_used = adp.start_range, adp.ranges[adp.start_range].low, 0
            return True
        span = adp.ranges[path.adp_range]
        path.adp_used += 1
        if path.adp_used < span.retries:
            return True
        path.adp_used = 0
        path.adp_exponent += 1
        if path.adp_exponent < span.low + span.size:
            return True
        path.adp_range += 1
        if path.adp_range >= len(adp.ranges):
            return False
        path.adp_exponent = max(path.adp_exponent, adp.ranges[path.adp_range].low)
        return True

    def retransmitted(self, now: int) -> str | None:
        """A retransmission (timeout, NAK or probe) happened now: why the QP errors, if it now exceeds
        the excessive-retransmission limit."""
        if not self.limit:
            return None
        recent = self.recent
        recent.append(now)
        while recent[0] <= now - self.period_ps:
            recent.popleft()
        if len(recent) > self.limit:
            return f"excessive retransmissions: {len(recent)} within {format_ps(self.period_ps)} (limit {self.limit})"
        return None
