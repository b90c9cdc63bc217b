"""Index notation: every op described like an einsum (docs/DESIGN.md section 4).

Each dimension of an op's tensors gets a label; a label shared by two tensors is the same index.
From the labels alone follow an op's sharding strategies and their communication:

- batch-like: in the output and in every input that has it (elementwise dims, matmul batch);
- contracted: in inputs, not in the output (matmul k, reduced axes, the vocabulary of an
  embedding lookup): splitting it leaves partial sums that an all-reduce completes;
- free: in one input and the output (matmul n, a weight's output features);
- output-only: created by the op (a broadcast of Expand): splitting it is a local slice.

Labels in `unsplittable` never get a mesh axis (convolution windows, concatenation axes, a
reshape's minor dims); labels in `statistics` are reduced by a normalisation (softmax axis, layer
norm features): splitting them costs an all-reduce of the per-row statistics. An op whose type
has no rule gets every label unsplittable: its only strategy is replicated.

One rule per op family, in a registry from ONNX op type to rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from planner.graph import Graph, Op, Tensor

Labels = tuple[str, ...]


@dataclass(frozen=True)
class Notation:
    """Labels per dimension of each input and output (None: the tensor takes no part, e.g. a
    shape operand or an omitted optional input)."""

    inputs: tuple[Labels | None, ...]
    outputs: tuple[Labels | None, ...]
    unsplittable: frozenset[str] = frozenset()
    statistics: frozenset[str] = frozenset()
    # False when no rule knew the op type: the strategy is a replicated fallback.
    known: bool = True

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label, in order of first appearance."""
        seen: dict[str, None] = {}
        for group in (*self.inputs, *self.outputs):
            for label in group or ():
                seen.setdefault(label, None)
        return tuple(seen)

    @property
    def output_labels(self) -> frozenset[str]:
        return frozenset(label for group in self.outputs for label in group or ())

    @property
    def contracted(self) -> frozenset[str]:
        """Labels of the inputs that no output has."""
        inputs = {label for group in self.inputs for label in group or ()}
        return frozenset(inputs - self.output_labels)


class _Fresh:
    """A supply of distinct labels."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self) -> str:
        self._next += 1
        return f"l{self._next}"

    def many(self, count: int) -> Labels:
        return tuple(self() for _ in range(count))


Rule = Callable[[Op, "_Shapes", _Fresh], Notation]


class _Shapes:
    """Shapes and small constant values of an op's tensors, by input/output position."""

    def __init__(self, op: Op, tensors: Mapping[str, Tensor]) -> None:
        self._op = op
        self._tensors = tensors

    def input(self, position: int) -> tuple[int, ...] | None:
        if position >= len(self._op.inputs) or not self._op.inputs[position]:
            return None
        return self._tensors[self._op.inputs[position]].shape

    def output(self, position: int = 0) -> tuple[int, ...] | None:
        if position >= len(self._op.outputs) or not self._op.outputs[position]:
            return None
        return self._tensors[self._op.outputs[position]].shape

    def value(self, position: int) -> tuple[float, ...] | None:
        if position >= len(self._op.inputs) or not self._op.inputs[position]:
            return None
        return self._tensors[self._op.inputs[position]].value

    @property
    def num_inputs(self) -> int:
        return len(self._op.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._op.outputs)


def notation_of(op: Op, tensors: Mapping[str, Tensor]) -> Notation:
    """The op's index notation; a replicated fallback when its type has no rule."""
    shapes = _Shapes(op, tensors)
    fresh = _Fresh()
    rule = _RULES.get(op.op_type) if not op.domain else None
    if rule is not None:
        try:
            return rule(op, shapes, fresh)
        except _NoRule:
            pass
    return _fallback(shapes, fresh)


class _NoRule(Exception):
    """The rule does not cover this instance (an unusual attribute or rank)."""


def _fallback(shapes: _Shapes, fresh: _Fresh) -> Notation:
    inputs = tuple(
        None if shapes.input(i) is None else fresh.many(len(shapes.input(i) or ()))
        for i in range(shapes.num_inputs)
    )
    outputs = tuple(
        None if shapes.output(i) is None else fresh.many(len(shapes.output(i) or ()))
        for i in range(shapes.num_outputs)
    )
    every = frozenset(label for group in (*inputs, *outputs) for label in group or ())
    return Notation(inputs, outputs, unsplittable=every, known=False)


