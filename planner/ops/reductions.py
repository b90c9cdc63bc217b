"""Reductions and scans: Reduce*, global pooling, ArgMax/ArgMin, TopK, CumSum.

Notation: a reduced label is in the input only: splitting it leaves partial results that an
all-reduce completes (kept dimensions of extent 1 stay unsplit). ArgMax, ArgMin, TopK and
CumSum work along one axis, which stays whole; every other label is batch-like.

FLOPs: one per input element (reductions read it all), none for ArgMax, ArgMin and TopK, one
per element for CumSum. Kernel class: a row reduction (global pooling: elementwise, as a
stream over the map). Saved: sums and means keep nothing; max, min, products and norms keep
their input.
"""

from __future__ import annotations

from cost_models.compute import CostClass
from planner.graph import Op
from planner.notation import Fresh, Labels, NoRule, Notation, Shapes, axis_index, int_attr
from planner.ops.flops import no_flops, per_input_element, per_output_element
from planner.ops.registry import Saved, Traffic, register

FAMILY = "reductions"


def _reduced_axes(op: Op, shapes: Shapes, rank: int) -> set[int] | None:
    """The axes a Reduce* op reduces: from its `axes` attribute or constant input; None when
    they are not known."""
    attr = op.attr("axes")
    if isinstance(attr, tuple):
        return {axis_index(int(a), rank) for a in attr}
    value = shapes.value(1)
    if value is not None:
        if not value:
            return set(range(rank)) if not int_attr(op, "noop_with_empty_axes", 0) else set()
        return {axis_index(int(a), rank) for a in value}
    if shapes.input(1) is None:
        return set(range(rank))
    return None


def _reduce(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.needed_input(0)
    axes = _reduced_axes(op, shapes, len(x))
    if axes is None:
        raise NoRule
    labels = fresh.many(len(x))
    keep = int_attr(op, "keepdims", 1)
    output: list[str] = []
    unsplittable: set[str] = set()
    for position, label in enumerate(labels):
        if position not in axes:
            output.append(label)
        elif keep:
            kept = fresh()
            unsplittable.add(kept)
            output.append(kept)
    inputs: tuple[Labels | None, ...] = (labels, *(None for _ in range(1, shapes.num_inputs)))
    return Notation(inputs, (tuple(output),), frozenset(unsplittable))


def _global_pool(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.input(0)
    if x is None or len(x) < 3:
        raise NoRule
    n, c = fresh(), fresh()
    spatial = fresh.many(len(x) - 2)
    ones = fresh.many(len(x) - 2)
    return Notation(((n, c, *spatial),), ((n, c, *ones),), frozenset(spatial) | frozenset(ones))


def _along_axis(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """Ops that work along one axis that must stay whole (TopK, CumSum, ArgMax, Softmax-like
    scans); every other dimension is batch-like."""
    x = shapes.needed_input(0)
    if op.op_type == "CumSum":
        value = shapes.value(1)
        if not value:
            raise NoRule
        axis = axis_index(int(value[0]), len(x))
    else:
        axis = axis_index(int_attr(op, "axis", -1 if op.op_type == "TopK" else 0), len(x))
    labels = fresh.many(len(x))
    inputs: tuple[Labels | None, ...] = (labels, *(None for _ in range(1, shapes.num_inputs)))
    outputs: list[Labels | None] = []
    unsplittable = {labels[axis]}
    for position in range(shapes.num_outputs):
        out = shapes.output(position)
        if out is None:
            outputs.append(None)
        elif len(out) == len(x):
            new = fresh()
            unsplittable.add(new)
            outputs.append((*labels[:axis], new, *labels[axis + 1 :]))
        elif len(out) == len(x) - 1:
            outputs.append(labels[:axis] + labels[axis + 1 :])
        else:
            raise NoRule
    return Notation(inputs, tuple(outputs), frozenset(unsplittable))


_R = CostClass.REDUCTION
for _types, _rule, _flops, _saved, _cost in (
    (("ReduceSum", "ReduceMean"), _reduce, per_input_element(), Saved.NOTHING, _R),
    (
        ("ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare",
         "ReduceLogSumExp"),
        _reduce, per_input_element(), Saved.INPUTS, _R,
    ),
    (("GlobalAveragePool",), _global_pool, per_input_element(), Saved.NOTHING,
     CostClass.ELEMENTWISE),
    (("GlobalMaxPool",), _global_pool, per_input_element(), Saved.INPUTS, CostClass.ELEMENTWISE),
    (("ArgMax", "ArgMin", "TopK"), _along_axis, no_flops, Saved.NOTHING, _R),
    (("CumSum",), _along_axis, per_output_element(), Saved.NOTHING, _R),
):  # fmt: skip
    register(
        _types,
        family=FAMILY,
        notation=_rule,
        flops=_flops,
        traffic=Traffic.STREAMING,
        saved=_saved,
        cost=_cost,
    )
