"""Data movement: views, transposes, gathers, concatenation, splits, windows, broadcasts.

Notation: labels move with the data. A reshape lets a split follow the major dimension of each
run of dimensions it merges or splits (minor ones stay whole); Transpose permutes labels;
Gather's gathered axis is contracted (a vocabulary split is a masked lookup whose partial
results an all-reduce sums); Concat and Split keep their axis whole; Slice, Pad and Tile map
unchanged dimensions through; Expand's new dimensions exist only in the output (a split there
is a local slice); Trilu keeps its matrix dimensions whole. Scatters, GatherElements, GatherND
and Resize have no sharding rule beyond replication (registered so that they are priced and
kept as they are, not reported as unknown).

FLOPs: none (Resize: one per output element). Traffic: reshapes and friends are views;
Gather, GatherElements, GatherND and Slice read only what they emit. Kernel class: copy.
Saved: nothing, except the gathers (their indices), Resize and the scatters (their inputs).
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
    int_attr,
    replicated,
)
from planner.ops.flops import no_flops, per_output_element
from planner.ops.registry import Saved, Traffic, register

FAMILY = "data movement"


def _transpose(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.needed_input(0)
    labels = fresh.many(len(x))
    perm = op.attr("perm")
    order = (
        tuple(int(p) for p in perm) if isinstance(perm, tuple) else tuple(reversed(range(len(x))))
    )
    return Notation((labels,), (tuple(labels[p] for p in order),))


def _reshape_groups(
    source: tuple[int, ...], target: tuple[int, ...]
) -> list[tuple[list[int], list[int]]]:
    """Split both shapes into runs of dims with equal products: the dims that a reshape merges
    or splits together."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(source) or j < len(target):
        run_source: list[int] = []
        run_target: list[int] = []
        product_source = product_target = 1
        if i < len(source):
            run_source.append(i)
            product_source *= source[i]
            i += 1
        if j < len(target):
            run_target.append(j)
            product_target *= target[j]
            j += 1
        while product_source != product_target:
            if product_source < product_target and i < len(source):
                run_source.append(i)
                product_source *= source[i]
                i += 1
            elif product_target < product_source and j < len(target):
                run_target.append(j)
                product_target *= target[j]
                j += 1
            else:
                raise NoRule
        groups.append((run_source, run_target))
    return groups


