"""What the management services (gNMI, the control service) take from a client: JSON bounded in
nesting and digits, and messages quoting it cut to fit a gRPC status."""

from __future__ import annotations

import json
import math
from typing import Any

# JSON values from a client (a Set's value here, a fault in the control service), INVALID_ARGUMENT beyond
MAX_JSON_DEPTH = 32  # nesting: a Set's container or a fault needs three or four
MAX_JSON_DIGITS = 40  # digits of an integer: 2**128 has 39; int() of a long digit string is slow (and limited)
MAX_MESSAGE_CHARS = 500  # of an error message quoting a client's text: clients take 8 KiB of status, percent-encoded


def clipped(message: str) -> str:
    """``message`` cut to MAX_MESSAGE_CHARS: what fits a gRPC status."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS - 1] + "…"


def read_json(text: str | bytes, what: str) -> Any:
    """JSON from a management client; ValueError saying what of ``what`` is wrong: not JSON, NaN or a
    number out of range, an integer of more than MAX_JSON_DIGITS digits, or nesting deeper than
    MAX_JSON_DEPTH (the size is the caller's to bound)."""

    def integer(digits: str) -> int:
        count = len(digits.lstrip("-"))
        if count > MAX_JSON_DIGITS:
            raise ValueError(f"{what} has an integer of {count} digits; at most {MAX_JSON_DIGITS} are taken")
        return int(digits)

    def real(digits: str) -> float:
        number = float(digits)
        if not math.isfinite(number):
            raise ValueError(f"{what} has {digits[:24]}, beyond the range of a number")
        return number

    def constant(name: str) -> Any:
        raise ValueError(f"{what} has {name}, which is not a number")

    deep = ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text, parse_int=integer, parse_float=real, parse_constant=constant)
    except RecursionError:
        raise deep from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} is not JSON: {e}") from None
    containers = [(value, 1)]
    while containers:
        item, depth = containers.pop()
        inner = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if inner is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise deep
        containers += [(x, depth + 1) for x in inner]
    return value
