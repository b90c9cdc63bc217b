"""Physical quantities with units: parse from and format for people.

A quantity is a number followed by a unit (``"16 GiB"``, ``"25 Gbit/s"``, ``"125 TFLOP/s"``,
``"5 us"``) or a bare number meaning base units (bytes, bytes per second, FLOP per second,
seconds). Units are case-sensitive: bits are spelled ``bit`` (``Gbit/s``), bytes ``B``
(``GB/s``), so ``b`` versus ``B`` is never guessed. ``KB``/``MB``/``GB``/``TB`` are decimal,
``KiB``/``MiB``/``GiB``/``TiB`` binary.

Parsers raise `QuantityError` (a `ValueError`) with separate ``expected`` and ``found`` texts, so
a loader can re-raise it as an `plans.errors.InputError` that names the file and field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "QuantityError",
    "describe_value",
    "format_bandwidth",
    "format_bytes",
    "format_flops_rate",
    "format_seconds",
    "parse_bandwidth",
    "parse_bytes",
    "parse_flops_rate",
    "parse_seconds",
]


class QuantityError(ValueError):
    """A value that is not a quantity of the wanted kind.

    ``str()`` reads ``expected EXPECTED, found FOUND``; the loader adds file and field.
    """

    def __init__(self, expected: str, found: str) -> None:
        self.expected = expected
        self.found = found
        super().__init__(f"expected {expected}, found {found}")


@dataclass(frozen=True)
class _Kind:
    noun: str  # "a bandwidth"
    example: str  # "'25 Gbit/s'"
    factors_by_unit: dict[str, Fraction]  # unit symbol -> base units in one of it, exactly

    def expected(self, qualifier: str = "") -> str:
        article, rest = self.noun.split(" ", 1)
        if qualifier:
            article = "an" if qualifier[0] in "aeiou" else "a"
            rest = f"{qualifier} {rest}"
        return f"{article} {rest} such as {self.example}"


# Exact factors: "5 us" gives the float nearest 5/10**6 (5e-6), not 5 * 1e-6 (4.99...e-06).
_DECIMAL = {"": 1, "K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}

_BYTE_FACTORS = {f"{p}B": Fraction(f) for p, f in {**_DECIMAL, **_BINARY}.items()}
_BIT_FACTORS = {f"{p}bit": Fraction(f, 8) for p, f in _DECIMAL.items()}
_BANDWIDTH_FACTORS = {
    **{f"{unit}/s": f for unit, f in _BYTE_FACTORS.items()},
    **{f"{unit}/s": f for unit, f in _BIT_FACTORS.items()},
}
_FLOPS_FACTORS = {
    **{f"{p}FLOP/s": Fraction(f) for p, f in _DECIMAL.items()},
    **{f"{p}FLOPS": Fraction(f) for p, f in _DECIMAL.items()},
}
_SECOND_FACTORS = {
    "s": Fraction(1),
    "ms": Fraction(1, 10**3),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),  # U+00B5 micro sign
    "μs": Fraction(1, 10**6),  # U+03BC Greek small mu
    "ns": Fraction(1, 10**9),
}

_BYTES = _Kind("a size", "'16 GiB'", _BYTE_FACTORS)
_BANDWIDTH = _Kind("a bandwidth", "'25 Gbit/s'", _BANDWIDTH_FACTORS)
_FLOPS_RATE = _Kind("a compute rate", "'125 TFLOP/s'", _FLOPS_FACTORS)
_TIME = _Kind("a time", "'5 us'", _SECOND_FACTORS)

# A signed decimal number (no "inf"/"nan" words; an exponent of at most 4 digits, so the exact
# arithmetic stays small), then an optional unit, the space between them optional ("16GiB").
_QUANTITY = re.compile(
    r"\s*(?P<sign>[+-]?)(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?)\s*(?P<unit>\S*)\s*"
)


def describe_value(value: object) -> str:
    """How an error message shows a value the user gave: ``'fast'``, ``-2``, ``nothing``."""
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse(value: object, kind: _Kind, positive: bool) -> float:
    found = describe_value(value)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QuantityError(kind.expected(), found)
    if isinstance(value, str):
        match = _QUANTITY.fullmatch(value)
        if match is None:
            raise QuantityError(kind.expected(), found)
        unit = match["unit"]
        if unit and unit not in kind.factors_by_unit:
            raise QuantityError(kind.expected(), found)
        factor = kind.factors_by_unit[unit] if unit else Fraction(1)
        try:
            magnitude = float(Fraction(match["number"]) * factor)  # correctly rounded
        except OverflowError:
            magnitude = math.inf
        number = -magnitude if match["sign"] == "-" else magnitude
    else:
        number = float(value)
    if not math.isfinite(number):
        raise QuantityError(kind.expected("finite"), found)
    if number < 0:
        raise QuantityError(kind.expected("non-negative"), found)
    if positive and number == 0:
        raise QuantityError(kind.expected("positive"), found)
    return number


def parse_bytes(value: object, *, positive: bool = False) -> int:
    """Bytes from ``"16 GiB"``, ``"40 GB"``, ``"512 B"`` or a bare number; rounded to whole bytes.

    With ``positive``, zero (also after rounding) is rejected.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        num_bytes = value  # exact, even beyond 2**53
    else:
        num_bytes = round(_parse(value, _BYTES, positive=False))
    if positive and num_bytes == 0:
        raise QuantityError(_BYTES.expected("positive"), describe_value(value))
    return num_bytes


