"""Parsing shared by several commands."""

from __future__ import annotations

from collections.abc import Sequence

from plans.errors import InputError


def parse_dims(values: Sequence[str]) -> dict[str, int]:
    """`--dim NAME=VALUE` flags as a mapping; one-line error naming the bad one."""
    dims: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name or not number.strip().isdigit():
            raise InputError("--dim", "", "NAME=VALUE with a positive integer VALUE", repr(value))
        dims[name] = int(number)
    return dims
