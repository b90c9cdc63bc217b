"""Contractions: MatMul, Gemm, Einsum, Conv, ConvTranspose.

Notation: the contracted labels (matmul's k, a convolution's input channels) are in the inputs
and not the output: splitting one leaves partial sums that an all-reduce completes. Batch
dimensions of MatMul broadcast numpy-style. Convolutions split the batch and the output
channels; spatial labels (windows) stay whole, and a grouped convolution keeps its channels
whole.

FLOPs are exact: one multiply-add is two FLOPs; a bias adds one per output. Kernel class:
contraction (matmul throughput); the backward costs twice the forward (dX and dW are two
products of the forward's size). Saved: their activation inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

from cost_models.compute import CostClass
from planner.graph import Op, Tensor
from planner.notation import Fresh, Labels, NoRule, Notation, Shapes, broadcast, int_attr
from planner.ops.flops import product
from planner.ops.registry import Saved, Traffic, register

FAMILY = "contractions"


def _matmul(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    a, b, out = shapes.input(0), shapes.input(1), shapes.output(0)
    if a is None or b is None or out is None or not a or not b:
        raise NoRule
    k = fresh()
    m = fresh() if len(a) > 1 else None
    n = fresh() if len(b) > 1 else None
    batch_rank = len(out) - (m is not None) - (n is not None)
    batch = fresh.many(batch_rank)
    batch_shape = out[:batch_rank]
    unsplittable: set[str] = set()

    def operand(shape: tuple[int, ...], tail: Labels) -> Labels:
        leading, fixed = broadcast(batch, batch_shape, shape[: len(shape) - len(tail)], fresh)
        unsplittable.update(fixed)
        return leading + tail

    a_labels = operand(a, (m, k) if m else (k,))
    b_labels = operand(b, (k, n) if n else (k,))
    output = batch + ((m,) if m else ()) + ((n,) if n else ())
    return Notation((a_labels, b_labels), (output,), frozenset(unsplittable))


def _gemm(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    m, k, n = fresh(), fresh(), fresh()
    a = (k, m) if int_attr(op, "transA", 0) else (m, k)
    b = (n, k) if int_attr(op, "transB", 0) else (k, n)
    out = shapes.output(0)
    inputs: list[Labels | None] = [a, b]
    unsplittable: set[str] = set()
    c = shapes.input(2)
    if c is not None and out is not None:
        labels, fixed = broadcast((m, n), out, c, fresh)
        inputs.append(labels)
        unsplittable |= fixed
    return Notation(tuple(inputs), ((m, n),), frozenset(unsplittable))


def _einsum(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    equation = str(op.attr("equation", "")).replace(" ", "")
    if "..." in equation or not equation:
        raise NoRule
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if not arrow:
        letters = "".join(terms)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    mapping: dict[str, str] = {}
    for letter in "".join(terms) + rhs:
        mapping.setdefault(letter, fresh())
    inputs = tuple(tuple(mapping[c] for c in term) for term in terms)
    return Notation(inputs, (tuple(mapping[c] for c in rhs),))


def _conv(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    x, w, out = shapes.input(0), shapes.input(1), shapes.output(0)
    if x is None or w is None or out is None or len(x) < 3:
        raise NoRule
    spatial = len(x) - 2
    n, o = fresh(), fresh()
    group = int_attr(op, "group", 1)
    c_in, c_w = (fresh(), None) if group == 1 else (fresh(), fresh())
    x_spatial, w_spatial, y_spatial = fresh.many(spatial), fresh.many(spatial), fresh.many(spatial)
    unsplittable = set(x_spatial) | set(w_spatial) | set(y_spatial)
    if c_w is not None:
        unsplittable |= {c_in, c_w}
    x_labels = (n, c_in, *x_spatial)
    w_labels = (o, c_w or c_in, *w_spatial)
    inputs: list[Labels | None] = [x_labels, w_labels]
    if shapes.input(2) is not None:
        inputs.append((o,))
    if group != 1:
        # Grouped convolution: output channels follow input channels group by group.
        unsplittable.add(o)
    return Notation(tuple(inputs), ((n, o, *y_spatial),), frozenset(unsplittable))


def _conv_transpose(op: Op, shapes: Shapes, fresh: Fresh) -> Notation:
    """x [N, C_in, ...] with w [C_in, C_out / group, k...] -> y [N, C_out, ...]: the input
    channels are contracted; the batch and (ungrouped) output channels split."""
    x, w, out = shapes.input(0), shapes.input(1), shapes.output(0)
    if x is None or w is None or out is None or len(x) < 3:
        raise NoRule
    spatial = len(x) - 2
    n, c_in, o = fresh(), fresh(), fresh()
    x_spatial, w_spatial, y_spatial = fresh.many(spatial), fresh.many(spatial), fresh.many(spatial)
    unsplittable = set(x_spatial) | set(w_spatial) | set(y_spatial)
    if int_attr(op, "group", 1) != 1:
        unsplittable |= {c_in, o}
    inputs: list[Labels | None] = [(n, c_in, *x_spatial), (c_in, o, *w_spatial)]
    if shapes.input(2) is not None:
        inputs.append((o,))
    return Notation(tuple(inputs), ((n, o, *y_spatial),), frozenset(unsplittable))


def _matmul_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    return matmul_flops(tensors[op.inputs[0]].shape, tensors[op.inputs[1]].shape)


def _gemm_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    return gemm_flops(op, [tensors[name].shape if name else () for name in op.inputs])


def _einsum_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    shapes = [tensors[name].shape if name else () for name in op.inputs]
    return einsum_flops(str(op.attr("equation", "")), shapes)


def _conv_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    shapes = [tensors[name].shape if name else () for name in op.inputs]
    return conv_flops(op, shapes, tensors[op.outputs[0]].shape)


def matmul_flops(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """numpy.matmul semantics: 1-D operands are promoted, leading dims broadcast."""
    if len(a) == 1:
        a = (1, *a)
    if len(b) == 1:
        b = (*b, 1)
    m, k = a[-2], a[-1]
    n = b[-1]
    batch_a, batch_b = a[:-2], b[:-2]
    width = max(len(batch_a), len(batch_b))
    batch_a = (1,) * (width - len(batch_a)) + batch_a
    batch_b = (1,) * (width - len(batch_b)) + batch_b
    batch = product(max(x, y) for x, y in zip(batch_a, batch_b, strict=True))
    return 2.0 * batch * m * k * n


def gemm_flops(op: Op, shapes: list[tuple[int, ...]]) -> float:
    a, b = shapes[0], shapes[1]
    m, k = (a[1], a[0]) if op.attr("transA", 0) else (a[0], a[1])
    n = b[0] if op.attr("transB", 0) else b[1]
    bias = m * n if len(shapes) > 2 and shapes[2] else 0
    return 2.0 * m * k * n + bias


def einsum_flops(equation: str, shapes: list[tuple[int, ...]]) -> float:
    """2 x (product of every label's extent) per pairwise product; one per element otherwise."""
    lhs = equation.replace(" ", "").split("->")[0]
    extents: dict[str, int] = {}
    for term, shape in zip(lhs.split(","), shapes, strict=False):
        labels = term.replace("...", "")
        explicit = len(labels)
        ellipsis = len(shape) - explicit
        if "..." in term:
            head = term.index("...")
            for position in range(ellipsis):
                extents[f"...{position}"] = max(
                    extents.get(f"...{position}", 1), shape[head + position]
                )
            dims = [*shape[:head], *shape[head + ellipsis :]]
        else:
            dims = list(shape)
        for label, extent in zip(labels, dims, strict=False):
            extents[label] = max(extents.get(label, 1), extent)
    total = float(product(extents.values()))
    return 2.0 * total * max(1, len(shapes) - 1) if len(shapes) > 1 else total


def conv_flops(op: Op, shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> float:
    # Grouping is already in the weight's shape.
    weight = shapes[1]
    if op.op_type == "Conv":
        # weight [C_out, C_in / group, k...]; each output element sums C_in/group * prod(k) terms.
        per_output = weight[1] * product(weight[2:])
        flops = 2.0 * product(out_shape) * per_output
    else:
        # ConvTranspose weight [C_in, C_out / group, k...]: every input element scatters into
        # C_out/group * prod(k) outputs.
        x = shapes[0]
        flops = 2.0 * product(x) * weight[1] * product(weight[2:])
    if len(shapes) > 2 and shapes[2]:
        flops += product(out_shape)
    return flops


for _op_type, _rule, _flops in (
    ("MatMul", _matmul, _matmul_flops),
    ("Gemm", _gemm, _gemm_flops),
    ("Einsum", _einsum, _einsum_flops),
    ("Conv", _conv, _conv_flops),
    ("ConvTranspose", _conv_transpose, _conv_flops),
):
    register(
        (_op_type,),
        family=FAMILY,
        notation=_rule,
        flops=_flops,
        traffic=Traffic.STREAMING,
        saved=Saved.INPUTS,
        cost=CostClass.CONTRACTION,
    )
