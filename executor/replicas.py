"""Data-parallel replicas inside a stage, so that parameter gradients are summed once per
iteration, as the plan's cost model charges them, and not once per microbatch.

Under XLA's SPMD partitioner a gradient `dW = x^T dy` whose batch is split over a mesh axis is
a partial sum on each device, and XLA all-reduces it where it is produced: inside every
microbatch's backward pass. To keep the partial sums, a stage whose samples are split over some
mesh axes D (and D is used for nothing else) runs as `jax.vmap` over `n_D` replicas:

- the stage's batch dimension B becomes (n_D, B / n_D); the replica dimension is sharded over
  D (`vmap(spmd_axis_name=D)` adds D to every sharding constraint inside), and each constraint
  keeps the plan's spec minus D;
- each parameter enters as `n_D` copies, one per replica (a broadcast that moves no data: every
  device already holds its piece of W), so its gradient comes out per replica, (n_D, *W.shape),
  the partial sums left where they were made;
- the copies' gradients accumulate over the microbatches on the devices that made them, and
  the iteration ends with one sum over the replica dimension: one all-reduce over D (a
  reduce-scatter for a ZeRO parameter, see `zero_storage_spec`).

`vmap` is exact whatever the plan, so the values are those of the unsplit stage; the plan only
decides whether the layout is free. D is every live mesh axis that, in the plan's specs for the
stage:

- splits only batch dimensions (never a parameter or a dimension other than a tensor's batch
  dimension), and
- splits the batch dimension of every tensor that depends on the stage's inputs (so the plan
  itself asserts that no op mixes samples across D: a reduction over the batch, a cumulative
  sum over tokens, batch statistics);

and every tensor crossing the stage's boundary has a batch dimension. When no axis qualifies
(the batch is replicated somewhere, or an axis splits both the batch and a model dimension),
the stage runs as before and XLA reduces per microbatch; `GradientSync.reason` says why.

The batch dimension of a tensor is the dimension that changes when the microbatch size does
(found by tracing the model at two sizes, as the planner does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jax.numpy as jnp

from executor.stages import StageProgram
from plans.specs import ShardingSpec

Array = Any


@dataclass(frozen=True)
class ReplicaLayout:
    axes: tuple[int, ...]  # mesh axes D the replicas are split over, ascending
    count: int  # n_D: replicas
    batch_dims: Mapping[str, int]  # boundary tensor -> its batch dimension
    inner_specs: Mapping[str, ShardingSpec]  # tensor -> the plan's spec with D taken out

    def split(self, value: Array, name: str) -> Array:
        """(.., B, ..) -> (n_D, .., B / n_D, ..): samples of replica r are the r-th block."""
        return split_replicas(value, self.batch_dims[name], self.count)

    def join(self, value: Array, name: str) -> Array:
        return join_replicas(value, self.batch_dims[name])


@dataclass(frozen=True)
class GradientSync:
    """How a stage's parameter gradients are summed over the devices that split its batch."""

    stage: int
    replica_axes: tuple[int, ...]  # () when XLA sums them per microbatch
    reason: str  # why not once per iteration ('' when it is)

    @property
    def once_per_iteration(self) -> bool:
        return bool(self.replica_axes)

    def describe(self) -> str:
        if self.replica_axes:
            axes = ", ".join(str(axis) for axis in self.replica_axes)
            return f"stage {self.stage}: gradients summed once per iteration over mesh axes {axes}"
        return f"stage {self.stage}: gradients summed by XLA in every microbatch ({self.reason})"


