"""Quantities with units: known answers, rejections and the format/parse round trip."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cost_models.units import (
    QuantityError,
    format_bandwidth,
    format_bytes,
    format_flops_rate,
    format_seconds,
    parse_bandwidth,
    parse_bytes,
    parse_flops_rate,
    parse_seconds,
)


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("16 GiB", 16 * 2**30),
        ("16 GiB", 17179869184),
        ("40 GB", 40 * 10**9),
        ("1.5 KiB", 1536),
        ("512 B", 512),
        ("2 TiB", 2 * 2**40),
        ("3 MB", 3 * 10**6),
        ("16GiB", 16 * 2**30),
        ("  16   GiB ", 16 * 2**30),
        ("1e3", 1000),
        (1024, 1024),
        (2**60 + 1, 2**60 + 1),
        (1024.4, 1024),
    ],
)
def test_parse_bytes_known_answers(text: object, num_bytes: int) -> None:
    assert parse_bytes(text) == num_bytes
    assert isinstance(parse_bytes(text), int)


@pytest.mark.parametrize(
    ("text", "bytes_per_s"),
    [
        ("25 Gbit/s", 3.125e9),
        ("3.125 Gbit/s", 25e9 / 64),
        ("400 Gbit/s", 50e9),
        ("900 GB/s", 900e9),
        ("3.35 TB/s", 3.35e12),
        ("8 bit/s", 1.0),
        ("100 Mbit/s", 12.5e6),
        ("1 GiB/s", 2.0**30),
        ("150e9", 150e9),
        (1e9, 1e9),
    ],
)
def test_parse_bandwidth_known_answers(text: object, bytes_per_s: float) -> None:
    assert parse_bandwidth(text) == bytes_per_s


@pytest.mark.parametrize(
    ("text", "flops_per_s"),
    [
        ("125 TFLOP/s", 125e12),
        ("15.7 TFLOP/s", 15.7e12),
        ("125 TFLOPS", 125e12),
        ("1.2 PFLOP/s", 1.2e15),
        ("500 GFLOP/s", 500e9),
        ("7 FLOP/s", 7.0),
    ],
)
def test_parse_flops_rate_known_answers(text: str, flops_per_s: float) -> None:
    assert parse_flops_rate(text) == flops_per_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5 us", 5e-6),
        ("5 µs", 5e-6),  # micro sign
        ("5 μs", 5e-6),  # Greek mu
        ("20 us", 20e-6),
        ("1.5 ms", 1.5e-3),
        ("100 ns", 100e-9),
        ("2 s", 2.0),
        ("0 us", 0.0),
        (0, 0.0),
    ],
)
def test_parse_seconds_known_answers(text: object, seconds: float) -> None:
    assert parse_seconds(text) == seconds


BANDWIDTH = "a bandwidth such as '25 Gbit/s'"


@pytest.mark.parametrize(
    ("value", "expected", "found"),
    [
        ("fast", BANDWIDTH, "'fast'"),
        ("25 GB", BANDWIDTH, "'25 GB'"),  # a size, not a bandwidth
        ("25 Gb/s", BANDWIDTH, "'25 Gb/s'"),  # bits are spelled "bit"
        ("25 gbit/s", BANDWIDTH, "'25 gbit/s'"),
        ("125 TFLOP/s", BANDWIDTH, "'125 TFLOP/s'"),
        ("25 Gbit/s extra", BANDWIDTH, "'25 Gbit/s extra'"),
        ("", BANDWIDTH, "''"),
        ("nan", BANDWIDTH, "'nan'"),
        ("inf GB/s", BANDWIDTH, "'inf GB/s'"),
        (True, BANDWIDTH, "True"),
        (None, BANDWIDTH, "nothing"),
        ([25], BANDWIDTH, "[25]"),
        (math.nan, "a finite bandwidth such as '25 Gbit/s'", "nan"),
        (math.inf, "a finite bandwidth such as '25 Gbit/s'", "inf"),
        ("1e9999 GB/s", "a finite bandwidth such as '25 Gbit/s'", "'1e9999 GB/s'"),
        ("-25 Gbit/s", "a non-negative bandwidth such as '25 Gbit/s'", "'-25 Gbit/s'"),
        (-1, "a non-negative bandwidth such as '25 Gbit/s'", "-1"),
        ("0 GB/s", "a positive bandwidth such as '25 Gbit/s'", "'0 GB/s'"),
    ],
)
def test_parse_bandwidth_rejects_with_expected_and_found(
    value: object, expected: str, found: str
) -> None:
    with pytest.raises(QuantityError) as caught:
        parse_bandwidth(value, positive=True)
    assert (caught.value.expected, caught.value.found) == (expected, found)
    assert str(caught.value) == f"expected {expected}, found {found}"


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (parse_bytes, "16 GiB/s", "expected a size such as '16 GiB', found '16 GiB/s'"),
        (parse_bytes, "16 gib", "expected a size such as '16 GiB', found '16 gib'"),
        (parse_bytes, "16 Gbit", "expected a size such as '16 GiB', found '16 Gbit'"),
        (parse_flops_rate, "125 T", "expected a compute rate such as '125 TFLOP/s', found '125 T'"),
        (parse_flops_rate, "125 tflops", "expected a compute rate such as '125 TFLOP/s', found "
         "'125 tflops'"),
        (parse_seconds, "5 sec", "expected a time such as '5 us', found '5 sec'"),
        (parse_seconds, "5 GB", "expected a time such as '5 us', found '5 GB'"),
        (parse_seconds, "5 US", "expected a time such as '5 us', found '5 US'"),
    ],
)  # fmt: skip
def test_wrong_kind_of_unit_is_rejected(
    parse: Callable[[object], object], value: str, message: str
) -> None:
    with pytest.raises(QuantityError) as caught:
        parse(value)
    assert str(caught.value) == message


def test_zero_is_allowed_unless_positive() -> None:
    assert parse_seconds("0 us") == 0.0
    assert parse_bytes(0) == 0
    with pytest.raises(QuantityError, match="expected a positive time"):
        parse_seconds("0 us", positive=True)
    with pytest.raises(QuantityError, match="expected a positive size"):
        parse_bytes("0.2 B", positive=True)  # rounds to zero bytes


def test_quantity_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_bytes("lots")


@pytest.mark.parametrize(
    ("formatted", "expected"),
    [
        (format_bytes(17179869184), "16.0 GiB"),
        (format_bytes(512), "512 B"),
        (format_bytes(1536), "1.5 KiB"),
        (format_bytes(40 * 2**30, digits=0), "40 GiB"),
        (format_bandwidth(3.125e9), "3.1 GB/s"),
        (format_bandwidth(3.125e9, digits=3), "3.125 GB/s"),
        (format_flops_rate(125e12), "125.0 TFLOP/s"),
        (format_flops_rate(15.7e12), "15.7 TFLOP/s"),
        (format_seconds(5e-6), "5.0 us"),
        (format_seconds(0.0123), "12.3 ms"),
        (format_seconds(90.0), "90.0 s"),
        (format_seconds(0.0), "0 s"),
        (format_seconds(-2e-3), "-2.0 ms"),
    ],
)
def test_formatters_known_answers(formatted: str, expected: str) -> None:
    assert formatted == expected


def _close_after_rounding(parsed: float, value: float, digits: int) -> bool:
    # The formatter picks a unit in which the number is >= 1 and rounds it to `digits` decimals,
    # so the relative error is at most half a unit in the last decimal.
    return math.isclose(parsed, value, rel_tol=0.5 * 10.0**-digits * (1 + 1e-9), abs_tol=1e-300)


@given(num_bytes=st.integers(min_value=0, max_value=2**62), digits=st.integers(0, 6))
def test_bytes_round_trip(num_bytes: int, digits: int) -> None:
    parsed = parse_bytes(format_bytes(num_bytes, digits))
    if num_bytes < 1024:
        assert parsed == num_bytes
    else:
        assert _close_after_rounding(parsed, num_bytes, digits)


@given(
    value=st.floats(min_value=1.0, max_value=1e18, allow_nan=False),
    digits=st.integers(0, 6),
)
def test_bandwidth_and_flops_rate_round_trip(value: float, digits: int) -> None:
    assert _close_after_rounding(parse_bandwidth(format_bandwidth(value, digits)), value, digits)
    assert _close_after_rounding(parse_flops_rate(format_flops_rate(value, digits)), value, digits)


@given(value=st.floats(min_value=1e-9, max_value=1e6, allow_nan=False), digits=st.integers(0, 6))
def test_seconds_round_trip(value: float, digits: int) -> None:
    assert _close_after_rounding(parse_seconds(format_seconds(value, digits)), value, digits)
