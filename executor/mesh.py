"""Plan specs and devices -> JAX meshes and shardings.

A stage's logical mesh (n0, n1) becomes a `jax.sharding.Mesh` with axis names `("x", "y")`:
mesh axis 0 is `"x"`, axis 1 is `"y"`. A spec (`plans.specs.ShardingSpec`) has one entry per
tensor dimension:

    R -> None (replicated)    S0 -> "x"    S1 -> "y"    S01 -> ("x", "y")  (axis 0 major)

so `S1RR` is `PartitionSpec("y", None, None)`. The plan's devices are (host, gpu) pairs: in one
process (CPU virtual devices, one GPU host) device `host * gpus_per_host + gpu` of
`jax.devices()`; across processes (`jax.distributed`), GPU `gpu` of the process whose
`process_index` is `host`. The devices fill the mesh in row-major order, as the plan lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from plans.specs import ShardingSpec

AXIS_NAMES = ("x", "y")


def partition_spec(spec: ShardingSpec, leading: tuple[int, ...] = ()) -> PartitionSpec:
    """A plan spec -> a PartitionSpec; `leading` adds a first dimension split over those axes
    (the replica dimension of `executor/replicas.py`)."""
    entries: list[Any] = []
    for axes in ([leading] if leading else []) + list(spec.dims):
        if not axes:
            entries.append(None)
        elif len(axes) == 1:
            entries.append(AXIS_NAMES[axes[0]])
        else:
            entries.append(tuple(AXIS_NAMES[axis] for axis in axes))
    return PartitionSpec(*entries)


def device_of(host: int, gpu: int, gpus_per_host: int) -> jax.Device:
    """The JAX device behind the plan's (host, gpu) pair (see the module docstring)."""
    if jax.process_count() == 1:
        devices = jax.devices()
        flat = host * gpus_per_host + gpu
        if flat >= len(devices):
            raise LookupError(
                f"the plan uses device ({host}, {gpu}), the {flat + 1}th, but JAX sees "
                f"{len(devices)} {devices[0].platform} device(s)"
            )
        return devices[flat]
    local = sorted((d for d in jax.devices() if d.process_index == host), key=lambda d: d.id)
    if gpu >= len(local):
        raise LookupError(
            f"the plan uses device ({host}, {gpu}), but process {host} has {len(local)} devices"
        )
    return local[gpu]


def stage_mesh(
    devices: Sequence[tuple[int, int]], logical_mesh: tuple[int, int], gpus_per_host: int
) -> Mesh:
    grid = np.array([device_of(host, gpu, gpus_per_host) for host, gpu in devices], dtype=object)
    return Mesh(grid.reshape(logical_mesh), AXIS_NAMES)


def named(mesh: Mesh, spec: ShardingSpec | None) -> NamedSharding:
    """The sharding of a tensor with this spec (replicated when the plan gives none)."""
    return NamedSharding(mesh, PartitionSpec() if spec is None else partition_spec(spec))
