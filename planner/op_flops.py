"""Forward FLOPs of one op from its static shapes.

Contractions (MatMul, Gemm, Einsum, Conv, ConvTranspose) are exact: one multiply-add is two
FLOPs. Every other op is counted by elements, with a per-element operation count for the ops
that do more than one operation per element (an approximation: these ops are memory-bound, so
their time is set by bytes moved, and the count matters little).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cost_models.compute import DATA_MOVEMENT_OPS
from planner.graph import VIEW_OPS, Op, Tensor

# Approximate floating-point operations per output (or reduced input) element. Source: operation
# counts of the textbook formulas (e.g. softmax = max, subtract, exp, sum, divide = 5); empirical
# only in the sense that transcendental functions are counted as one operation.
_FLOPS_PER_ELEMENT: Mapping[str, float] = {
    "Softmax": 5.0,
    "LogSoftmax": 5.0,
    "LayerNormalization": 8.0,
    "SimplifiedLayerNormalization": 6.0,
    "BatchNormalization": 4.0,
    "InstanceNormalization": 8.0,
    "GroupNormalization": 8.0,
    "Gelu": 8.0,
    "FastGelu": 8.0,
    "Erf": 4.0,
    "Tanh": 4.0,
    "Sigmoid": 4.0,
    "Exp": 1.0,
    "Log": 1.0,
    "Sqrt": 1.0,
    "Pow": 1.0,
}
# Ops without arithmetic: data movement, and those that index, sort or make shapes.
_ZERO_FLOP_OPS = DATA_MOVEMENT_OPS | frozenset(
    {
        "Shape",
        "Size",
        "ConstantOfShape",
        "Range",
        "Trilu",
        "OneHot",
        "TopK",
        "ArgMax",
        "ArgMin",
        "NonZero",
    }
)
_REDUCTIONS = frozenset(
    {
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL2",
        "ReduceSumSquare",
        "GlobalAveragePool",
        "GlobalMaxPool",
    }
)


def op_flops(op: Op, tensors: Mapping[str, Tensor]) -> float:
    """Forward FLOPs of `op`, whose tensors all have static shapes in `tensors`."""
    shapes = [tensors[name].shape if name else () for name in op.inputs]
    out = tensors[op.outputs[0]] if op.outputs and op.outputs[0] else None
    kind = op.op_type
    if kind in VIEW_OPS or kind in _ZERO_FLOP_OPS:
        return 0.0
    if kind == "MatMul":
        return _matmul_flops(shapes[0], shapes[1])
    if kind == "Gemm":
        return _gemm_flops(op, shapes)
    if kind == "Einsum":
        return _einsum_flops(str(op.attr("equation", "")), shapes)
    if kind in ("Conv", "ConvTranspose") and out is not None:
        return _conv_flops(op, shapes, out.shape)
    if kind in ("MaxPool", "AveragePool", "LpPool") and out is not None:
        kernel = op.attr("kernel_shape", ())
        assert isinstance(kernel, tuple)
        return float(out.num_elements * _product(int(k) for k in kernel))
    per_element = _FLOPS_PER_ELEMENT.get(kind, 1.0)
    if kind in _REDUCTIONS and shapes and shapes[0]:
        return per_element * _product(shapes[0])
    if out is None:
        return 0.0
    return per_element * out.num_elements


def _product(values: Iterable[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _matmul_flops(a: tuple[int, ...], b: tuple[int, ...]) -> float:
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
    batch = _product(max(x, y) for x, y in zip(batch_a, batch_b, strict=True))
    return 2.0 * batch * m * k * n


def _gemm_flops(op: Op, shapes: list[tuple[int, ...]]) -> float:
    a, b = shapes[0], shapes[1]
    m, k = (a[1], a[0]) if op.attr("transA", 0) else (a[0], a[1])
    n = b[0] if op.attr("transB", 0) else b[1]
    bias = m * n if len(shapes) > 2 and shapes[2] else 0
    return 2.0 * m * k * n + bias


def _einsum_flops(equation: str, shapes: list[tuple[int, ...]]) -> float:
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
    total = float(_product(extents.values()))
    return 2.0 * total * max(1, len(shapes) - 1) if len(shapes) > 1 else total


def _conv_flops(op: Op, shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> float:
    # Grouping is already in the weight's shape.
    weight = shapes[1]
    if op.op_type == "Conv":
        # weight [C_out, C_in / group, k...]; each output element sums C_in/group * prod(k) terms.
        per_output = weight[1] * _product(weight[2:])
        flops = 2.0 * _product(out_shape) * per_output
    else:
        # ConvTranspose weight [C_in, C_out / group, k...]: every input element scatters into
        # C_out/group * prod(k) outputs.
        x = shapes[0]
        flops = 2.0 * _product(x) * weight[1] * _product(weight[2:])
    if len(shapes) > 2 and shapes[2]:
        flops += _product(out_shape)
    return flops
