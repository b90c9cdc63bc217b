"""Pooling windows: MaxPool, AveragePool, LpPool.

Notation: batch and channels split; the spatial labels (windows) stay whole. FLOPs: one per
output element per kernel element. Kernel class: elementwise (a stream over the input).
Saved: max and Lp pooling keep their input (the gradient goes to the argmax), average pooling
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from cost_models.compute import CostClass
from planner.graph import Op, Tensor
from planner.notation import Fresh, Labels, NoRule, Notation, Shapes
from planner.ops.flops import product
from planner.ops.registry import Saved, Traffic, register

FAMILY = "pooling"


def _pool(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.input(0)
    if x is None or len(x) < 3:
        raise NoRule
    n, c = fresh(), fresh()
    x_spatial, y_spatial = fresh.many(len(x) - 2), fresh.many(len(x) - 2)
    outputs: list[Labels | None] = [(n, c, *y_spatial)]
    outputs.extend(
        (n, c, *y_spatial) if shapes.output(i) is not None else None
        for i in range(1, shapes.num_outputs)
    )
    return Notation(
        ((n, c, *x_spatial),), tuple(outputs), frozenset(x_spatial) | frozenset(y_spatial)
    )


def _pool_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    kernel = op.attr("kernel_shape", ())
    assert isinstance(kernel, tuple)
    return float(tensors[op.outputs[0]].num_elements * product(int(k) for k in kernel))


for _types, _saved in ((("MaxPool", "LpPool"), Saved.INPUTS), (("AveragePool",), Saved.NOTHING)):
    register(
        _types,
        family=FAMILY,
        notation=_pool,
        flops=_pool_flops,
        traffic=Traffic.STREAMING,
        saved=_saved,
        cost=CostClass.ELEMENTWISE,
    )
