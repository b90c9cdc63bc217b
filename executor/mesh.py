"""Plan specs and devices -> JAX meshes and shardings.

A stage's logical mesh (n0, n1) becomes a `jax.sharding.Mesh` with axis names `("x", "y")`:
mesh axis 0 is `"x"`, axis 1 is `"y"`. A spec string has one token per tensor dimension:

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

from plans.specs import parse_spec as plans_parse_spec

AXIS_NAMES = ("x", "y")


def parse_spec(text: str) -> tuple[tuple[int, ...], ...]:
    """`S1RR` -> ((1,), (), ()): per dimension, the mesh axes it is split over."""
    dims = plans_parse_spec(text)
    used = [axis for axes in dims for axis in axes]
    if len(used) != len(set(used)):
        raise ValueError(f"expected each mesh axis at most once in a spec, found {text!r}")
    return dims


def partition_spec(text: str) -> PartitionSpec:
    return partition_spec_of(parse_spec(text))


def partition_spec_of(
    dims: Sequence[tuple[int, ...]], leading: tuple[int, ...] = ()
) -> PartitionSpec:
    """Per dimension the mesh axes splitting it -> a PartitionSpec; `leading` adds a first
    dimension split over those axes (the replica dimension of `executor/replicas.py`)."""
    entries: list[Any] = []
    for axes in ([leading] if leading else []) + list(dims):
        if not axes:
            entries.append(None)
        elif len(axes) == 1:
            entries.append(AXIS_NAMES[axes[0]])
        else:
            entries.append(tuple(AXIS_NAMES[axis] for axis in axes))
    return PartitionSpec(*entries)


def shard_counts(text: str, mesh_shape: tuple[int, int]) -> tuple[int, ...]:
    """How many pieces each dimension is cut into."""
    return tuple(
        int(np.prod([mesh_shape[axis] for axis in axes])) if axes else 1
        for axes in parse_spec(text)
    )


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


def named(mesh: Mesh, spec: str | None) -> NamedSharding:
    """The sharding of a tensor with this spec (replicated when the plan gives none)."""
    return NamedSharding(mesh, PartitionSpec() if spec is None else partition_spec(spec))
