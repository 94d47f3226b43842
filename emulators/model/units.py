"""Quantities as written in scenario files, parsed to integers (bps, bytes, mm, ps), and back for humans.

Every parser raises ``ValueError`` whose message shows the value and how to write it instead, so the
loader can put it after a key path unchanged. Booleans are rejected everywhere: YAML reads ``yes`` and
``on`` as ``true``, and that is never a quantity.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_NUMBER = r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*"


@dataclass(frozen=True)
class _Quantity:
    what: str  # "a rate": completes "'400X' is not ..."
    examples: str
    pattern: re.Pattern[str]  # groups: number, unit
    scales: dict[str, int]  # unit as written -> integer scale
    integer_unit: str  # what the result counts, for "not a whole number of ..."
    bare_scale: int | None  # what a number without a unit means; None: only 0 may go without one
    most: int  # the largest value a scenario may give, in the integer unit
    most_text: str  # that value as a person reads it: "1 day (86400s)"

    def parse(self, value: Any) -> int:
        """The value times its unit's scale, exactly, as an integer."""
        problem = f"{shown(value)} is not {self.what}; write it like {self.examples}"
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(problem)
        if isinstance(value, int):
            number, unit = Decimal(value), ""
        else:
            match = self.pattern.fullmatch(value.strip())
            if match is None:
                raise ValueError(problem)
            number, unit = Decimal(match.group("number")), match.group("unit") or ""
        if unit == "" and self.bare_scale is None:
            if number != 0:
                raise ValueError(f"{shown(value)} has no unit; write it like {self.examples}")
            return 0
        scale = self.bare_scale if unit == "" else self.scales.get(unit)
        if scale is None:
            raise ValueError(problem)
        amount = number * scale
        if amount != amount.to_integral_value():
            raise ValueError(f"{shown(value)} is not a whole number of {self.integer_unit}")
        if amount < 0:
            raise ValueError(f"{shown(value)} is negative; write {self.what} like {self.examples}")
        if amount > self.most:
            raise ValueError(f"{shown(value)} is more than {self.most_text}, the most {self.what} in a scenario may be")
        return int(amount)


RATE = _Quantity(
    what="a rate",
    examples="400G, 100Gbps, 1.6T",
    pattern=re.compile(_NUMBER + r"(?P<unit>[kKmMgGtT]?)(?:bps|b/s|bit/s)?"),  # no B: bytes/s would mislead
    scales={"k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9, "t": 10**12, "T": 10**12},
    integer_unit="bits per second",
    bare_scale=1,
    most=10**18,  # a million Tb/s: far above any link or NIC, yet "as fast as can be" (tests give a mesh 1000000T)
    most_text="1000000T",
)
SIZE = _Quantity(
    what="a size",
    examples="1500B, 64KiB, 4MiB, 2.5MB",
    pattern=re.compile(_NUMBER + r"(?P<unit>[kKMGT]?i?B)?"),  # capital B only: b would be bits
    scales={
        "B": 1,
        **{"kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12},
        **{"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40},
    },
    integer_unit="bytes",
    bare_scale=1,
    most=2**40,  # 1 TiB: more than any buffer, message or collective buffer a GPU or switch holds
    most_text="1TiB",
)
LENGTH = _Quantity(
    what="a length",
    examples="329km, 100m, 2.5m, 50cm",
    pattern=re.compile(_NUMBER + r"(?P<unit>[a-zA-Z]*)"),  # case matters: Mm would be megametres
    scales={"km": 10**6, "m": 10**3, "cm": 10, "mm": 1},
    integer_unit="millimetres",
    bare_scale=None,
    most=40_000 * 10**6,  # the Earth's circumference: no fibre is longer
    most_text="40000km",
)
TIME = _Quantity(
    what="a time",
    examples="50ms, 1.47ms, 10us, 100ns, 10min",
    pattern=re.compile(_NUMBER + r"(?P<unit>[a-zA-Zµμ]*)"),  # µ is the micro sign, μ the Greek letter
    scales={"min": 60 * 10**12, "s": 10**12, "ms": 10**9, "us": 10**6, "µs": 10**6, "μs": 10**6, "ns": 10**3,
            "ps": 1},
    integer_unit="picoseconds",
    bare_scale=None,
    # 1 day: far beyond any run the emulation finishes, and sums of times stay well below NEVER (2^62 ps, 53 days)
    most=86_400 * 10**12,
    most_text="1 day (86400s)",
)

_BER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def shown(value: Any) -> str:
    """A value as the user wrote it, short enough for a one-line message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value) if isinstance(value, str | int | float) else f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def parse_rate(value: Any) -> int:
    """A line or flow rate in bits per second: "400G", "100Gbps", "400Gb/s", "1.6T"; a bare int is bps."""
    bps = RATE.parse(value)
    if bps == 0:
        raise ValueError(f"{shown(value)} is zero; a rate must be above zero, like {RATE.examples}")
    return bps


def parse_size(value: Any) -> int:
    """A size in bytes: "64KiB", "4MiB", "1500B", "1500", 1500; KB, MB, GB are powers of ten."""
    return SIZE.parse(value)


def parse_length_mm(value: Any) -> int:
    """A fiber or cable length in millimetres: "329km", "100m", "2.5m", "50cm", "3mm", or 0."""
    return LENGTH.parse(value)


def parse_time_ps(value: Any) -> int:
    """A time in picoseconds: "50ms", "1.47ms", "10us", "10µs", "100ns", "5ps", "2s", or 0."""
    return TIME.parse(value)


def parse_ber(value: Any) -> float:
    """A bit error ratio in [0, 1): 1e-9, 0, or the string "1e-9" (how YAML reads 1e-9 without a dot)."""
    problem = f"{shown(value)} is not a bit error ratio; write a number from 0 up to 1 (not 1), like 1e-12"
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, str):
        if _BER.fullmatch(value.strip()) is None:
            raise ValueError(problem)
        value = float(value)
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(problem)
    return float(value)


def _number_text(value: Decimal, decimals: int) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return f"{value:.{decimals}f}"


def format_time(ps: int) -> str:
    """Picoseconds in the largest unit that keeps the number at one or more: "1.470 ms", "12.5 µs"."""
    for scale, unit in ((10**12, "s"), (10**9, "ms"), (10**6, "µs"), (10**3, "ns")):
        if abs(ps) >= scale:
            value = Decimal(ps) / scale
            return f"{_number_text(value, 3 if abs(value) < 10 else 1)} {unit}"
    return f"{ps} ps"


def format_rate(bps: int) -> str:
    """Bits per second in decimal units: "400 Gb/s", "1.6 Tb/s"."""
    for scale, unit in ((10**12, "Tb/s"), (10**9, "Gb/s"), (10**6, "Mb/s"), (10**3, "kb/s")):
        if abs(bps) >= scale:
            text = f"{Decimal(bps) / scale:.3f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{bps} b/s"


def format_bytes(n: int) -> str:
    """Bytes in binary units: "64 KiB", "1.50 GiB", "512 B"."""
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{_number_text(Decimal(n) / scale, 2)} {unit}"
    return f"{n} B"