def parse_bandwidth(value: object, *, positive: bool = False) -> float:
    """Bytes per second from ``"900 GB/s"``, ``"25 Gbit/s"`` (= 3.125e9) or a bare number."""
    return _parse(value, _BANDWIDTH, positive)


def parse_flops_rate(value: object, *, positive: bool = False) -> float:
    """FLOP per second from ``"125 TFLOP/s"``, ``"125 TFLOPS"`` or a bare number."""
    return _parse(value, _FLOPS_RATE, positive)


def parse_seconds(value: object, *, positive: bool = False) -> float:
    """Seconds from ``"5 us"`` (or ``µs``), ``"2 ms"``, ``"10 ns"``, ``"1 s"`` or a bare number."""
    return _parse(value, _TIME, positive)


def _format(value: float, units: tuple[tuple[str, float], ...], digits: int) -> str:
    """``value`` in the largest unit it is at least one of (the smallest unit below that)."""
    if not math.isfinite(value):
        return f"{value} {units[0][0]}"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    symbol, factor = units[0]
    for candidate_symbol, candidate_factor in units:
        if magnitude >= candidate_factor:
            symbol, factor = candidate_symbol, candidate_factor
    return f"{sign}{magnitude / factor:.{digits}f} {symbol}"


_BYTE_UNITS = (("KiB", 2.0**10), ("MiB", 2.0**20), ("GiB", 2.0**30), ("TiB", 2.0**40))
_BANDWIDTH_UNITS = (("B/s", 1.0), ("KB/s", 1e3), ("MB/s", 1e6), ("GB/s", 1e9), ("TB/s", 1e12))
_FLOPS_UNITS = (
    ("FLOP/s", 1.0),
    ("KFLOP/s", 1e3),
    ("MFLOP/s", 1e6),
    ("GFLOP/s", 1e9),
    ("TFLOP/s", 1e12),
    ("PFLOP/s", 1e15),
)
_SECOND_UNITS = (("ns", 1e-9), ("us", 1e-6), ("ms", 1e-3), ("s", 1.0))


def format_bytes(num_bytes: float, digits: int = 1) -> str:
    """``17179869184 -> "16.0 GiB"``; binary units; below 1 KiB whole bytes (``"512 B"``)."""
    if math.isfinite(num_bytes) and abs(num_bytes) < 2**10:
        return f"{round(num_bytes)} B"
    return _format(num_bytes, _BYTE_UNITS, digits)


def format_bandwidth(bytes_per_s: float, digits: int = 1) -> str:
    """``3.125e9 -> "3.1 GB/s"``; decimal byte units, as datasheets write them."""
    return _format(bytes_per_s, _BANDWIDTH_UNITS, digits)


def format_flops_rate(flops_per_s: float, digits: int = 1) -> str:
    """``125e12 -> "125.0 TFLOP/s"``."""
    return _format(flops_per_s, _FLOPS_UNITS, digits)


def format_seconds(seconds: float, digits: int = 1) -> str:
    """``5e-6 -> "5.0 us"``, ``0.0123 -> "12.3 ms"``; never above seconds (``"90.0 s"``)."""
    if seconds == 0:
        return "0 s"
    return _format(seconds, _SECOND_UNITS, digits)
