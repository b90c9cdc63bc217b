"""The op registry: every fact the planner knows about an ONNX op type, one module per family.

`planner/ops/registry.py` says what a registration holds; the families register their op types
when this package is imported: `elementwise`, `contractions`, `normalisation`, `reductions`,
`pooling`, `data_movement`, `sources`. Everything else reads the facts through the functions
here: the notation of an op, its FLOPs, its memory traffic, what its backward keeps, its kernel
class. An op type no family registers runs replicated (its notation says it is unknown), is
priced as an elementwise op of one operation per output element, and keeps all its inputs.
`alpa-plan ops` lists the registry (README.md carries that table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from cost_models.compute import CostClass
from planner.graph import FLOAT_DTYPES, Graph, Op, Tensor
from planner.notation import Fresh, NoRule, Notation, Shapes, fallback
from planner.ops import (  # noqa: F401  (each registers its family)
    contractions,
    data_movement,
    elementwise,
    normalisation,
    pooling,
    reductions,
    sources,
)
from planner.ops.flops import per_output_element
from planner.ops.registry import OpInfo, Saved, Traffic, info_of, registered

__all__ = [
    "OpInfo",
    "Saved",
    "Traffic",
    "cast_floats",
    "cost_class_of",
    "info_of",
    "is_view",
    "notation_of",
    "op_flops",
    "op_traffic_bytes",
    "priced",
    "recount",
    "registered",
    "saved_rule_of",
    "unknown_op_types",
]

_UNKNOWN_FLOPS = per_output_element()


def notation_of(op: Op, tensors: Mapping[str, Tensor]) -> Notation:
    """The op's index notation; a replicated fallback when its type has no rule (or its rule
    does not cover this instance: an unusual attribute or rank)."""
    shapes = Shapes(op, tensors)
    fresh = Fresh()
    info = info_of(op)
    if info is not None:
        try:
            return info.notation(op, shapes, fresh)
        except NoRule:
            pass
    return fallback(shapes, fresh)


def op_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    """Forward FLOPs of `op`, whose tensors all have static shapes in `tensors`."""
    info = info_of(op)
    return (info.flops if info is not None else _UNKNOWN_FLOPS)(op, tensors)


def cost_class_of(op: Op) -> CostClass:
    """The kernel class that prices the op (`cost_models.compute.CostClass`)."""
    info = info_of(op)
    return info.cost if info is not None else CostClass.ELEMENTWISE


def saved_rule_of(op: Op) -> Saved:
    """What the op's backward keeps of its forward; an unknown op keeps all its inputs."""
    info = info_of(op)
    return info.saved if info is not None else Saved.INPUTS


def is_view(op: Op) -> bool:
    """Whether the op only relabels memory (a reshape and friends)."""
    info = info_of(op)
    return info is not None and info.traffic is Traffic.VIEW


def op_traffic_bytes(op: Op, tensors: Mapping[str, Tensor]) -> tuple[int, int]:
    """(bytes read, bytes written) of one op in memory, from the sizes of its tensors: a view
    moves nothing; a selection reads of its first input only what it writes, plus its index
    operands in full."""
    info = info_of(op)
    traffic = info.traffic if info is not None else Traffic.STREAMING
    if traffic is Traffic.VIEW:
        return 0, 0
    written = sum(tensors[name].size_bytes for name in op.outputs if name)
    inputs = [tensors[name] for name in dict.fromkeys(op.present_inputs)]
    if traffic is Traffic.SELECTING and inputs:
        return written + sum(t.size_bytes for t in inputs[1:]), written
    return sum(t.size_bytes for t in inputs), written


def recount(graph: Graph) -> Graph:
    """The graph with every op's bytes read and written recomputed from its tensors."""
    ops = []
    for op in graph.ops:
        read, written = op_traffic_bytes(op, graph.tensors)
        ops.append(replace(op, bytes_read=read, bytes_written=written))
    return replace(graph, ops=tuple(ops))


def priced(graph: Graph) -> Graph:
    """The graph with every op's FLOPs and bytes from the registry."""
    ops = []
    for op in graph.ops:
        read, written = op_traffic_bytes(op, graph.tensors)
        ops.append(
            replace(op, flops=op_flops(op, graph.tensors), bytes_read=read, bytes_written=written)
        )
    return replace(graph, ops=tuple(ops))


def cast_floats(graph: Graph, dtype: str) -> Graph:
    """The same graph with every floating-point tensor stored as `dtype`.

    Planning for float16 training of a model exported in float32 prices its tensors at two
    bytes each; op byte counts are recomputed."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"expected a floating-point dtype, found {dtype!r}")
    tensors = {
        name: replace(t, dtype=dtype) if t.is_float else t for name, t in graph.tensors.items()
    }
    return recount(replace(graph, tensors=tensors))


def unknown_op_types(graph: Graph) -> tuple[str, ...]:
    """The op types of `graph` that no rule knows: they run replicated (and plans say so)."""
    return tuple(
        sorted({op.op_type for op in graph.ops if not notation_of(op, graph.tensors).known})
    )
