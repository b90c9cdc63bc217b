"""The mapping of plan specs onto ONNX's multi-device sharding (`plans/onnx_sharding.py`):
known answers worked out by hand on a 2 x 4 mesh, and round-trip properties on every spec of
small meshes."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from plans.onnx_sharding import (
    DeviceSharding,
    device_name,
    device_sharding,
    effective_spec,
    parse_device_name,
    spec_of,
)
from plans.specs import ShardingSpec

MESH = (2, 4)  # device (i, j) is index 4 i + j


def spec(text: str) -> ShardingSpec:
    return ShardingSpec.parse(text)


def test_split_over_the_first_axis_is_two_shards_each_held_by_a_row() -> None:
    # S0R: dim 0 in two halves; the half i is on the four devices of row i.
    assert device_sharding(spec("S0R"), MESH) == DeviceSharding(
        sharded_dims=((0, 2),), devices=(-1, -2), groups=((-1, (0, 1, 2, 3)), (-2, (4, 5, 6, 7)))
    )


def test_split_over_the_second_axis_is_four_shards_each_held_by_a_column() -> None:
    assert device_sharding(spec("S1R"), MESH) == DeviceSharding(
        sharded_dims=((0, 4),),
        devices=(-1, -2, -3, -4),
        groups=((-1, (0, 4)), (-2, (1, 5)), (-3, (2, 6)), (-4, (3, 7))),
    )


def test_split_over_both_axes_axis_0_major_is_eight_shards_in_device_order() -> None:
    # S01: device (i, j) holds shard 4 i + j, which is its own index.
    assert device_sharding(spec("S01R"), MESH) == DeviceSharding(((0, 8),), tuple(range(8)))


def test_two_dims_split_list_shards_row_major_over_the_sharded_dims() -> None:
    # S0S1: shard (a, b) (a along dim 0, b along dim 1) is on device (a, b).
    assert device_sharding(spec("S0S1"), MESH) == DeviceSharding(((0, 2), (1, 4)), tuple(range(8)))
    # S1S0: shard (a, b) is on device (b, a), index 4 b + a.
    assert device_sharding(spec("S1S0"), MESH) == DeviceSharding(
        ((0, 4), (1, 2)), (0, 4, 1, 5, 2, 6, 3, 7)
    )


def test_a_replicated_tensor_is_one_shard_held_by_every_device() -> None:
    assert device_sharding(spec("RR"), MESH) == DeviceSharding((), (-1,), ((-1, tuple(range(8))),))
    assert device_sharding(ShardingSpec(()), MESH) == DeviceSharding(
        (), (-1,), ((-1, tuple(range(8))),)
    )


def test_axes_of_size_one_split_nothing_and_are_not_written() -> None:
    assert device_sharding(spec("S0R"), (1, 8)) == device_sharding(spec("RR"), (1, 8))
    assert device_sharding(spec("S01R"), (1, 8)) == device_sharding(spec("S1R"), (1, 8))
    assert effective_spec(spec("S0S1"), (1, 8)) == spec("RS1")
    assert spec_of(device_sharding(spec("S0R"), (1, 8)), 2, (1, 8)) == spec("RR")


def test_layouts_compare_up_to_group_keys_and_negative_axes() -> None:
    written = device_sharding(spec("RS0"), MESH)
    renamed = DeviceSharding(((-1, 2),), (-7, -3), ((-3, (4, 5, 6, 7)), (-7, (0, 1, 2, 3))))
    assert renamed.same_layout(written, rank=2)
    swapped = DeviceSharding(((1, 2),), (-2, -1), written.groups)
    assert not swapped.same_layout(written, rank=2)
    assert DeviceSharding(((1, 2),), (-9,)).holders() is None


def test_a_layout_no_spec_gives_reads_back_as_none() -> None:
    scattered = DeviceSharding(((0, 8),), (7, 6, 5, 4, 3, 2, 1, 0))
    assert spec_of(scattered, 1, MESH) is None


def test_device_names_round_trip() -> None:
    assert device_name((3, 7)) == "host3/gpu7"
    assert parse_device_name("host3/gpu7") == (3, 7)
    assert parse_device_name("gpu7") is None


def _specs(rank: int) -> list[ShardingSpec]:
    """Every spec of this rank: each mesh axis on at most one dim (both on one dim: `S01`)."""
    return [
        ShardingSpec(
            tuple(tuple(a for a in (0, 1) if (first, second)[a] == d) for d in range(rank))
        )
        for first, second in itertools.product([None, *range(rank)], repeat=2)
    ]


meshes = st.tuples(st.integers(1, 4), st.integers(1, 4))


@given(mesh=meshes, rank=st.integers(0, 3), data=st.data())
def test_every_spec_reads_back_as_itself_without_its_size_one_axes(
    mesh: tuple[int, int], rank: int, data: st.DataObject
) -> None:
    chosen = data.draw(st.sampled_from(_specs(rank)))
    written = device_sharding(chosen, mesh)
    assert spec_of(written, rank, mesh) == effective_spec(chosen, mesh)


@given(mesh=meshes, rank=st.integers(0, 3), data=st.data())
def test_shards_partition_the_mesh_into_equal_groups(
    mesh: tuple[int, int], rank: int, data: st.DataObject
) -> None:
    chosen = data.draw(st.sampled_from(_specs(rank)))
    written = device_sharding(chosen, mesh)
    holders = written.holders()
    assert holders is not None
    shards = 1
    for _, ways in written.sharded_dims:
        shards *= ways
    assert len(holders) == shards == len(written.devices)
    assert frozenset().union(*holders) == frozenset(range(mesh[0] * mesh[1]))
    assert sum(len(held) for held in holders) == mesh[0] * mesh[1]  # disjoint
    assert len({len(held) for held in holders}) == 1  # every shard equally replicated
