"""Ops computed from shapes or constants alone: Range, ConstantOfShape, OneHot, Shape, Size.

Notation: any slice of the output is computed locally (OneHot: the indices' labels plus the new
depth label). Shape and Size fold at import once shapes are static; they are registered so a
model that keeps one is priced, not reported as unknown. FLOPs: none. Saved: nothing.
"""

from __future__ import annotations

from cost_models.compute import CostClass
from planner.graph import Op
from planner.notation import Fresh, NoRule, Notation, Shapes, axis_index, int_attr
from planner.ops.flops import no_flops
from planner.ops.registry import Saved, Traffic, register

FAMILY = "sources"


def _one_hot(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    indices, out = shapes.input(0), shapes.output(0)
    if indices is None or out is None:
        raise NoRule
    axis = axis_index(int_attr(op, "axis", -1), len(out))
    labels = fresh.many(len(indices))
    depth = fresh()
    output = (*labels[:axis], depth, *labels[axis:])
    return Notation((labels, None, None), (output,))


def _source(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """Ops computed from constants alone (Range, ConstantOfShape): any slice of the output is
    computed locally."""
    outputs = tuple(
        None if shapes.output(i) is None else fresh.many(len(shapes.output(i) or ()))
        for i in range(shapes.num_outputs)
    )
    return Notation(tuple(None for _ in range(shapes.num_inputs)), outputs)


_SOURCES = (("OneHot",), _one_hot), (("Range", "ConstantOfShape", "Shape", "Size"), _source)
for _types, _rule in _SOURCES:
    register(
        _types,
        family=FAMILY,
        notation=_rule,
        flops=no_flops,
        traffic=Traffic.STREAMING,
        saved=Saved.NOTHING,
        cost=CostClass.ELEMENTWISE,
    )
