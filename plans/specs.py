"""Sharding specs: how each dimension of a tensor is split over a 2-D logical mesh.

A spec gives each tensor dimension one of `R` (replicated), `S0` (split over mesh axis 0), `S1`
(over axis 1) or `S01` (over both, axis 0 major). Each mesh axis splits at most one dimension.
The short form concatenates the entries (`S0R`, `RS01`, `RR`) and parses back; `repr` is exact
(`ShardingSpec(dims=((0,), ()))`). One value for every reader: the planner prices specs, plans
record them, `check` validates them and the executor turns them into JAX shardings.

A strategy's name lists the specs of an op's labelled tensors in Alpa's style,
`OUT = IN0 x IN1` (`-` where a side has none); `strategy_name` writes it and
`parse_strategy_name` reads it back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_TOKENS = ("S01", "S0", "S1", "R")  # longest first, so "S01" is never read as "S0" + "1"
_ORDERED_AXES = ((), (0,), (1,), (0, 1))


@dataclass(frozen=True)
class ShardingSpec:
    """Per tensor dimension, the mesh axes it is split over (empty tuple = replicated)."""

    dims: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        used = [axis for axes in self.dims for axis in axes]
        if len(used) != len(set(used)) or any(axis not in (0, 1) for axis in used):
            raise ValueError(f"invalid sharding spec {self.dims}: each mesh axis at most once")
        for axes in self.dims:
            if axes not in _ORDERED_AXES:
                raise ValueError(f"invalid sharding spec {self.dims}: axes must be ordered")

    @staticmethod
    def replicated(rank: int) -> ShardingSpec:
        return ShardingSpec(((),) * rank)

    @staticmethod
    def parse(text: str) -> ShardingSpec:
        """`S0R` -> ShardingSpec(((0,), ())); `ValueError` naming the text otherwise."""
        dims: list[tuple[int, ...]] = []
        rest = text
        while rest:
            token = next((t for t in _TOKENS if rest.startswith(t)), None)
            if token is None:
                raise ValueError(
                    f"expected a sharding spec such as 'S0R' or 'RS01', found {text!r}"
                )
            dims.append(tuple(int(axis) for axis in token[1:]))
            rest = rest[len(token) :]
        try:
            return ShardingSpec(tuple(dims))
        except ValueError:
            raise ValueError(f"spec {text} splits over a mesh axis twice") from None

    def __str__(self) -> str:
        return "".join("S" + "".join(map(str, axes)) if axes else "R" for axes in self.dims)

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def axes(self) -> frozenset[int]:
        """The mesh axes that split some dimension."""
        return frozenset(axis for axes in self.dims for axis in axes)

    def dim_of_axis(self, axis: int) -> int | None:
        """The dimension that mesh axis `axis` splits, or None."""
        return next((dim for dim, axes in enumerate(self.dims) if axis in axes), None)

    def shard_count(self, dim: int, mesh_shape: tuple[int, int]) -> int:
        """How many pieces dimension `dim` is cut into on a mesh of `mesh_shape`."""
        return split_ways(self.dims[dim], mesh_shape)

    def shard_counts(self, mesh_shape: tuple[int, int]) -> tuple[int, ...]:
        """How many pieces each dimension is cut into."""
        return tuple(self.shard_count(dim, mesh_shape) for dim in range(self.rank))

    def local_shape(self, shape: tuple[int, ...], mesh_shape: tuple[int, int]) -> tuple[int, ...]:
        """The shape of one device's piece (dimensions must divide evenly)."""
        return tuple(
            extent // self.shard_count(dim, mesh_shape) for dim, extent in enumerate(shape)
        )

    def divides(self, shape: tuple[int, ...], mesh_shape: tuple[int, int]) -> bool:
        """Whether every split dimension of `shape` divides evenly (and the ranks agree)."""
        return len(shape) == self.rank and all(
            extent % self.shard_count(dim, mesh_shape) == 0 for dim, extent in enumerate(shape)
        )

    def without_axes(self, axes: frozenset[int] | set[int]) -> ShardingSpec:
        """The same spec with `axes` no longer splitting anything."""
        return ShardingSpec(tuple(tuple(a for a in entry if a not in axes) for entry in self.dims))


def split_ways(axes: Iterable[int], mesh_shape: tuple[int, int]) -> int:
    """How many pieces a split over mesh `axes` of a mesh of `mesh_shape` cuts a dimension into."""
    count = 1
    for axis in axes:
        count *= mesh_shape[axis]
    return count


def strategy_name(
    input_specs: Sequence[ShardingSpec | None], output_specs: Sequence[ShardingSpec | None]
) -> str:
    """Alpa's style: 'OUT = IN0 x IN1' (specs of the labelled tensors; '-' for none)."""
    outs = " ".join(str(spec) or "-" for spec in output_specs if spec is not None) or "-"
    ins = " x ".join(str(spec) or "-" for spec in input_specs if spec is not None) or "-"
    return f"{outs} = {ins}"


def parse_strategy_name(name: str) -> tuple[tuple[ShardingSpec, ...], tuple[ShardingSpec, ...]]:
    """(output specs, input specs) of a name written by `strategy_name`."""
    outs_text, separator, ins_text = name.partition(" = ")
    if not separator:
        raise ValueError(f"expected a strategy such as 'S0R = S0R x RR', found {name!r}")
    return _specs_of(outs_text, " "), _specs_of(ins_text, " x ")


def _specs_of(side: str, separator: str) -> tuple[ShardingSpec, ...]:
    if side.strip() == "-":
        return ()
    tokens = side.split(separator) if separator in side else side.split()
    return tuple(ShardingSpec.parse("" if t.strip() == "-" else t.strip()) for t in tokens)