def _reshape(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """A split may follow a reshape on the major (first non-unit) dim of each merged or split
    run of dims; minor dims stay unsplit."""
    x, out = shapes.input(0), shapes.output(0)
    if x is None or out is None:
        raise NoRule
    source: list[str] = [fresh() for _ in x]
    target: list[str] = [fresh() for _ in out]
    unsplittable = set(source) | set(target)
    for run_source, run_target in _reshape_groups(x, out):
        major_source = next((i for i in run_source if x[i] != 1), None)
        major_target = next((j for j in run_target if out[j] != 1), None)
        if major_source is not None and major_target is not None:
            target[major_target] = source[major_source]
            unsplittable.discard(source[major_source])
    inputs: tuple[Labels | None, ...] = (
        tuple(source),
        *(None for _ in range(1, shapes.num_inputs)),
    )
    return Notation(inputs, (tuple(target),), frozenset(unsplittable))


def _gather(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """out = data[..., indices, ...] along `axis`: the gathered axis of data is contracted
    (a vocabulary split is a masked lookup whose partial results an all-reduce sums)."""
    data, indices, out = shapes.input(0), shapes.input(1), shapes.output(0)
    if data is None or indices is None or out is None:
        raise NoRule
    axis = axis_index(int_attr(op, "axis", 0), len(data))
    data_labels = fresh.many(len(data))
    index_labels = fresh.many(len(indices))
    output = data_labels[:axis] + index_labels + data_labels[axis + 1 :]
    return Notation((data_labels, index_labels), (output,))


def _concat(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    out = shapes.output(0)
    if out is None:
        raise NoRule
    axis = axis_index(int_attr(op, "axis", 0), len(out))
    labels = list(fresh.many(len(out)))
    unsplittable = {labels[axis]}
    inputs: list[Labels | None] = []
    for position in range(shapes.num_inputs):
        if shapes.input(position) is None:
            inputs.append(None)
            continue
        own = fresh()
        unsplittable.add(own)
        inputs.append((*tuple(labels[:axis]), own, *tuple(labels[axis + 1 :])))
    return Notation(tuple(inputs), (tuple(labels),), frozenset(unsplittable))


def _split(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x = shapes.needed_input(0)
    axis = axis_index(int_attr(op, "axis", 0), len(x))
    labels = fresh.many(len(x))
    unsplittable = {labels[axis]}
    outputs: list[Labels | None] = []
    for position in range(shapes.num_outputs):
        if shapes.output(position) is None:
            outputs.append(None)
            continue
        own = fresh()
        unsplittable.add(own)
        outputs.append((*labels[:axis], own, *labels[axis + 1 :]))
    inputs: tuple[Labels | None, ...] = (labels, *(None for _ in range(1, shapes.num_inputs)))
    return Notation(inputs, tuple(outputs), frozenset(unsplittable))


def _same_rank_window(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """Slice, Pad, Tile and friends: dims whose extent the op keeps map through; changed dims
    stay whole. Only the first input carries data."""
    x, out = shapes.input(0), shapes.output(0)
    if x is None or out is None or len(x) != len(out):
        raise NoRule
    source: list[str] = []
    target: list[str] = []
    unsplittable: set[str] = set()
    for extent_in, extent_out in zip(x, out, strict=True):
        if extent_in == extent_out:
            label = fresh()
            source.append(label)
            target.append(label)
        else:
            pair = (fresh(), fresh())
            source.append(pair[0])
            target.append(pair[1])
            unsplittable |= set(pair)
    inputs: tuple[Labels | None, ...] = (
        tuple(source),
        *(None for _ in range(1, shapes.num_inputs)),
    )
    return Notation(inputs, (tuple(target),), frozenset(unsplittable))


def _expand(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """Broadcast to a larger shape: new and stretched dims exist only in the output, where a
    split is a local slice."""
    x, out = shapes.input(0), shapes.output(0)
    if x is None or out is None or len(x) > len(out):
        raise NoRule
    target = fresh.many(len(out))
    offset = len(out) - len(x)
    source: list[str] = []
    unsplittable: set[str] = set()
    for position, extent in enumerate(x):
        if extent == out[offset + position]:
            source.append(target[offset + position])
        else:
            label = fresh()
            unsplittable.add(label)
            source.append(label)
    return Notation((tuple(source), None), (target,), frozenset(unsplittable))


def _trilu(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """The upper or lower triangle of the last two dimensions, which stay whole."""
    x = shapes.input(0)
    if x is None or len(x) < 2:
        raise NoRule
    labels = fresh.many(len(x))
    inputs: tuple[Labels | None, ...] = (labels, *(None for _ in range(1, shapes.num_inputs)))
    return Notation(inputs, (labels,), frozenset(labels[-2:]))


_C = CostClass.COPY
for _types, _rule, _traffic, _saved in (
    (("Reshape", "Flatten", "Squeeze", "Unsqueeze"), _reshape, Traffic.VIEW, Saved.NOTHING),
    (("Transpose",), _transpose, Traffic.STREAMING, Saved.NOTHING),
    (("Gather",), _gather, Traffic.SELECTING, Saved.SECOND_INPUT),
    (("GatherElements", "GatherND"), replicated, Traffic.SELECTING, Saved.SECOND_INPUT),
    (("Concat",), _concat, Traffic.STREAMING, Saved.NOTHING),
    (("Split",), _split, Traffic.STREAMING, Saved.NOTHING),
    (("Slice",), _same_rank_window, Traffic.SELECTING, Saved.NOTHING),
    (("Pad", "Tile"), _same_rank_window, Traffic.STREAMING, Saved.NOTHING),
    (("Expand",), _expand, Traffic.STREAMING, Saved.NOTHING),
    (("ScatterND", "ScatterElements"), replicated, Traffic.STREAMING, Saved.INPUTS),
):
    register(
        _types,
        family=FAMILY,
        notation=_rule,
        flops=no_flops,
        traffic=_traffic,
        saved=_saved,
        cost=_C,
    )
register(
    ("Trilu",),
    family=FAMILY,
    notation=_trilu,
    flops=no_flops,
    traffic=Traffic.STREAMING,
    saved=Saved.NOTHING,
    cost=CostClass.ELEMENTWISE,
)
register(  # Upsample: Resize's name before opset 10
    ("Resize", "Upsample"),
    family=FAMILY,
    notation=replicated,
    flops=per_output_element(),
    traffic=Traffic.STREAMING,
    saved=Saved.INPUTS,
    cost=CostClass.ELEMENTWISE,
)
