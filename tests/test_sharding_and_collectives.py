"""Sharding specs parse back; collective costs follow the alpha-beta formulas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cost_models.collectives import (
    all_gather_s,
    all_reduce_over_s,
    all_reduce_s,
    all_to_all_s,
    reduce_scatter_s,
)
from cost_models.mesh import MeshAxis
from plans.specs import ShardingSpec

AXIS = MeshAxis(size=4, alpha_s=1e-5, beta_s_per_byte=1e-9, crosses_hosts=False)


@given(st.lists(st.sampled_from([(), (0,), (1,), (0, 1)]), max_size=5))
def test_spec_short_form_parses_back(dims: list[tuple[int, ...]]) -> None:
    used = [axis for axes in dims for axis in axes]
    if len(used) != len(set(used)):
        with pytest.raises(ValueError):
            ShardingSpec(tuple(dims))
        return
    spec = ShardingSpec(tuple(dims))
    assert ShardingSpec.parse(str(spec)) == spec
    assert hash(ShardingSpec.parse(str(spec))) == hash(spec)


@pytest.mark.parametrize(
    ("text", "dims"), [("S0R", ((0,), ())), ("RS01", ((), (0, 1))), ("S1S0", ((1,), (0,)))]
)
def test_known_specs(text: str, dims: tuple[tuple[int, ...], ...]) -> None:
    assert ShardingSpec.parse(text).dims == dims
    assert str(ShardingSpec(dims)) == text


@pytest.mark.parametrize("text", ["S2R", "S0S0", "X", "S10"])
def test_bad_specs(text: str) -> None:
    with pytest.raises(ValueError):
        ShardingSpec.parse(text)


def test_local_shape() -> None:
    assert ShardingSpec.parse("S01R").local_shape((64, 10), (2, 4)) == (8, 10)
    assert ShardingSpec.parse("S1S0").local_shape((8, 6), (2, 4)) == (2, 3)


def test_collective_formulas() -> None:
    v = 1e6
    assert all_reduce_s(v, AXIS) == pytest.approx(2 * 3 / 4 * v * 1e-9 + 1e-5)
    assert all_gather_s(v, AXIS) == pytest.approx(3 / 4 * v * 1e-9 + 1e-5)
    assert reduce_scatter_s(v, AXIS) == pytest.approx(3 / 4 * v * 1e-9 + 1e-5)
    assert all_to_all_s(v, AXIS) == pytest.approx(3 / 16 * v * 1e-9 + 1e-5)
    single = MeshAxis(1, 1e-5, 1e-9, False)
    assert all_reduce_s(v, single) == 0.0
    assert all_reduce_over_s(v, [single, AXIS]) == all_reduce_s(v, AXIS)


def test_two_axis_all_reduce_is_hierarchical() -> None:
    fast = MeshAxis(8, 1e-6, 1e-10, False)
    slow = MeshAxis(4, 1e-5, 1e-8, True)
    v = 1e8
    expected = (7 / 8 * v * 1e-10 + 1e-6) * 2 + (2 * 3 / 4 * v / 8 * 1e-8 + 1e-5)
    assert all_reduce_over_s(v, [slow, fast]) == pytest.approx(expected)