def _axis(value: int, rank: int) -> int:
    axis = value + rank if value < 0 else value
    if not 0 <= axis < max(rank, 1):
        raise _NoRule
    return axis


def _int_attr(op: Op, name: str, default: int) -> int:
    value = op.attr(name, default)
    if not isinstance(value, int):
        raise _NoRule
    return value


# --- elementwise with numpy broadcasting ---------------------------------------------------


def _broadcast(
    output_labels: Labels, output_shape: tuple[int, ...], shape: tuple[int, ...], fresh: _Fresh
) -> tuple[Labels, set[str]]:
    """Labels of an input broadcast (right-aligned) to the output; dims of extent 1 that
    broadcast get labels of their own, which must stay unsplit."""
    offset = len(output_shape) - len(shape)
    if offset < 0:
        raise _NoRule
    labels: list[str] = []
    unsplittable: set[str] = set()
    for position, extent in enumerate(shape):
        if extent == output_shape[offset + position]:
            labels.append(output_labels[offset + position])
        elif extent == 1:
            label = fresh()
            labels.append(label)
            unsplittable.add(label)
        else:
            raise _NoRule
    return tuple(labels), unsplittable


def _elementwise(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    out = shapes.output(0)
    if out is None:
        raise _NoRule
    output = fresh.many(len(out))
    inputs: list[Labels | None] = []
    unsplittable: set[str] = set()
    for position in range(shapes.num_inputs):
        shape = shapes.input(position)
        if shape is None:
            inputs.append(None)
            continue
        labels, fixed = _broadcast(output, out, shape, fresh)
        inputs.append(labels)
        unsplittable |= fixed
    outputs = (
        output,
        *[output if shapes.output(i) == out else None for i in range(1, shapes.num_outputs)],
    )
    return Notation(tuple(inputs), outputs, frozenset(unsplittable))


def _first_input_only(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    """Elementwise in the first input; the other inputs are scalars or settings (Clip's
    bounds, Dropout's ratio)."""
    notation = _elementwise(op, shapes, fresh)
    inputs = (notation.inputs[0], *(None for _ in notation.inputs[1:]))
    return Notation(inputs, notation.outputs, notation.unsplittable)


# --- contractions ----------------------------------------------------------------------------


def _matmul(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    a, b, out = shapes.input(0), shapes.input(1), shapes.output(0)
    if a is None or b is None or out is None or not a or not b:
        raise _NoRule
    k = fresh()
    m = fresh() if len(a) > 1 else None
    n = fresh() if len(b) > 1 else None
    batch_rank = len(out) - (m is not None) - (n is not None)
    batch = fresh.many(batch_rank)
    batch_shape = out[:batch_rank]
    unsplittable: set[str] = set()

    def operand(shape: tuple[int, ...], tail: Labels) -> Labels:
        leading, fixed = _broadcast(batch, batch_shape, shape[: len(shape) - len(tail)], fresh)
        unsplittable.update(fixed)
        return leading + tail

    a_labels = operand(a, (m, k) if m else (k,))
    b_labels = operand(b, (k, n) if n else (k,))
    output = batch + ((m,) if m else ()) + ((n,) if n else ())
    return Notation((a_labels, b_labels), (output,), frozenset(unsplittable))


def _gemm(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    m, k, n = fresh(), fresh(), fresh()
    a = (k, m) if _int_attr(op, "transA", 0) else (m, k)
    b = (n, k) if _int_attr(op, "transB", 0) else (k, n)
    out = shapes.output(0)
    inputs: list[Labels | None] = [a, b]
    unsplittable: set[str] = set()
    c = shapes.input(2)
    if c is not None and out is not None:
        labels, fixed = _broadcast((m, n), out, c, fresh)
        inputs.append(labels)
        unsplittable |= fixed
    return Notation(tuple(inputs), ((m, n),), frozenset(unsplittable))


def _einsum(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    equation = str(op.attr("equation", "")).replace(" ", "")
    if "..." in equation or not equation:
        raise _NoRule
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


def _conv(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x, w, out = shapes.input(0), shapes.input(1), shapes.output(0)
    if x is None or w is None or out is None or len(x) < 3:
        raise _NoRule
    spatial = len(x) - 2
    n, o = fresh(), fresh()
    group = _int_attr(op, "group", 1)
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


# --- normalisations and reductions -----------------------------------------------------------


def _softmax(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None:
        raise _NoRule
    labels = fresh.many(len(x))
    axis = _axis(_int_attr(op, "axis", -1), len(x))
    return Notation((labels,), (labels,), statistics=frozenset({labels[axis]}))


def _layer_norm(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None:
        raise _NoRule
    labels = fresh.many(len(x))
    axis = _axis(_int_attr(op, "axis", -1), len(x))
    normalized = labels[axis:]
    inputs: list[Labels | None] = [labels]
    unsplittable: set[str] = set()
    for position in range(1, shapes.num_inputs):
        shape = shapes.input(position)
        if shape is None:
            inputs.append(None)
            continue
        param, fixed = _broadcast(normalized, x[axis:], shape, fresh)
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


def _batch_norm(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None or len(x) < 2:
        raise _NoRule
    labels = fresh.many(len(x))
    channel = (labels[1],)
    inputs = (labels, *[channel if shapes.input(i) is not None else None for i in range(1, 5)])
    outputs: list[Labels | None] = [labels]
    outputs.extend(
        channel if shapes.output(i) is not None else None for i in range(1, shapes.num_outputs)
    )
    return Notation(tuple(inputs[: shapes.num_inputs]), tuple(outputs))


def _reduced_axes(op: Op, shapes: _Shapes, rank: int) -> set[int] | None:
    """The axes a Reduce* op reduces: from its `axes` attribute or constant input; None when
    they are not known."""
    attr = op.attr("axes")
    if isinstance(attr, tuple):
        return {_axis(int(a), rank) for a in attr}
    value = shapes.value(1)
    if value is not None:
        if not value:
            return set(range(rank)) if not _int_attr(op, "noop_with_empty_axes", 0) else set()
        return {_axis(int(a), rank) for a in value}
    if shapes.input(1) is None:
        return set(range(rank))
    return None


def _reduce(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None:
        raise _NoRule
    axes = _reduced_axes(op, shapes, len(x))
    if axes is None:
        raise _NoRule
    labels = fresh.many(len(x))
    keep = _int_attr(op, "keepdims", 1)
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


def _global_pool(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None or len(x) < 3:
        raise _NoRule
    n, c = fresh(), fresh()
    spatial = fresh.many(len(x) - 2)
    ones = fresh.many(len(x) - 2)
    return Notation(((n, c, *spatial),), ((n, c, *ones),), frozenset(spatial) | frozenset(ones))


def _pool(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None or len(x) < 3:
        raise _NoRule
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


def _along_axis(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    """Ops that work along one axis that must stay whole (TopK, CumSum, ArgMax, Softmax-like
    scans); every other dimension is batch-like."""
    x = shapes.input(0)
    if x is None:
        raise _NoRule
    if op.op_type == "CumSum":
        value = shapes.value(1)
        if not value:
            raise _NoRule
        axis = _axis(int(value[0]), len(x))
    else:
        axis = _axis(_int_attr(op, "axis", -1 if op.op_type == "TopK" else 0), len(x))
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
            raise _NoRule
    return Notation(inputs, tuple(outputs), frozenset(unsplittable))


# --- data movement ---------------------------------------------------------------------------


def _transpose(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None:
        raise _NoRule
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
                raise _NoRule
        groups.append((run_source, run_target))
    return groups


def _reshape(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    """A split may follow a reshape on the major (first non-unit) dim of each merged or split
    run of dims; minor dims stay unsplit."""
    x, out = shapes.input(0), shapes.output(0)
    if x is None or out is None:
        raise _NoRule
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


def _gather(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    """out = data[..., indices, ...] along `axis`: the gathered axis of data is contracted
    (a vocabulary split is a masked lookup whose partial results an all-reduce sums)."""
    data, indices, out = shapes.input(0), shapes.input(1), shapes.output(0)
    if data is None or indices is None or out is None:
        raise _NoRule
    axis = _axis(_int_attr(op, "axis", 0), len(data))
    data_labels = fresh.many(len(data))
    index_labels = fresh.many(len(indices))
    output = data_labels[:axis] + index_labels + data_labels[axis + 1 :]
    return Notation((data_labels, index_labels), (output,))


def _concat(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    out = shapes.output(0)
    if out is None:
        raise _NoRule
    axis = _axis(_int_attr(op, "axis", 0), len(out))
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


def _split(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    x = shapes.input(0)
    if x is None:
        raise _NoRule
    axis = _axis(_int_attr(op, "axis", 0), len(x))
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


def _same_rank_window(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    """Slice, Pad, Tile and friends: dims whose extent the op keeps map through; changed dims
    stay whole. Only the first input carries data."""
    x, out = shapes.input(0), shapes.output(0)
    if x is None or out is None or len(x) != len(out):
        raise _NoRule
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


def _expand(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    """Broadcast to a larger shape: new and stretched dims exist only in the output, where a
    split is a local slice."""
    x, out = shapes.input(0), shapes.output(0)
    if x is None or out is None or len(x) > len(out):
        raise _NoRule
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


def _one_hot(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    indices, out = shapes.input(0), shapes.output(0)
    if indices is None or out is None:
        raise _NoRule
    axis = _axis(_int_attr(op, "axis", -1), len(out))
    labels = fresh.many(len(indices))
    depth = fresh()
    output = (*labels[:axis], depth, *labels[axis:])
    return Notation((labels, None, None), (output,))


def _source(op: Op, shapes: _Shapes, fresh: _Fresh) -> Notation:
    """Ops computed from constants alone (Range, ConstantOfShape): any slice of the output is
    computed locally."""
    outputs = tuple(
        None if shapes.output(i) is None else fresh.many(len(shapes.output(i) or ()))
        for i in range(shapes.num_outputs)
    )
    return Notation(tuple(None for _ in range(shapes.num_inputs)), outputs)


_ELEMENTWISE = (
    "Abs",
    "Acos",
    "Acosh",
    "Add",
    "And",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BitShift",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Cos",
    "Cosh",
    "Div",
    "Elu",
    "Equal",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "FastGelu",
    "Greater",
    "GreaterOrEqual",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "IsInf",
    "IsNaN",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "Max",
    "Mean",
    "Min",
    "Mish",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "PRelu",
    "Pow",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Where",
    "Xor",
    "BiasGelu",
)

_RULES: Mapping[str, Rule] = {
    **{name: _elementwise for name in _ELEMENTWISE},
    "Clip": _first_input_only,
    "Dropout": _first_input_only,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Einsum": _einsum,
    "Conv": _conv,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "LayerNormalization": _layer_norm,
    "SimplifiedLayerNormalization": _layer_norm,
    "RMSNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "ReduceMean": _reduce,
    "ReduceSum": _reduce,
    "ReduceMax": _reduce,
    "ReduceMin": _reduce,
    "ReduceProd": _reduce,
    "ReduceL2": _reduce,
    "ReduceSumSquare": _reduce,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "TopK": _along_axis,
    "CumSum": _along_axis,
    "ArgMax": _along_axis,
    "ArgMin": _along_axis,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "Flatten": _reshape,
    "Squeeze": _reshape,
    "Unsqueeze": _reshape,
    "Gather": _gather,
    "Concat": _concat,
    "Split": _split,
    "Slice": _same_rank_window,
    "Pad": _same_rank_window,
    "Tile": _same_rank_window,
    "Expand": _expand,
    "OneHot": _one_hot,
    "Range": _source,
    "ConstantOfShape": _source,
}


def unknown_op_types(graph: Graph) -> tuple[str, ...]:
    """The op types of `graph` that no rule knows: they run replicated (and plans say so)."""
    return tuple(
        sorted({op.op_type for op in graph.ops if not notation_of(op, graph.tensors).known})
    )
