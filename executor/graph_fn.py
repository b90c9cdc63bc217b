"""ONNX nodes -> a JAX computation, and the analysis pass that finds what is static.

`evaluate` runs nodes in order on an environment of named arrays through the op table, calling
`constrain(name, value)` on every traced value it produces: the runtime uses it to put the plan's
sharding constraints on every tensor.

`analyse` traces the whole model once, abstractly (`jax.eval_shape`) at the microbatch size.
Tensors that come out as NumPy values (constants, and shape arithmetic on static shapes) are
static: stages embed them instead of computing or transferring them. For every other tensor it
records the shape and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jax
import numpy as np

from executor.onnx_model import Node, OnnxModel
from executor.ops import UnsupportedOp, is_static, run_op
from plans.errors import InputError

Array = Any
Constrain = Callable[[str, Array], Array]


# Under mixed precision, ops that overflow or lose too much in float16 (sums of squares,
# exponentials, normalisation statistics) run in float32, as `torch.autocast` and jmp do.
FLOAT32_OPS = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "LayerNormalization",
        "SimplifiedLayerNormalization",
        "BatchNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceProd",
        "ReduceLogSumExp",
        "CumSum",
        "Exp",
        "Log",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Erf",
    }
)


def evaluate(
    nodes: Iterable[Node],
    env: dict[str, Array],
    opset: int,
    source: str,
    constrain: Constrain | None = None,
    half_dtype: Any = None,
) -> dict[str, Array]:
    """Run `nodes` in order, adding their outputs to `env` (which it returns). With
    `half_dtype` (mixed precision), ops of `FLOAT32_OPS` get their half inputs in float32 and
    give their floating outputs back in `half_dtype`."""
    for node in nodes:
        if node.domain:
            raise InputError(
                source,
                f"node {node.name}",
                "an op of the default ONNX domain",
                f"{node.op_type} of domain {node.domain!r}",
            )
        args = [env[name] if name else None for name in node.inputs]
        widened = half_dtype is not None and node.op_type in FLOAT32_OPS
        if widened:
            args = [_retype(arg, half_dtype, np.float32) for arg in args]
        try:
            results = run_op(node.op_type, node.attributes, opset, args, len(node.outputs))
            if widened:
                results = [_retype(result, np.float32, half_dtype) for result in results]
        except UnsupportedOp as error:
            raise InputError(
                source,
                f"node {node.name}",
                "an op the executor supports (executor/ops.py)",
                str(error),
            ) from None
        for name, value in zip(node.outputs, results, strict=False):
            if not name:
                continue
            env[name] = value if constrain is None or is_static(value) else constrain(name, value)
    return env


def _retype(value: Array, source: Any, target: Any) -> Array:
    """`value` in `target` if it is of dtype `source` (and not static), else as it is."""
    if value is None or is_static(value) or np.dtype(value.dtype) != np.dtype(source):
        return value
    return value.astype(target)


@dataclass(frozen=True)
class Analysis:
    static: Mapping[str, np.ndarray]  # tensors known while tracing
    shapes: Mapping[str, jax.ShapeDtypeStruct]  # every other tensor, at the microbatch size


def input_shapes(
    model: OnnxModel,
    batch: int,
    dims: Mapping[str, int],
    batch_inputs: frozenset[str] | None = None,
) -> dict[str, jax.ShapeDtypeStruct]:
    """The data inputs at `batch` (dimension 0 of those in `batch_inputs`, default all), other
    symbolic dimensions from `dims`."""
    shapes: dict[str, jax.ShapeDtypeStruct] = {}
    for value in model.inputs:
        batched = batch_inputs is None or value.name in batch_inputs
        shape: list[int] = []
        for position, dim in enumerate(value.shape):
            if position == 0 and batched:
                shape.append(batch)
            elif isinstance(dim, int):
                shape.append(dim)
            elif dim in dims:
                shape.append(dims[dim])
            else:
                raise InputError(
                    model.source,
                    f"graph.input[{value.name}].shape[{position}]",
                    f"a value for the symbolic dimension '{dim}' (--dim {dim}=N)",
                    "none",
                )
        dtype = jax.dtypes.canonicalize_dtype(value.dtype)
        shapes[value.name] = jax.ShapeDtypeStruct(tuple(shape), dtype)
    return shapes


def analyse(
    model: OnnxModel,
    weights: Mapping[str, np.ndarray],
    inputs: Mapping[str, jax.ShapeDtypeStruct],
) -> Analysis:
    """Trace the whole model abstractly; see the module docstring."""
    static: dict[str, np.ndarray] = {}
    shapes: dict[str, jax.ShapeDtypeStruct] = {}

    def record(name: str, value: Array) -> Array:
        shapes[name] = jax.ShapeDtypeStruct(value.shape, value.dtype)
        return value

    def whole(parameters: dict[str, Array], data: dict[str, Array]) -> None:
        env: dict[str, Array] = {
            name: value for name, value in weights.items() if name not in model.parameters
        }
        env.update(parameters)
        env.update(data)
        for name, value in [*parameters.items(), *data.items()]:
            record(name, value)
        evaluate(model.nodes, env, model.opset, model.source, record)
        for name, value in env.items():
            if is_static(value) and name not in weights:
                static[name] = np.asarray(value)

    parameter_shapes = {
        name: jax.ShapeDtypeStruct(weights[name].shape, weights[name].dtype)
        for name in model.parameters
    }
    jax.eval_shape(whole, parameter_shapes, dict(inputs))
    for name, value in weights.items():
        if name not in model.parameters:
            static[name] = value
    return Analysis(MappingProxyType(static), MappingProxyType(shapes))
