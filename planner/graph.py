"""The planner's graph IR: immutable tensors, ops and graphs with static shapes.

A `Graph` is what every pass after import reads. It knows nothing of ONNX protobufs (the
importer builds it) and nothing of devices (the cost models price it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType

from plans.specs import ShardingSpec

# Bytes per element of the ONNX element types the planner understands.
DTYPE_SIZE_BYTES: Mapping[str, int] = MappingProxyType(
    {
        "float64": 8,
        "float32": 4,
        "float16": 2,
        "bfloat16": 2,
        "float8": 1,
        "int64": 8,
        "int32": 4,
        "int16": 2,
        "int8": 1,
        "uint64": 8,
        "uint32": 4,
        "uint16": 2,
        "uint8": 1,
        "bool": 1,
        "complex64": 8,
        "complex128": 16,
        "string": 8,
    }
)
FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16", "float8"})

# An attribute value as the planner keeps it: ints, floats, strings and tuples of them.
AttrValue = int | float | str | tuple[int, ...] | tuple[float, ...] | tuple[str, ...]


class TensorKind(StrEnum):
    """What a tensor is for the cost model."""

    PARAMETER = "parameter"  # trainable weight: costs gradients and optimizer state
    INPUT = "input"  # graph input that carries data (token ids, images)
    ACTIVATION = "activation"  # produced by an op
    CONSTANT = "constant"  # folded or literal value that is not trained


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: TensorKind
    # Index of the dimension that scales with the batch size, or None when none does.
    batch_dim: int | None = None
    # Index of the dimension over the token sequence, where `planner/sequence_dims.py` marked
    # one (context parallelism splits it); derived from the graph, so not fingerprinted.
    sequence_dim: int | None = None
    # The values of a small constant (axes, sizes, shape targets), flattened; else None.
    value: tuple[float, ...] | None = None

    @property
    def num_elements(self) -> int:
        count = 1
        for extent in self.shape:
            count *= extent
        return count

    @property
    def size_bytes(self) -> int:
        return self.num_elements * DTYPE_SIZE_BYTES[self.dtype]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def local(self, spec: ShardingSpec, mesh_shape: tuple[int, int]) -> Tensor:
        """One device's piece of the tensor when it is sharded by `spec` on `mesh_shape`."""
        return replace(self, shape=spec.local_shape(self.shape, mesh_shape))