def split_replicas(value: Array, dim: int, count: int) -> Array:
    shape = value.shape
    blocked = value.reshape((*shape[:dim], count, shape[dim] // count, *shape[dim + 1 :]))
    return jnp.moveaxis(blocked, dim, 0)


def join_replicas(value: Array, dim: int) -> Array:
    """The inverse of `split_replicas`: `value` is (n_D, ..., B / n_D at `dim`, ...)."""
    moved = jnp.moveaxis(value, 0, dim)
    shape = moved.shape
    return moved.reshape((*shape[:dim], shape[dim] * shape[dim + 1], *shape[dim + 2 :]))


def batch_dims(
    shapes: Mapping[str, tuple[int, ...]], doubled: Mapping[str, tuple[int, ...]]
) -> dict[str, int | None]:
    """Per tensor, the one dimension that grows with the microbatch (None: none, or several)."""
    found: dict[str, int | None] = {}
    for name, shape in shapes.items():
        other = doubled.get(name)
        if other is None or len(other) != len(shape):
            found[name] = None
            continue
        changed = [d for d, (a, b) in enumerate(zip(shape, other, strict=True)) if a != b]
        found[name] = changed[0] if len(changed) == 1 else None
    return found


def data_tensors(program: StageProgram, static: Iterable[str]) -> set[str]:
    """The tensors of the stage that depend on its inputs (not on parameters alone)."""
    constant = set(static)
    data = {name for name in program.inputs if name not in constant}
    for node in program.nodes:
        if any(name in data for name in node.inputs if name):
            data.update(name for name in node.outputs if name and name not in constant)
    return data


def replica_layout(
    program: StageProgram,
    shapes: Mapping[str, tuple[int, ...]],
    batch_dim: Mapping[str, int | None],
    static: Iterable[str],
) -> tuple[ReplicaLayout | None, str]:
    """The stage's replica layout, or None and the reason there is none (module docstring)."""
    live = [axis for axis, size in enumerate(program.logical_mesh) if size > 1]
    if not live:
        return None, "one device: nothing to sum"
    touched = {name for node in program.nodes for name in (*node.inputs, *node.outputs) if name}
    specs = {name: spec for name, spec in program.specs.items() if name in touched}
    data = data_tensors(program, static)
    boundary = [*program.inputs, *program.outputs]
    for name in boundary:
        if name in shapes and batch_dim.get(name) is None:
            return None, f"{name!r} crosses the stage without a batch dimension"
    reasons: list[str] = []
    axes = []
    for axis in live:
        reason = _disqualified(axis, specs, data, shapes, batch_dim)
        if reason:
            reasons.append(f"mesh axis {axis}: {reason}")
        else:
            axes.append(axis)
    if not axes:
        return None, "; ".join(reasons)
    count = math.prod(program.logical_mesh[axis] for axis in axes)
    inner = {name: spec.without_axes(set(axes)) for name, spec in program.specs.items()}
    layout = ReplicaLayout(
        axes=tuple(axes),
        count=count,
        batch_dims=MappingProxyType(
            {name: int(batch_dim[name] or 0) for name in boundary if name in shapes}
        ),
        inner_specs=MappingProxyType(inner),
    )
    return layout, ""


def _disqualified(
    axis: int,
    specs: Mapping[str, ShardingSpec],
    data: set[str],
    shapes: Mapping[str, tuple[int, ...]],
    batch_dim: Mapping[str, int | None],
) -> str:
    for name in sorted(specs):
        if name not in shapes:
            continue  # static: embedded, never sharded
        on = [d for d, axes in enumerate(specs[name].dims) if axis in axes]
        if name not in data:
            if on:
                return f"it splits {name!r}, which does not depend on the stage's inputs"
            continue
        where = batch_dim.get(name)
        if where is None:
            return f"{name!r} depends on the stage's inputs but has no batch dimension"
        if on != [where]:
            found = f"dimension {on[0]}" if on else "none"
            return f"{name!r}: expected the axis on batch dimension {where}, found {found}"
    for name in sorted(data):
        if name in shapes and name not in specs:
            return f"the plan gives no spec for {name!r}"
    return ""


def zero_storage_spec(
    spec: ShardingSpec, shape: tuple[int, ...], logical_mesh: tuple[int, int]
) -> ShardingSpec | None:
    """A ZeRO parameter's at-rest sharding: its spec plus every live mesh axis it is replicated
    over, on the first whole dimension they divide (None: no dimension can take them)."""
    free = tuple(
        axis for axis, size in enumerate(logical_mesh) if size > 1 and axis not in spec.axes
    )
    if not free:
        return None
    ways = math.prod(logical_mesh[axis] for axis in free)
    dims = spec.dims
    for d, (entry, size) in enumerate(zip(dims, shape, strict=True)):
        if not entry and size % ways == 0:
            return ShardingSpec((*dims[:d], free, *dims[d + 1 :]))
    return None
