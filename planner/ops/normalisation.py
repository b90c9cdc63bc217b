"""Normalisations: Softmax and LogSoftmax, layer and RMS norms, batch, instance, group norms.

Notation: the normalised labels are `statistics`: splitting one costs an all-reduce of two
numbers per row (mean and variance, or max and sum), forward and backward. Batch norm
normalises over everything but the channel, which it may split freely (its statistics are
per channel); instance norm over the spatial dimensions of each (sample, channel); group norm
over channel groups and space, so its channels stay whole.

FLOPs per element: softmax 5 (max, subtract, exp, sum, divide), layer norm 8, RMS norm 6, batch
norm 4 (with running statistics), instance and group norm 8. Kernel class: a row reduction,
except batch norm (elementwise with its statistics). Saved: softmax keeps its output, the
norms their inputs.
"""

from __future__ import annotations

from cost_models.compute import CostClass
from planner.graph import Op
from planner.notation import (
    Fresh,
    Labels,
    NoRule,
    Notation,
    Shapes,
    axis_index,
    broadcast,
    int_attr,
)
from planner.ops.flops import per_output_element
from planner.ops.registry import Saved, Traffic, register

FAMILY = "normalisation"


def _softmax(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.needed_input(0)
    labels = fresh.many(len(x))
    axis = axis_index(int_attr(op, "axis", -1), len(x))
    return Notation((labels,), (labels,), statistics=frozenset({labels[axis]}))


def _layer_norm(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.needed_input(0)
    labels = fresh.many(len(x))
    axis = axis_index(int_attr(op, "axis", -1), len(x))
    normalized = labels[axis:]
    inputs: list[Labels | None] = [labels]
    unsplittable: set[str] = set()
    for position in range(1, shapes.num_inputs):
        shape = shapes.input(position)
        if shape is None:
            inputs.append(None)
            continue
        param, fixed = broadcast(normalized, x[axis:], shape, fresh)
        inputs.append(param)
        unsplittable |= fixed
    outputs: list[Labels | None] = [labels]
    for position in range(1, shapes.num_outputs):
        if shapes.output(position) is None:
            outputs.append(None)
            continue
        reduced = fresh.many(len(x) - axis)  # mean / inverse std keep the normalised dims as 1
        unsplittable |= set(reduced)
        outputs.append(labels[:axis] + reduced)
    return Notation(
        tuple(inputs), tuple(outputs), frozenset(unsplittable), statistics=frozenset(normalized)
    )


def _batch_norm(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.input(0)
    if x is None or len(x) < 2:
        raise NoRule
    labels = fresh.many(len(x))
    channel = (labels[1],)
    inputs = (labels, *[channel if shapes.input(i) is not None else None for i in range(1, 5)])
    outputs: list[Labels | None] = [labels]
    outputs.extend(
        channel if shapes.output(i) is not None else None for i in range(1, shapes.num_outputs)
    )
    return Notation(tuple(inputs[: shapes.num_inputs]), tuple(outputs))


def _instance_norm(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """x [N, C, spatial...] with scale and bias [C]: statistics over the spatial labels."""
    x = shapes.input(0)
    if x is None or len(x) < 3:
        raise NoRule
    labels = fresh.many(len(x))
    channel = (labels[1],)
    inputs = (labels, *[channel if shapes.input(i) is not None else None for i in (1, 2)])
    return Notation(tuple(inputs[: shapes.num_inputs]), (labels,), statistics=frozenset(labels[2:]))


def _group_norm(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """x [N, C, spatial...] with scale and bias [C]: groups of channels normalised together;
    only the batch splits."""
    x = shapes.input(0)
    if x is None or len(x) < 3:
        raise NoRule
    labels = fresh.many(len(x))
    channel = (labels[1],)
    inputs = (labels, *[channel if shapes.input(i) is not None else None for i in (1, 2)])
    return Notation(
        tuple(inputs[: shapes.num_inputs]), (labels,), unsplittable=frozenset(labels[1:])
    )


for _types, _rule, _count, _saved, _cost in (
    (("Softmax", "LogSoftmax"), _softmax, 5.0, Saved.OUTPUT, CostClass.REDUCTION),
    (("LayerNormalization",), _layer_norm, 8.0, Saved.INPUTS, CostClass.REDUCTION),
    (("SimplifiedLayerNormalization", "RMSNormalization"), _layer_norm, 6.0, Saved.INPUTS,
     CostClass.REDUCTION),
    (("BatchNormalization",), _batch_norm, 4.0, Saved.INPUTS, CostClass.ELEMENTWISE),
    (("InstanceNormalization",), _instance_norm, 8.0, Saved.INPUTS, CostClass.REDUCTION),
    (("GroupNormalization",), _group_norm, 8.0, Saved.INPUTS, CostClass.REDUCTION),
):  # fmt: skip
    register(
        _types,
        family=FAMILY,
        notation=_rule,
        flops=per_output_element(_count),
        traffic=Traffic.STREAMING,
        saved=_saved,
        cost=_cost,
    )
