"""FLOP counts shared by the op families: per element of the output or of the input.

Contractions count exactly, in `planner/ops/contractions.py` (one multiply-add is two FLOPs).
Every other op is counted by elements, with a per-element operation count for the ops that do
more than one operation per element. Source: the operation counts of the textbook formulas
(softmax = max, subtract, exp, sum, divide = 5); transcendental functions count as one
operation each (empirical only in that sense). These ops are memory-bound, so the count matters
little to their time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from planner.graph import Op, Tensor
from planner.ops.registry import FlopsRule


def product(values: Iterable[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def per_output_element(count: float = 1.0) -> FlopsRule:
    """`count` operations per element of the first output."""

    def flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
        if not op.outputs or not op.outputs[0]:
            return 0.0
        return count * tensors[op.outputs[0]].num_elements

    return flops


def per_input_element(count: float = 1.0) -> FlopsRule:
    """`count` operations per element of the first input (a reduction reads it all)."""

    def flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
        if not op.inputs or not op.inputs[0]:
            return 0.0
        return count * tensors[op.inputs[0]].num_elements

    return flops


def no_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    """Data movement, views and shape arithmetic: no arithmetic."""
    del op, tensors
    return 0.0
