"""Cost of changing a tensor's sharding spec between a producer and a consumer.

Mesh axis by mesh axis (docs/DESIGN.md section 5):

    split in the source, not in the destination   all-gather over the axis
    not in the source, split in the destination   free: each device slices its piece
    split on different dims                        all-to-all over the axis
    split on the same dim                          nothing

Training also moves the gradient back, destination to source, so it pays the reverse too (the
reverse of an all-gather is a free slice; of a slice, an all-gather). Volumes are the per-device
bytes of the piece the collective produces (all-gather) or exchanges (all-to-all).

Approximation: a dim split over both axes (S01) that changes only one axis is priced as that
axis's collective alone, though the block order may need more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cost_models.collectives import all_gather_s, all_to_all_s
from cost_models.mesh import LogicalMesh
from plans.specs import ShardingSpec


@dataclass(frozen=True)
class ReshardRules:
    """Alpa's AutoShardingOption switches that concern resharding."""

    allow_all_to_all: bool = True  # else Si -> Sj is an all-gather followed by a slice
    allow_all_gather: bool = True  # else a resharding that needs an all-gather is forbidden


def _local_bytes(
    shape: tuple[int, ...], itemsize: int, spec: ShardingSpec, mesh: LogicalMesh
) -> float:
    elements = 1.0
    for dim, extent in enumerate(shape):
        elements *= extent / spec.shard_count(dim, mesh.shape)
    return elements * itemsize


def _one_way_s(
    shape: tuple[int, ...],
    itemsize: int,
    source: ShardingSpec,
    target: ShardingSpec,
    mesh: LogicalMesh,
    rules: ReshardRules,
) -> float:
    source_bytes = _local_bytes(shape, itemsize, source, mesh)
    total = 0.0
    for axis, mesh_axis in enumerate(mesh.axes):
        if mesh_axis.size == 1:
            continue
        from_dim, to_dim = source.dim_of_axis(axis), target.dim_of_axis(axis)
        if from_dim == to_dim or from_dim is None:
            continue  # unchanged, or a free slice
        gathered = source_bytes * mesh_axis.size
        if to_dim is None or not rules.allow_all_to_all:
            if not rules.allow_all_gather:
                return math.inf
            total += all_gather_s(gathered, mesh_axis)
        else:
            total += all_to_all_s(source_bytes, mesh_axis)
    return total


def reshard_s(
    shape: tuple[int, ...],
    itemsize: int,
    source: ShardingSpec,
    target: ShardingSpec,
    mesh: LogicalMesh,
    training: bool,
    rules: ReshardRules = ReshardRules(),
    remat: bool = False,
) -> float:
    """Seconds to turn a tensor of global `shape` from `source` into `target` (and, when
    training, its gradient back; with rematerialisation the forward's resharding runs again in
    the backward); `math.inf` when the rules forbid it."""
    if source == target:
        return 0.0
    forward = _one_way_s(shape, itemsize, source, target, mesh, rules)
    if not training:
        return forward
    backward = _one_way_s(shape, itemsize, target, source, mesh, rules)
    return (2 * forward if remat else forward) + backward
