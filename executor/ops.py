"""The op table: ONNX op type -> a function on arrays, with ONNX semantics.

Each entry takes an `OpCall` (the node's attributes, the model's opset, and `xp`, the array
module to use) and its input arrays (`None` for an absent optional input), and returns the
output arrays in the node's output order. Shapes are static: the executor traces every stage at
its microbatch size, so `Shape` gives a NumPy array, and ops whose inputs are all NumPy values
(shape arithmetic: Gather, Concat, Range, ...) run in NumPy (`xp = numpy`) and stay constants
that Reshape, Expand and Slice can read. Everything else runs in `jax.numpy`.

An op type missing here is an error that names it (`UnsupportedOp`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = Any  # a jax.Array, a tracer or a NumPy array
Inputs = Sequence[Array | None]


@dataclass(frozen=True)
class OpCall:
    op_type: str
    attributes: Mapping[str, Any]
    opset: int
    xp: ModuleType  # numpy or jax.numpy
    outputs: int  # how many outputs the node names

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)


OpFn = Callable[[OpCall, Inputs], list[Array]]


class UnsupportedOp(ValueError):
    """An op type the table has no entry for."""


def is_static(value: Any) -> bool:
    """A value known while tracing (NumPy), as opposed to a traced jax value."""
    return isinstance(value, np.ndarray | np.generic | int | float | bool)


def ints(value: Array | None, what: str) -> list[int]:
    """A static integer vector (a shape, axes, sizes) as Python ints."""
    if value is None:
        return []
    if not is_static(value):
        raise UnsupportedOp(f"{what} must be a constant (static) tensor, found a computed one")
    return [int(item) for item in np.asarray(value).reshape(-1)]


_ONNX_DTYPES: Mapping[int, Any] = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    4: np.uint16,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    12: np.uint32,
    13: np.uint64,
    16: jnp.bfloat16,
}


def onnx_dtype(code: int, xp: ModuleType) -> Any:
    dtype = _ONNX_DTYPES.get(code)
    if dtype is None:
        raise UnsupportedOp(f"ONNX element type {code}")
    # jax without x64 stores 64-bit types in 32 bits: ask for what it will give.
    return dtype if xp is np else jax.dtypes.canonicalize_dtype(dtype)


TABLE: dict[str, OpFn] = {}
# Ops that may run in NumPy when every input is static (shape arithmetic, small constants).
STATIC_OK: set[str] = set()


def op(*names: str, static_ok: bool = False) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for name in names:
            TABLE[name] = fn
            if static_ok:
                STATIC_OK.add(name)
        return fn

    return register


def run_op(
    op_type: str, attributes: Mapping[str, Any], opset: int, inputs: Inputs, outputs: int
) -> list[Array]:
    fn = TABLE.get(op_type)
    if fn is None:
        raise UnsupportedOp(f"op type {op_type}")
    present = [value for value in inputs if value is not None]
    static = op_type in STATIC_OK and all(is_static(value) for value in present)
    call = OpCall(op_type, attributes, opset, np if static else jnp, outputs)
    if static:
        inputs = [None if value is None else np.asarray(value) for value in inputs]
    return fn(call, inputs)


# --- elementwise -----------------------------------------------------------------------------


def _legacy_aligned(call: OpCall, a: Array, b: Array) -> Array:
    """`b` reshaped for numpy broadcasting where an opset < 7 binary op broadcasts it from
    `axis` (`broadcast=1`): B's dimensions match A's starting there, not at the end."""
    axis = call.attr("axis")
    if call.opset >= 7 or not call.attr("broadcast", 0) or axis is None or not b.ndim:
        return b
    trailing = a.ndim - (axis % a.ndim) - b.ndim
    return b.reshape(*b.shape, *(1,) * trailing) if trailing > 0 else b


def _binary(fn_name: str) -> OpFn:
    def apply(call: OpCall, inputs: Inputs) -> list[Array]:
        a, b = inputs[0], inputs[1]
        return [getattr(call.xp, fn_name)(a, _legacy_aligned(call, a, b))]

    return apply


for _onnx, _np in (
    ("Add", "add"),
    ("Sub", "subtract"),
    ("Mul", "multiply"),
    ("Equal", "equal"),
    ("Less", "less"),
    ("LessOrEqual", "less_equal"),
    ("Greater", "greater"),
    ("GreaterOrEqual", "greater_equal"),
    ("And", "logical_and"),
    ("Or", "logical_or"),
    ("Xor", "logical_xor"),
):
    op(_onnx, static_ok=True)(_binary(_np))


@op("Div", static_ok=True)
def _div(call: OpCall, inputs: Inputs) -> list[Array]:
    a, b = inputs[0], inputs[1]
    b = _legacy_aligned(call, a, b)
    xp = call.xp
    if np.dtype(a.dtype).kind in "iu":  # C-style integer division: truncate towards zero
        quotient = xp.abs(a) // xp.abs(b)
        return [(xp.sign(a) * xp.sign(b) * quotient).astype(a.dtype)]
    return [xp.divide(a, b)]


@op("Pow", static_ok=True)
def _pow(call: OpCall, inputs: Inputs) -> list[Array]:
    base, exponent = inputs[0], inputs[1]
    exponent = _legacy_aligned(call, base, exponent)
    if np.dtype(base.dtype).kind == "f":
        exponent = exponent.astype(base.dtype)
    return [call.xp.power(base, exponent)]


@op("Mod", static_ok=True)
def _mod(call: OpCall, inputs: Inputs) -> list[Array]:
    fn = call.xp.fmod if call.attr("fmod", 0) else call.xp.mod
    return [fn(inputs[0], inputs[1])]


def _unary(fn: Callable[[ModuleType, Array], Array], static_ok: bool = True) -> OpFn:
    def apply(call: OpCall, inputs: Inputs) -> list[Array]:
        return [fn(call.xp, inputs[0])]

    return apply


for _name, _fn in (
    ("Neg", lambda xp, x: xp.negative(x)),
    ("Abs", lambda xp, x: xp.abs(x)),
    ("Not", lambda xp, x: xp.logical_not(x)),
    ("Sqrt", lambda xp, x: xp.sqrt(x)),
    ("Exp", lambda xp, x: xp.exp(x)),
    ("Log", lambda xp, x: xp.log(x)),
    ("Floor", lambda xp, x: xp.floor(x)),
    ("Ceil", lambda xp, x: xp.ceil(x)),
    ("Reciprocal", lambda xp, x: 1 / x),
    ("Sign", lambda xp, x: xp.sign(x)),
    ("Identity", lambda xp, x: x),
):
    op(_name, static_ok=True)(_unary(_fn))

for _name, _fn in (
    ("IsNaN", lambda xp, x: xp.isnan(x)),
    ("BitwiseNot", lambda xp, x: xp.invert(x)),
):
    op(_name, static_ok=True)(_unary(_fn))


@op("IsInf", static_ok=True)
def _is_inf(call: OpCall, inputs: Inputs) -> list[Array]:
    x, xp = inputs[0], call.xp
    positive = xp.isposinf(x) if call.attr("detect_positive", 1) else xp.zeros(x.shape, bool)
    negative = xp.isneginf(x) if call.attr("detect_negative", 1) else xp.zeros(x.shape, bool)
    return [xp.logical_or(positive, negative)]


for _onnx, _np in (
    ("BitwiseAnd", "bitwise_and"),
    ("BitwiseOr", "bitwise_or"),
    ("BitwiseXor", "bitwise_xor"),
):
    op(_onnx, static_ok=True)(_binary(_np))


for _name, _fn in (
    ("Relu", lambda xp, x: jnp.maximum(x, 0).astype(x.dtype)),
    ("Tanh", lambda xp, x: jnp.tanh(x)),
    ("Sigmoid", lambda xp, x: jax.nn.sigmoid(x)),
    ("Erf", lambda xp, x: jax.scipy.special.erf(x)),
    ("Softplus", lambda xp, x: jax.nn.softplus(x)),
    ("Sin", lambda xp, x: jnp.sin(x)),
    ("Cos", lambda xp, x: jnp.cos(x)),
    ("Tan", lambda xp, x: jnp.tan(x)),
    ("Asin", lambda xp, x: jnp.arcsin(x)),
    ("Acos", lambda xp, x: jnp.arccos(x)),
    ("Atan", lambda xp, x: jnp.arctan(x)),
    ("Sinh", lambda xp, x: jnp.sinh(x)),
    ("Cosh", lambda xp, x: jnp.cosh(x)),
    ("Asinh", lambda xp, x: jnp.arcsinh(x)),
    ("Acosh", lambda xp, x: jnp.arccosh(x)),
    ("Atanh", lambda xp, x: jnp.arctanh(x)),
    ("Softsign", lambda xp, x: x / (1 + jnp.abs(x))),
    ("Mish", lambda xp, x: x * jnp.tanh(jax.nn.softplus(x))),
):
    op(_name)(_unary(_fn))

# Round: to nearest, ties to even (as ONNX specifies and numpy rounds).
op("Round", static_ok=True)(_unary(lambda xp, x: xp.round(x)))


def _exponential_linear(x: Array, alpha: float) -> Array:
    """alpha (e^x - 1) below 0, x above."""
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


@op("Elu")
def _elu(call: OpCall, inputs: Inputs) -> list[Array]:
    return [_exponential_linear(inputs[0], call.attr("alpha", 1.0))]


@op("Celu")
def _celu(call: OpCall, inputs: Inputs) -> list[Array]:
    alpha = call.attr("alpha", 1.0)
    x = inputs[0]
    return [jnp.maximum(x, 0) + jnp.minimum(0, alpha * jnp.expm1(jnp.minimum(x, 0) / alpha))]


@op("Selu")
def _selu(call: OpCall, inputs: Inputs) -> list[Array]:
    alpha = call.attr("alpha", 1.67326319217681884765625)
    gamma = call.attr("gamma", 1.05070102214813232421875)
    return [gamma * _exponential_linear(inputs[0], alpha)]


@op("HardSigmoid")
def _hard_sigmoid(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    return [jnp.clip(call.attr("alpha", 0.2) * x + call.attr("beta", 0.5), 0, 1).astype(x.dtype)]


@op("HardSwish")
def _hard_swish(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    return [x * jnp.clip(x / 6 + 0.5, 0, 1).astype(x.dtype)]


@op("ThresholdedRelu")
def _thresholded_relu(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    return [jnp.where(x > call.attr("alpha", 1.0), x, jnp.zeros_like(x))]


@op("PRelu")
def _prelu(call: OpCall, inputs: Inputs) -> list[Array]:
    x, slope = inputs[0], inputs[1]
    if call.opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1]:
        # PRelu-6: a slope per channel (dimension 1), before numpy broadcasting (opset 7)
        slope = slope.reshape(-1, *(1,) * (x.ndim - 2))
    return [jnp.where(x < 0, slope * x, x)]


@op("Shrink")
def _shrink(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    bias, lambd = call.attr("bias", 0.0), call.attr("lambd", 0.5)
    shrunk = jnp.where(x < -lambd, x + bias, jnp.where(x > lambd, x - bias, 0))
    return [shrunk.astype(x.dtype)]


@op("BitShift", static_ok=True)
def _bit_shift(call: OpCall, inputs: Inputs) -> list[Array]:
    x, shift = inputs[0], inputs[1]
    left = call.attr("direction", "LEFT") == "LEFT"
    return [call.xp.left_shift(x, shift) if left else call.xp.right_shift(x, shift)]


@op("Gelu")
def _gelu(call: OpCall, inputs: Inputs) -> list[Array]:
    return [jax.nn.gelu(inputs[0], approximate=call.attr("approximate", "none") == "tanh")]


@op("LeakyRelu")
def _leaky_relu(call: OpCall, inputs: Inputs) -> list[Array]:
    return [jax.nn.leaky_relu(inputs[0], call.attr("alpha", 0.01))]


@op("Where", static_ok=True)
def _where(call: OpCall, inputs: Inputs) -> list[Array]:
    return [call.xp.where(inputs[0], inputs[1], inputs[2])]


@op("Clip", static_ok=True)
def _clip(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    if call.opset < 11:
        low, high = call.attr("min"), call.attr("max")
    else:
        low = inputs[1] if len(inputs) > 1 else None
        high = inputs[2] if len(inputs) > 2 else None
    if low is not None:
        x = call.xp.maximum(x, call.xp.asarray(low, dtype=x.dtype))
    if high is not None:
        x = call.xp.minimum(x, call.xp.asarray(high, dtype=x.dtype))
    return [x]


@op("Max", "Min", "Sum", "Mean", static_ok=True)
def _variadic(call: OpCall, inputs: Inputs) -> list[Array]:
    xp = call.xp
    result = inputs[0]
    combine = {"Max": xp.maximum, "Min": xp.minimum, "Sum": xp.add, "Mean": xp.add}[call.op_type]
    for value in inputs[1:]:
        result = combine(result, value)
    if call.op_type == "Mean":
        result = result / len(inputs)
    return [result]


@op("Cast", static_ok=True)
def _cast(call: OpCall, inputs: Inputs) -> list[Array]:
    return [inputs[0].astype(onnx_dtype(int(call.attr("to")), call.xp))]


@op("CastLike", static_ok=True)
def _cast_like(call: OpCall, inputs: Inputs) -> list[Array]:
    return [inputs[0].astype(inputs[1].dtype)]


@op("Dropout")
def _dropout(call: OpCall, inputs: Inputs) -> list[Array]:
    """Inference semantics (the executor runs models as exported, without dropout)."""
    x = inputs[0]
    return [x, jnp.ones(x.shape, bool)][: call.outputs]


# --- shapes and data movement ----------------------------------------------------------------


@op("Constant", static_ok=True)
def _constant(call: OpCall, inputs: Inputs) -> list[Array]:
    for key, dtype in (
        ("value", None),
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in call.attributes:
            return [np.asarray(call.attributes[key], dtype=dtype)]
    raise UnsupportedOp("Constant without a value, value_float(s) or value_int(s) attribute")


@op("Shape", static_ok=True)
def _shape(call: OpCall, inputs: Inputs) -> list[Array]:
    dims = np.asarray(np.shape(inputs[0]), np.int64)
    start = call.attr("start", 0)
    end = call.attr("end", len(dims))
    return [dims[start:end]]


@op("Size", static_ok=True)
def _size(call: OpCall, inputs: Inputs) -> list[Array]:
    return [np.asarray(math.prod(np.shape(inputs[0])), np.int64)]


@op("Reshape", static_ok=True)
def _reshape(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    target = ints(inputs[1], "Reshape's shape")
    if not call.attr("allowzero", 0):
        target = [x.shape[i] if dim == 0 else dim for i, dim in enumerate(target)]
    return [call.xp.reshape(x, target)]


@op("Flatten", static_ok=True)
def _flatten(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    axis = call.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return [call.xp.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))]


@op("Transpose", static_ok=True)
def _transpose(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    perm = call.attr("perm") or list(reversed(range(x.ndim)))
    return [call.xp.transpose(x, perm)]


def _axes(call: OpCall, inputs: Inputs, position: int, since: int) -> list[int] | None:
    """Axes from the input at `position` (opset >= `since`) or the `axes` attribute."""
    if call.opset >= since:
        value = inputs[position] if len(inputs) > position else None
        return None if value is None else ints(value, f"{call.op_type}'s axes")
    found = call.attr("axes")
    return None if found is None else [int(a) for a in found]


@op("Unsqueeze", static_ok=True)
def _unsqueeze(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    axes = _axes(call, inputs, 1, 13) or []
    rank = x.ndim + len(axes)
    result = x
    for axis in sorted(a % rank for a in axes):
        result = call.xp.expand_dims(result, axis)
    return [result]


@op("Squeeze", static_ok=True)
def _squeeze(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    axes = _axes(call, inputs, 1, 13)
    if axes is None:
        axes = [i for i, dim in enumerate(x.shape) if dim == 1]
    return [call.xp.squeeze(x, tuple(a % x.ndim for a in axes))]


@op("Concat", static_ok=True)
def _concat(call: OpCall, inputs: Inputs) -> list[Array]:
    present = [value for value in inputs if value is not None]
    return [call.xp.concatenate(present, axis=call.attr("axis"))]


@op("Split", static_ok=True)
def _split(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    axis = call.attr("axis", 0) % x.ndim
    if call.opset >= 13:
        sizes = ints(inputs[1], "Split's sizes") if len(inputs) > 1 else []
    else:
        sizes = [int(s) for s in call.attr("split", [])]
    if not sizes:
        parts = call.attr("num_outputs", call.outputs)
        each = -(-x.shape[axis] // parts)  # ceil: the last part may be smaller
        sizes = [min(each, x.shape[axis] - i * each) for i in range(parts)]
    cuts = np.cumsum(sizes)[:-1].tolist()
    return list(call.xp.split(x, cuts, axis=axis))


@op("Slice", static_ok=True)
def _slice(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    if call.opset >= 10:
        starts = ints(inputs[1], "Slice's starts")
        ends = ints(inputs[2], "Slice's ends")
        axes = ints(inputs[3], "Slice's axes") if len(inputs) > 3 and inputs[3] is not None else []
        steps = (
            ints(inputs[4], "Slice's steps") if len(inputs) > 4 and inputs[4] is not None else []
        )
    else:
        starts, ends = list(call.attr("starts")), list(call.attr("ends"))
        axes, steps = list(call.attr("axes", [])), []
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    index: list[slice] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        index[axis % x.ndim] = slice(start, end, step)
    return [x[tuple(index)]]


@op("Gather", static_ok=True)
def _gather(call: OpCall, inputs: Inputs) -> list[Array]:
    data, indices = inputs[0], inputs[1]
    axis = call.attr("axis", 0) % data.ndim
    xp = call.xp
    indices = xp.where(indices < 0, indices + data.shape[axis], indices)
    return [xp.take(data, indices, axis=axis)]


@op("GatherElements", static_ok=True)
def _gather_elements(call: OpCall, inputs: Inputs) -> list[Array]:
    data, indices = inputs[0], inputs[1]
    axis = call.attr("axis", 0) % data.ndim
    xp = call.xp
    indices = xp.where(indices < 0, indices + data.shape[axis], indices)
    return [xp.take_along_axis(data, indices, axis=axis)]


@op("GatherND", static_ok=True)
def _gather_nd(call: OpCall, inputs: Inputs) -> list[Array]:
    """out[b..., i...] = data[b..., *indices[b..., i..., :]], the first `batch_dims` dims of
    data and indices shared; negative indices count from the end."""
    data, indices = inputs[0], inputs[1]
    xp = call.xp
    batch_dims = call.attr("batch_dims", 0)
    depth = indices.shape[-1]
    batch_shape = tuple(data.shape[:batch_dims])
    indexed = data.shape[batch_dims : batch_dims + depth]
    extents = xp.asarray(indexed, dtype=indices.dtype)
    indices = xp.where(indices < 0, indices + extents, indices)
    batch_size = math.prod(batch_shape)
    flat_data = data.reshape((batch_size, *data.shape[batch_dims:]))
    middle = indices.shape[batch_dims:-1]
    flat_indices = indices.reshape((batch_size, math.prod(middle), depth))
    rows = xp.arange(batch_size).reshape(-1, 1)
    picked = flat_data[(rows, *(flat_indices[..., k] for k in range(depth)))]
    tail = tuple(data.shape[batch_dims + depth :])
    return [picked.reshape((*batch_shape, *middle, *tail))]


@op("Pad", static_ok=True)
def _pad(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    if call.opset >= 11:
        pads = ints(inputs[1], "Pad's pads")
        value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else 0
        axes = ints(inputs[3], "Pad's axes") if len(inputs) > 3 and inputs[3] is not None else []
    else:
        pads, value, axes = list(call.attr("pads")), call.attr("value", 0.0), []
    axes = [a % x.ndim for a in axes] or list(range(x.ndim))
    widths = [(0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    if any(low < 0 or high < 0 for low, high in widths):
        raise UnsupportedOp("Pad with negative pads")
    mode = call.attr("mode", "constant")
    if mode == "constant":
        fill = np.asarray(value).reshape(-1)[0] if np.size(value) else 0
        return [call.xp.pad(x, widths, mode="constant", constant_values=fill)]
    return [call.xp.pad(x, widths, mode={"reflect": "reflect", "edge": "edge"}[mode])]


@op("Expand", static_ok=True)
def _expand(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    shape = np.broadcast_shapes(tuple(x.shape), tuple(ints(inputs[1], "Expand's shape")))
    return [call.xp.broadcast_to(x, shape)]


@op("Tile", static_ok=True)
def _tile(call: OpCall, inputs: Inputs) -> list[Array]:
    return [call.xp.tile(inputs[0], ints(inputs[1], "Tile's repeats"))]


@op("ConstantOfShape", static_ok=True)
def _constant_of_shape(call: OpCall, inputs: Inputs) -> list[Array]:
    value = call.attr("value")
    fill = np.asarray(value).reshape(-1)[0] if value is not None else np.float32(0)
    return [call.xp.full(ints(inputs[0], "ConstantOfShape's shape"), fill, dtype=fill.dtype)]


@op("Range", static_ok=True)
def _range(call: OpCall, inputs: Inputs) -> list[Array]:
    start, limit, delta = inputs[0], inputs[1], inputs[2]
    if not all(is_static(value) for value in (start, limit, delta)):
        raise UnsupportedOp("Range with computed (non-constant) bounds: shapes must be static")
    return [np.arange(start, limit, delta, dtype=np.asarray(start).dtype)]


@op("OneHot")
def _one_hot(call: OpCall, inputs: Inputs) -> list[Array]:
    indices, depth, values = inputs[0], ints(inputs[1], "OneHot's depth")[0], inputs[2]
    indices = jnp.where(indices < 0, indices + depth, indices)
    hot = jax.nn.one_hot(indices, depth, axis=call.attr("axis", -1), dtype=bool)
    return [jnp.where(hot, values[1], values[0])]


@op("CumSum", static_ok=True)
def _cumsum(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    axis = ints(inputs[1], "CumSum's axis")[0] % x.ndim
    xp = call.xp
    if call.attr("reverse", 0):
        x = xp.flip(x, axis)
    result = xp.cumsum(x, axis=axis, dtype=x.dtype)
    if call.attr("exclusive", 0):
        result = result - x
    if call.attr("reverse", 0):
        result = xp.flip(result, axis)
    return [result]


@op("Trilu", static_ok=True)
def _trilu(call: OpCall, inputs: Inputs) -> list[Array]:
    k = ints(inputs[1], "Trilu's k")[0] if len(inputs) > 1 and inputs[1] is not None else 0
    fn = call.xp.triu if call.attr("upper", 1) else call.xp.tril
    return [fn(inputs[0], k)]


# --- contractions ----------------------------------------------------------------------------


@op("MatMul", static_ok=True)
def _matmul(call: OpCall, inputs: Inputs) -> list[Array]:
    return [call.xp.matmul(inputs[0], inputs[1])]


@op("Gemm", static_ok=True)
def _gemm(call: OpCall, inputs: Inputs) -> list[Array]:
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if call.attr("transA", 0):
        a = a.T
    if call.attr("transB", 0):
        b = b.T
    result = call.xp.matmul(a, b)
    alpha, beta = call.attr("alpha", 1.0), call.attr("beta", 1.0)
    if alpha != 1.0:
        result = alpha * result
    if c is not None:
        result = result + (c if beta == 1.0 else beta * c)
    return [result]


@op("Einsum", static_ok=True)
def _einsum(call: OpCall, inputs: Inputs) -> list[Array]:
    return [call.xp.einsum(call.attr("equation").replace(" ", ""), *inputs)]


def _padding(
    call: OpCall,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[int, int]] | str:
    auto_pad = call.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        return pads
    if auto_pad == "VALID":
        return [(0, 0)] * len(spatial)
    flat = list(call.attr("pads", [0] * (2 * len(spatial))))
    n = len(spatial)
    return [(flat[i], flat[i + n]) for i in range(n)]


@op("Conv")
def _conv(call: OpCall, inputs: Inputs) -> list[Array]:
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    spatial = x.ndim - 2
    kernel = list(call.attr("kernel_shape", w.shape[2:]))
    strides = list(call.attr("strides", [1] * spatial))
    dilations = list(call.attr("dilations", [1] * spatial))
    padding = _padding(call, x.shape[2:], kernel, strides, dilations)
    letters = "DHW"[-spatial:] if spatial <= 3 else None
    if letters is None:
        raise UnsupportedOp("Conv with more than 3 spatial dimensions")
    numbers = lax.conv_dimension_numbers(
        x.shape, w.shape, ("NC" + letters, "OI" + letters, "NC" + letters)
    )
    result = lax.conv_general_dilated(
        x,
        w,
        window_strides=strides,
        padding=padding,
        rhs_dilation=dilations,
        dimension_numbers=numbers,
        feature_group_count=call.attr("group", 1),
    )
    if bias is not None:
        result = result + bias.reshape((1, -1) + (1,) * spatial)
    return [result]


@op("ConvTranspose")
def _conv_transpose(call: OpCall, inputs: Inputs) -> list[Array]:
    """The gradient of a convolution: the input dilated by the strides, convolved with the
    weight flipped in space and with input and output channels swapped (per group)."""
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    spatial = x.ndim - 2
    if spatial > 3:
        raise UnsupportedOp("ConvTranspose with more than 3 spatial dimensions")
    group = call.attr("group", 1)
    kernel = list(call.attr("kernel_shape", w.shape[2:]))
    strides = list(call.attr("strides", [1] * spatial))
    dilations = list(call.attr("dilations", [1] * spatial))
    extra = list(call.attr("output_padding", [0] * spatial))
    if call.attr("output_shape") is not None or call.attr("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedOp("ConvTranspose with output_shape or auto_pad")
    flat = list(call.attr("pads", [0] * (2 * spatial)))
    padding = [
        (d * (k - 1) - flat[i], d * (k - 1) - flat[i + spatial] + extra[i])
        for i, (k, d) in enumerate(zip(kernel, dilations, strict=True))
    ]
    c_in, c_out = w.shape[0], w.shape[1] * group
    # [C_in, C_out / g, k...] -> [C_out, C_in / g, k...], flipped in space.
    grouped = w.reshape((group, c_in // group, c_out // group, *w.shape[2:]))
    swapped = jnp.swapaxes(grouped, 1, 2).reshape((c_out, c_in // group, *w.shape[2:]))
    flipped = jnp.flip(swapped, axis=tuple(range(2, 2 + spatial)))
    letters = "DHW"[-spatial:]
    numbers = lax.conv_dimension_numbers(
        x.shape, flipped.shape, ("NC" + letters, "OI" + letters, "NC" + letters)
    )
    result = lax.conv_general_dilated(
        x,
        flipped,
        window_strides=[1] * spatial,
        padding=padding,
        lhs_dilation=strides,
        rhs_dilation=dilations,
        dimension_numbers=numbers,
        feature_group_count=group,
    )
    if bias is not None:
        result = result + bias.reshape((1, -1) + (1,) * spatial)
    return [result]


# --- pooling and normalisation ---------------------------------------------------------------


def _pool(call: OpCall, x: Array, init: Any, reducer: Callable[..., Array]) -> Array:
    """`init` must be a NumPy scalar: JAX differentiates max and sum windows it recognises."""
    spatial = x.ndim - 2
    kernel = list(call.attr("kernel_shape"))
    strides = list(call.attr("strides", [1] * spatial))
    dilations = list(call.attr("dilations", [1] * spatial))
    if call.attr("ceil_mode", 0):
        raise UnsupportedOp(f"{call.op_type} with ceil_mode=1")
    padding = _padding(call, x.shape[2:], kernel, strides, dilations)
    assert not isinstance(padding, str)
    return lax.reduce_window(
        x,
        init,
        reducer,
        window_dimensions=(1, 1, *kernel),
        window_strides=(1, 1, *strides),
        padding=((0, 0), (0, 0), *padding),
        window_dilation=(1, 1, *dilations),
    )


@op("MaxPool")
def _max_pool(call: OpCall, inputs: Inputs) -> list[Array]:
    if call.outputs > 1:
        raise UnsupportedOp("MaxPool with an Indices output")
    x = inputs[0]
    return [_pool(call, x, np.array(-np.inf, x.dtype), lax.max)]


@op("AveragePool")
def _average_pool(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    total = _pool(call, x, np.array(0, x.dtype), lax.add)
    if call.attr("count_include_pad", 0) or not any(call.attr("pads", [])):
        return [total / math.prod(call.attr("kernel_shape"))]
    counts = _pool(call, jnp.ones_like(x[:1, :1]), np.array(0, x.dtype), lax.add)
    return [total / counts]


@op("LpPool")
def _lp_pool(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    p = call.attr("p", 2)
    total = _pool(call, jnp.abs(x) ** p, np.array(0, x.dtype), lax.add)
    return [total ** (1.0 / p)]


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    axes = tuple(range(2, x.ndim))
    fn = jnp.mean if call.op_type == "GlobalAveragePool" else jnp.max
    return [fn(x, axis=axes, keepdims=True)]


@op("BatchNormalization")
def _batch_norm(call: OpCall, inputs: Inputs) -> list[Array]:
    """Inference form (`training_mode` 0): normalise with the running statistics."""
    if call.attr("training_mode", 0):
        raise UnsupportedOp("BatchNormalization with training_mode=1")
    x, scale, bias, mean, var = inputs[:5]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    epsilon = call.attr("epsilon", 1e-5)
    inverse = lax.rsqrt(var.reshape(shape) + epsilon)
    return [(x - mean.reshape(shape)) * inverse * scale.reshape(shape) + bias.reshape(shape)]


@op("LayerNormalization")
def _layer_norm(call: OpCall, inputs: Inputs) -> list[Array]:
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = call.attr("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    epsilon = call.attr("epsilon", 1e-5)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    inverse = lax.rsqrt(jnp.mean(centred * centred, axis=axes, keepdims=True) + epsilon)
    result = centred * inverse * scale
    if bias is not None:
        result = result + bias
    return [result, mean, inverse][: call.outputs]


@op("RMSNormalization", "SimplifiedLayerNormalization")
def _rms_norm(call: OpCall, inputs: Inputs) -> list[Array]:
    """x / sqrt(mean(x^2) + epsilon) * scale over the axes from `axis` on (RMSNormalization,
    opset 23; onnxruntime's SimplifiedLayerNormalization, whose second output is the inverse
    root)."""
    x, scale = inputs[0], inputs[1]
    axis = call.attr("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    inverse = lax.rsqrt(jnp.mean(x * x, axis=axes, keepdims=True) + call.attr("epsilon", 1e-5))
    return [x * inverse * scale, inverse][: call.outputs]


def _normalise(x: Array, axes: tuple[int, ...], epsilon: float) -> Array:
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    return centred * lax.rsqrt(jnp.mean(centred * centred, axis=axes, keepdims=True) + epsilon)


@op("InstanceNormalization")
def _instance_norm(call: OpCall, inputs: Inputs) -> list[Array]:
    x, scale, bias = inputs[0], inputs[1], inputs[2]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    normal = _normalise(x, tuple(range(2, x.ndim)), call.attr("epsilon", 1e-5))
    return [normal * scale.reshape(shape) + bias.reshape(shape)]


@op("GroupNormalization")
def _group_norm(call: OpCall, inputs: Inputs) -> list[Array]:
    """Statistics over each group of channels and the spatial axes; scale and bias per channel
    (opset 21) or per group (opset 18)."""
    x, scale, bias = inputs[0], inputs[1], inputs[2]
    groups = call.attr("num_groups")
    n, c = x.shape[0], x.shape[1]
    grouped = x.reshape((n, groups, c // groups, *x.shape[2:]))
    normal = _normalise(grouped, tuple(range(2, grouped.ndim)), call.attr("epsilon", 1e-5))
    if scale.shape[0] == groups and groups != c:
        per_group = (1, groups, 1) + (1,) * (x.ndim - 2)
        normal = normal * scale.reshape(per_group) + bias.reshape(per_group)
        return [normal.reshape(x.shape)]
    per_channel = (1, c) + (1,) * (x.ndim - 2)
    return [normal.reshape(x.shape) * scale.reshape(per_channel) + bias.reshape(per_channel)]


@op("Softmax", "LogSoftmax")
def _softmax(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    fn = jax.nn.softmax if call.op_type == "Softmax" else jax.nn.log_softmax
    if call.opset >= 13:
        return [fn(x, axis=call.attr("axis", -1))]
    axis = call.attr("axis", 1) % x.ndim  # before opset 13: over the flattened trailing axes
    flat = x.reshape((math.prod(x.shape[:axis]), -1))
    return [fn(flat, axis=-1).reshape(x.shape)]


# --- reductions and selection ----------------------------------------------------------------


def _reduce(name: str, since: int) -> OpFn:
    def apply(call: OpCall, inputs: Inputs) -> list[Array]:
        x = inputs[0]
        axes = _axes(call, inputs, 1, since)
        if not axes:
            if call.attr("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        keep = bool(call.attr("keepdims", 1))
        reduced = tuple(a % x.ndim for a in axes)
        xp = call.xp
        if name == "sum_square":
            return [xp.sum(x * x, axis=reduced, keepdims=keep)]
        if name == "l2":
            return [xp.sqrt(xp.sum(x * x, axis=reduced, keepdims=keep))]
        if name == "l1":
            return [xp.sum(xp.abs(x), axis=reduced, keepdims=keep)]
        if name == "log_sum_exp":
            peak = xp.max(x, axis=reduced, keepdims=True)
            total = xp.log(xp.sum(xp.exp(x - peak), axis=reduced, keepdims=True)) + peak
            return [total if keep else xp.squeeze(total, axis=reduced)]
        return [getattr(xp, name)(x, axis=reduced, keepdims=keep)]

    return apply


for _onnx, _fn_name in (
    ("ReduceSum", "sum"),
    ("ReduceMean", "mean"),
    ("ReduceMax", "max"),
    ("ReduceMin", "min"),
    ("ReduceProd", "prod"),
    ("ReduceSumSquare", "sum_square"),
    ("ReduceL2", "l2"),
    ("ReduceL1", "l1"),
    ("ReduceLogSumExp", "log_sum_exp"),
):
    # ReduceSum took axes as an input from opset 13, the others from opset 18.
    op(_onnx, static_ok=True)(_reduce(_fn_name, 13 if _onnx == "ReduceSum" else 18))


@op("ArgMax", "ArgMin", static_ok=True)
def _arg(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    axis = call.attr("axis", 0) % x.ndim
    fn = call.xp.argmax if call.op_type == "ArgMax" else call.xp.argmin
    result = fn(x, axis=axis)
    if call.attr("keepdims", 1):
        result = call.xp.expand_dims(result, axis)
    return [result.astype(onnx_dtype(7, call.xp))]


@op("TopK")
def _top_k(call: OpCall, inputs: Inputs) -> list[Array]:
    x = inputs[0]
    k = ints(inputs[1], "TopK's K")[0]
    axis = call.attr("axis", -1) % x.ndim
    moved = jnp.moveaxis(x, axis, -1)
    largest = call.attr("largest", 1)
    values, indices = lax.top_k(moved if largest else -moved, k)
    if not largest:
        values = -values
    return [jnp.moveaxis(values, -1, axis), jnp.moveaxis(indices, -1, axis)]


# --- scatters and resizing -------------------------------------------------------------------


def _scattered(data: Array, index: tuple[Array, ...], updates: Array, reduction: str) -> Array:
    target = data.at[index]
    if reduction == "none":
        return target.set(updates)
    combine = {"add": target.add, "mul": target.multiply, "max": target.max, "min": target.min}
    if reduction not in combine:
        raise UnsupportedOp(f"scatter reduction {reduction!r}")
    return combine[reduction](updates)


@op("ScatterND")
def _scatter_nd(call: OpCall, inputs: Inputs) -> list[Array]:
    data, indices, updates = inputs[0], inputs[1], inputs[2]
    depth = indices.shape[-1]
    index = tuple(indices[..., k] for k in range(depth))
    return [_scattered(jnp.asarray(data), index, updates, call.attr("reduction", "none"))]


@op("ScatterElements")
def _scatter_elements(call: OpCall, inputs: Inputs) -> list[Array]:
    data, indices, updates = inputs[0], inputs[1], inputs[2]
    axis = call.attr("axis", 0) % data.ndim
    positions = list(jnp.indices(indices.shape, sparse=True))
    positions[axis] = jnp.where(indices < 0, indices + data.shape[axis], indices)
    index = tuple(positions)
    return [_scattered(jnp.asarray(data), index, updates, call.attr("reduction", "none"))]


def _source_coordinates(call: OpCall, size_in: int, size_out: int, scale: float) -> np.ndarray:
    """Where each output coordinate samples the input along one axis, by the node's
    coordinate_transformation_mode."""
    out = np.arange(size_out, dtype=np.float64)
    mode = call.attr("coordinate_transformation_mode", "half_pixel")
    if call.opset < 11:
        mode = "asymmetric"  # Upsample and Resize-10 sample asymmetrically
    if mode == "half_pixel":
        return (out + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (out + 0.5) / scale - 0.5 if size_out > 1 else np.zeros_like(out)
    if mode == "align_corners":
        return out * (size_in - 1) / (size_out - 1) if size_out > 1 else np.zeros_like(out)
    if mode == "asymmetric":
        return out / scale
    raise UnsupportedOp(f"Resize with coordinate_transformation_mode={mode!r}")


def _nearest(call: OpCall, coordinates: np.ndarray, size_in: int) -> np.ndarray:
    mode = call.attr("nearest_mode", "round_prefer_floor") if call.opset >= 11 else "floor"
    if mode == "floor":
        index = np.floor(coordinates)
    elif mode == "ceil":
        index = np.ceil(coordinates)
    elif mode == "round_prefer_ceil":
        index = np.floor(coordinates + 0.5)
    else:  # round_prefer_floor
        index = np.ceil(coordinates - 0.5)
    return np.clip(index, 0, size_in - 1).astype(np.int64)


@op("Resize", "Upsample")
def _resize(call: OpCall, inputs: Inputs) -> list[Array]:
    """Nearest or linear resizing, axis by axis (separable), from `scales` or `sizes`."""
    x = inputs[0]
    if call.op_type == "Upsample" and call.opset >= 9:
        scales = [float(v) for v in np.asarray(inputs[1]).reshape(-1)]
    elif call.op_type == "Upsample":
        scales = [float(v) for v in call.attr("scales")]
    else:
        scale_input = 1 if call.opset < 11 else 2
        given = inputs[scale_input] if len(inputs) > scale_input else None
        sizes = inputs[3] if call.opset >= 11 and len(inputs) > 3 else None
        if given is not None and np.asarray(given).size:
            scales = [float(v) for v in np.asarray(given).reshape(-1)]
        else:
            wanted = ints(sizes, "Resize's sizes")
            scales = [w / n for w, n in zip(wanted, x.shape, strict=True)]
    mode = call.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear"):
        raise UnsupportedOp(f"Resize with mode={mode!r}")
    result = x
    for axis, (size_in, scale) in enumerate(zip(x.shape, scales, strict=True)):
        size_out = math.floor(size_in * scale + 1e-9)
        if size_out == size_in and scale == 1.0:
            continue
        coordinates = _source_coordinates(call, size_in, size_out, scale)
        if mode == "nearest":
            result = jnp.take(result, _nearest(call, coordinates, size_in), axis=axis)
            continue
        clipped = np.clip(coordinates, 0, size_in - 1)
        low = np.floor(clipped).astype(np.int64)
        high = np.minimum(low + 1, size_in - 1)
        weight = (clipped - low).astype(np.float32)
        shape = [1] * x.ndim
        shape[axis] = size_out
        w = jnp.asarray(weight.reshape(shape), dtype=result.dtype)
        result = jnp.take(result, low, axis=axis) * (1 - w) + jnp.take(result, high, axis=axis) * w
    return [result]