@dataclass(frozen=True)
class Op:
    """One operator. `inputs` keeps ONNX positions: an omitted optional input is ''."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[tuple[str, AttrValue], ...] = ()
    # Exporter name scopes, outermost first, e.g. ('', 'transformer', 'transformer.h.3').
    scopes: tuple[str, ...] = ()
    domain: str = ""
    flops: float = 0.0
    bytes_read: int = 0
    bytes_written: int = 0

    def attr(self, name: str, default: AttrValue | None = None) -> AttrValue | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return default

    @property
    def present_inputs(self) -> tuple[str, ...]:
        return tuple(name for name in self.inputs if name)


@dataclass(frozen=True)
class Graph:
    """Ops in topological order and every tensor they touch, all with static shapes."""

    name: str
    ops: tuple[Op, ...]
    tensors: Mapping[str, Tensor]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    batch_size: int
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.tensors, MappingProxyType):
            object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    @cached_property
    def op_by_name(self) -> Mapping[str, Op]:
        return MappingProxyType({op.name: op for op in self.ops})

    @cached_property
    def producer(self) -> Mapping[str, Op]:
        return producers(self.ops)

    @cached_property
    def consumers(self) -> Mapping[str, tuple[Op, ...]]:
        return consumers(self.ops)

    def subgraph(
        self, start: int = 0, stop: int | None = None, tensors: Mapping[str, Tensor] | None = None
    ) -> Subgraph:
        """ops[start:stop] with `tensors` (default: the graph's, at the global batch)."""
        return Subgraph(self.ops[start:stop], self.tensors if tensors is None else tensors)

    @property
    def parameters(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.tensors.values() if t.kind is TensorKind.PARAMETER)

    @property
    def parameter_count(self) -> int:
        return sum(t.num_elements for t in self.parameters)

    @property
    def flops(self) -> float:
        """Forward FLOPs of one pass over `batch_size` samples."""
        return sum(op.flops for op in self.ops)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the structure and shapes (never of weights): equal graphs, equal prints."""
        return "sha256:" + _digest(
            [
                [op.op_type, op.domain, op.inputs, op.outputs, _attrs_json(op.attributes)]
                for op in self.ops
            ],
            [
                [t.name, t.shape, t.dtype, t.kind.value, t.value]
                for t in _sorted(self.tensors.values())
            ],
            [self.inputs, self.outputs],
        )


@dataclass(frozen=True, eq=False)
class Subgraph:
    """A run of a graph's ops and the tensors they touch, at the size a solve prices them (one
    microbatch, or one replica's share): what a layer, a stage or a whole model is to the
    intra-op pass. Its producers, consumers and boundary are computed once."""

    ops: tuple[Op, ...]
    tensors: Mapping[str, Tensor]

    def __post_init__(self) -> None:
        if not isinstance(self.ops, tuple):
            object.__setattr__(self, "ops", tuple(self.ops))

    def __reduce__(self) -> tuple[type[Subgraph], tuple[tuple[Op, ...], dict[str, Tensor]]]:
        """Pickled (to worker processes) as its ops and tensors; cached maps are rebuilt."""
        return (Subgraph, (self.ops, dict(self.tensors)))

    @cached_property
    def producer(self) -> Mapping[str, Op]:
        """Tensor -> the op of this subgraph that writes it."""
        return producers(self.ops)

    @cached_property
    def consumers(self) -> Mapping[str, tuple[Op, ...]]:
        """Tensor -> the ops of this subgraph that read it, in order."""
        return consumers(self.ops)

    @cached_property
    def position(self) -> Mapping[str, int]:
        """Op name -> its index in `ops`."""
        return MappingProxyType({op.name: index for index, op in enumerate(self.ops)})

    @cached_property
    def boundary_inputs(self) -> tuple[str, ...]:
        """Activations and data inputs the ops read that no op here writes, in first-read order:
        what the subgraph receives from before it."""
        kinds = (TensorKind.ACTIVATION, TensorKind.INPUT)
        return tuple(
            dict.fromkeys(
                name
                for op in self.ops
                for name in op.present_inputs
                if name not in self.producer and self.tensors[name].kind in kinds
            )
        )

    @cached_property
    def parameters(self) -> tuple[str, ...]:
        """The parameters the ops read, in first-read order."""
        return tuple(
            dict.fromkeys(
                name
                for op in self.ops
                for name in op.present_inputs
                if self.tensors[name].kind is TensorKind.PARAMETER
            )
        )

    def slice(self, start: int, stop: int) -> Subgraph:
        return Subgraph(self.ops[start:stop], self.tensors)

    def with_tensors(self, tensors: Mapping[str, Tensor]) -> Subgraph:
        """The same ops with other tensors (another microbatch size, local shapes)."""
        return Subgraph(self.ops, tensors)

    @cached_property
    def fingerprint(self) -> str:
        """Structure and shapes, without names: repeated blocks print the same.

        A tensor is described by where it comes from: ('op', position, output) inside the run,
        or its kind, shape and dtype from outside (parameters, constants, earlier layers)."""
        produced: dict[str, tuple[int, int]] = {}
        for index, op in enumerate(self.ops):
            for out, name in enumerate(op.outputs):
                if name:
                    produced[name] = (index, out)
        parts = []
        for op in self.ops:
            sources: list[object] = []
            for name in op.inputs:
                if not name:
                    sources.append(None)
                elif name in produced:
                    sources.append(["op", *produced[name]])
                else:
                    t = self.tensors[name]
                    sources.append([t.kind.value, t.shape, t.dtype, t.batch_dim, t.value])
            outputs = [
                [self.tensors[n].shape, self.tensors[n].dtype, self.tensors[n].batch_dim]
                if n
                else None
                for n in op.outputs
            ]
            parts.append([op.op_type, op.domain, _attrs_json(op.attributes), sources, outputs])
        return _digest(parts)


def producers(ops: Iterable[Op]) -> Mapping[str, Op]:
    """Tensor -> the op among `ops` that writes it."""
    return MappingProxyType({out: op for op in ops for out in op.outputs if out})


def consumers(ops: Iterable[Op]) -> Mapping[str, tuple[Op, ...]]:
    """Tensor -> the ops among `ops` that read it, in order (each op once)."""
    found: dict[str, list[Op]] = {}
    for op in ops:
        for name in dict.fromkeys(op.present_inputs):
            found.setdefault(name, []).append(op)
    return MappingProxyType({name: tuple(found_ops) for name, found_ops in found.items()})


def split_batch(tensors: Mapping[str, Tensor], ways: int) -> dict[str, Tensor]:
    """Every tensor with its batch dimension divided `ways` ways: the graph at microbatch size
    (ways = microbatches) or one device's share of a batch split (ways = devices)."""
    split: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        if tensor.batch_dim is None or ways == 1:
            split[name] = tensor
            continue
        shape = list(tensor.shape)
        shape[tensor.batch_dim] //= ways
        split[name] = replace(tensor, shape=tuple(shape))
    return split


def _sorted(tensors: Iterable[Tensor]) -> list[Tensor]:
    return sorted(tensors, key=lambda t: t.name)


def _attrs_json(attributes: tuple[tuple[str, AttrValue], ...]) -> list[object]:
    return [[key, list(value) if isinstance(value, tuple) else value] for key, value in attributes]


def _digest(*parts: object) -> str:
    text = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
