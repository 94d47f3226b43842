"""Unit parsers turn what people write into exact integers, and say how to write it when they cannot."""

from __future__ import annotations

import pytest

from emulators.model.units import (
    format_bytes,
    format_rate,
    format_time,
    parse_ber,
    parse_length_mm,
    parse_rate,
    parse_size,
    parse_time_ps,
)


@pytest.mark.parametrize(
    ("written", "bps"),
    [
        ("400G", 400_000_000_000),
        ("400Gbps", 400_000_000_000),
        ("400Gb/s", 400_000_000_000),
        ("100M", 100_000_000),
        ("1.6T", 1_600_000_000_000),
        ("25g", 25_000_000_000),
        ("10 Gbit/s", 10_000_000_000),
        (1000, 1000),
        ("1000", 1000),
    ],
)
def test_parse_rate(written: object, bps: int) -> None:
    assert parse_rate(written) == bps


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("64KiB", 65536),
        ("4MiB", 4 * 2**20),
        ("1GiB", 2**30),
        ("1500B", 1500),
        ("1500", 1500),
        (1500, 1500),
        ("64KB", 64_000),
        ("1GB", 1_000_000_000),
        ("2.5MB", 2_500_000),
        ("1.5KiB", 1536),
        (0, 0),
    ],
)
def test_parse_size(written: object, size: int) -> None:
    assert parse_size(written) == size


@pytest.mark.parametrize(
    ("written", "mm"),
    [("329km", 329_000_000), ("100m", 100_000), ("2.5m", 2500), ("50cm", 500), ("3mm", 3), (0, 0), ("0", 0)],
)
def test_parse_length_mm(written: object, mm: int) -> None:
    assert parse_length_mm(written) == mm


@pytest.mark.parametrize(
    ("written", "ps"),
    [
        ("50ms", 50_000_000_000),
        ("1.47ms", 1_470_000_000),
        ("10us", 10_000_000),
        ("10µs", 10_000_000),  # micro sign
        ("10μs", 10_000_000),  # Greek mu
        ("100ns", 100_000),
        ("5ps", 5),
        ("2s", 2_000_000_000_000),
        ("0.1ms", 100_000_000),  # exact: 0.1 is not exact in binary floating point
        (0, 0),
        ("0s", 0),
    ],
)
def test_parse_time_ps(written: object, ps: int) -> None:
    assert parse_time_ps(written) == ps


@pytest.mark.parametrize(
    ("written", "ber"), [("1e-9", 1e-9), (1e-9, 1e-9), (0, 0.0), ("0.5", 0.5), ("1E-12", 1e-12)]
)
def test_parse_ber(written: object, ber: float) -> None:
    assert parse_ber(written) == ber
    assert isinstance(parse_ber(written), float)


@pytest.mark.parametrize(
    ("parse", "written", "words"),
    [
        (parse_rate, "400X", ["'400X' is not a rate", "400G"]),
        (parse_rate, "400GBps", ["not a rate"]),  # bytes per second: refused rather than guessed
        (parse_rate, "0G", ["zero"]),
        (parse_rate, 0, ["zero"]),
        (parse_rate, "-1G", ["negative"]),
        (parse_rate, "1.5", ["whole number of bits"]),
        (parse_rate, 1.5e9, ["not a rate"]),
        (parse_rate, True, ["true is not a rate"]),
        (parse_rate, None, ["not a rate"]),
        (parse_size, "64Kb", ["not a size", "64KiB"]),
        (parse_size, "1.3B", ["whole number of bytes"]),
        (parse_size, "-1", ["negative"]),
        (parse_size, "1K", ["not a size"]),
        (parse_size, False, ["false is not a size"]),
        (parse_length_mm, "5", ["no unit", "329km"]),
        (parse_length_mm, 5, ["no unit"]),
        (parse_length_mm, "3 miles", ["not a length"]),
        (parse_length_mm, "0.1mm", ["whole number of millimetres"]),
        (parse_length_mm, "-3m", ["negative"]),
        (parse_length_mm, True, ["not a length"]),
        (parse_time_ps, "1.5ps", ["whole number of picoseconds"]),
        (parse_time_ps, "10", ["no unit", "50ms"]),
        (parse_time_ps, "5MS", ["not a time"]),
        (parse_time_ps, "-1ms", ["negative"]),
        (parse_time_ps, True, ["not a time"]),
        (parse_ber, 1, ["not a bit error ratio"]),
        (parse_ber, -0.1, ["not a bit error ratio"]),
        (parse_ber, "1e-9x", ["not a bit error ratio"]),
        (parse_ber, "nan", ["not a bit error ratio"]),
        (parse_ber, float("inf"), ["not a bit error ratio"]),
        (parse_ber, True, ["not a bit error ratio"]),
    ],
)
def test_parsers_say_what_is_wrong(parse: object, written: object, words: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        parse(written)  # type: ignore[operator]
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("ps", "text"),
    [
        (1_470_000_000, "1.470 ms"),
        (12_500_000, "12.5 µs"),
        (50_000_000_000, "50 ms"),
        (2_000_000_000_000, "2 s"),
        (100_000, "100 ns"),
        (5, "5 ps"),
    ],
)
def test_format_time(ps: int, text: str) -> None:
    assert format_time(ps) == text


def test_format_rate_and_bytes() -> None:
    assert format_rate(400_000_000_000) == "400 Gb/s"
    assert format_rate(1_600_000_000_000) == "1.6 Tb/s"
    assert format_rate(100_000_000) == "100 Mb/s"
    assert format_rate(12) == "12 b/s"
    assert format_bytes(65536) == "64 KiB"
    assert format_bytes(3 * 2**29) == "1.50 GiB"
    assert format_bytes(512) == "512 B"


@pytest.mark.parametrize("written", ["400G", "1.6T", "100Mbps"])
def test_formatted_rate_parses_back(written: str) -> None:
    bps = parse_rate(written)
    assert parse_rate(format_rate(bps).replace(" ", "").replace("b/s", "")) == bps
