"""Sharding specs: how each dimension of a tensor is split over a 2-D logical mesh.

A spec gives each tensor dimension one of `R` (replicated), `S0` (split over mesh axis 0), `S1`
(over axis 1) or `S01` (over both, axis 0 major). Each mesh axis splits at most one dimension.
The short form concatenates the entries (`S0R`, `RS01`, `RR`) and parses back.
"""

from __future__ import annotations

from dataclasses import dataclass

_TOKENS = ("S01", "S0", "S1", "R")  # longest first, so "S01" is never read as "S0" + "1"


@dataclass(frozen=True)
class ShardingSpec:
    """Per tensor dimension, the mesh axes it is split over (empty tuple = replicated)."""

    dims: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        used = [axis for axes in self.dims for axis in axes]
        if len(used) != len(set(used)) or any(axis not in (0, 1) for axis in used):
            raise ValueError(f"invalid sharding spec {self.dims}: each mesh axis at most once")
        for axes in self.dims:
            if axes not in ((), (0,), (1,), (0, 1)):
                raise ValueError(f"invalid sharding spec {self.dims}: axes must be ordered")

    @staticmethod
    def replicated(rank: int) -> ShardingSpec:
        return ShardingSpec(((),) * rank)

    @staticmethod
    def parse(text: str) -> ShardingSpec:
        dims: list[tuple[int, ...]] = []
        rest = text
        while rest:
            for token in _TOKENS:
                if rest.startswith(token):
                    dims.append(() if token == "R" else tuple(int(c) for c in token[1:]))
                    rest = rest[len(token) :]
                    break
            else:
                raise ValueError(
                    f"expected a sharding spec such as 'S0R' or 'RS01', found {text!r}"
                )
        return ShardingSpec(tuple(dims))

    def __str__(self) -> str:
        return "".join("S" + "".join(map(str, axes)) if axes else "R" for axes in self.dims)

    @property
    def rank(self) -> int:
        return len(self.dims)

    def shard_count(self, dim: int, mesh_shape: tuple[int, int]) -> int:
        """How many pieces dimension `dim` is cut into on a mesh of `mesh_shape`."""
        count = 1
        for axis in self.dims[dim]:
            count *= mesh_shape[axis]
        return count

    def local_shape(self, shape: tuple[int, ...], mesh_shape: tuple[int, int]) -> tuple[int, ...]:
        """The shape of one device's piece (dimensions must divide evenly)."""
        return tuple(
            extent // self.shard_count(dim, mesh_shape) for dim, extent in enumerate(shape)
        )
