"""Sharding specs as the plan writes them: one token per tensor dimension.

`R` keeps the dimension whole; `S0`, `S1` and `S01` split it over logical mesh axis 0, axis 1 or
both. ("S0R" is a matrix whose rows are split over axis 0.) The planner's own `ShardingSpec`
lives in `planner/sharding.py`; `plans` sits below the planner, so it reads the text itself.
"""

from __future__ import annotations

_TOKENS = ("S01", "S0", "S1", "R")  # longest first


def parse_spec(text: str) -> tuple[tuple[int, ...], ...]:
    """For each tensor dimension, the mesh axes it is split over (empty: replicated)."""
    dims: list[tuple[int, ...]] = []
    rest = text
    while rest:
        token = next((t for t in _TOKENS if rest.startswith(t)), None)
        if token is None:
            raise ValueError(f"expected a sharding spec such as 'S0R' or 'RS01', found {text!r}")
        dims.append(tuple(int(axis) for axis in token[1:]))
        rest = rest[len(token) :]
    return tuple(dims)


def split_ways(axes: tuple[int, ...], logical_mesh: tuple[int, int]) -> int:
    """How many pieces a dimension split over `axes` of `logical_mesh` is cut into."""
    ways = 1
    for axis in axes:
        ways *= logical_mesh[axis]
    return ways
