"""Executor ops that stock transformers exports need, each against onnxruntime on one node.

Every op runs twice: traced in jax.numpy (as inside a stage) and on NumPy values (as the shape
arithmetic the executor folds while tracing); both must equal onnxruntime's output.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
jax = pytest.importorskip("jax")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from executor.ops import run_op  # noqa: E402

OPSET = 18
_TYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
}
_RNG = np.random.default_rng(0)
_FLOATS_WITH_SPECIALS = np.array([[1.0, np.nan, -np.inf], [np.inf, -2.5, 0.0]], np.float32)


def _onnxruntime(
    op_type: str, inputs: list[np.ndarray], attributes: dict[str, object]
) -> np.ndarray:
    names = [f"x{i}" for i in range(len(inputs))]
    node = helper.make_node(op_type, names, ["y"], **attributes)
    graph = helper.make_graph(
        [node],
        "one_op",
        [
            helper.make_tensor_value_info(name, _TYPES[value.dtype], list(value.shape))
            for name, value in zip(names, inputs, strict=True)
        ],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # types the output
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, dict(zip(names, inputs, strict=True)))
    return np.asarray(result)


def _executor(
    op_type: str, inputs: list[np.ndarray], attributes: dict[str, object], traced: bool
) -> np.ndarray:
    if not traced:
        (result,) = run_op(op_type, attributes, OPSET, inputs, 1)
        return np.asarray(result)
    # The data operand is traced; the others stay NumPy, as the executor keeps shape operands
    # (Pad's pads, indices built from shapes) static while tracing.
    rest = inputs[1:]
    jitted = jax.jit(lambda x: run_op(op_type, attributes, OPSET, [x, *rest], 1)[0])
    return np.asarray(jitted(jax.numpy.asarray(inputs[0])))


CASES = [
    ("IsNaN", [_FLOATS_WITH_SPECIALS], {}),
    ("IsInf", [_FLOATS_WITH_SPECIALS], {}),
    ("IsInf", [_FLOATS_WITH_SPECIALS], {"detect_negative": 0}),
    ("IsInf", [_FLOATS_WITH_SPECIALS], {"detect_positive": 0}),
    ("BitwiseAnd", [np.array([[12, 5, -3]], np.int64), np.array([[10], [-1]], np.int64)], {}),
    ("BitwiseOr", [np.array([12, 5, -3], np.int64), np.array([10, 3, 7], np.int64)], {}),
    ("BitwiseXor", [np.array([12, 5, -3], np.int32), np.array([10, 3, 7], np.int32)], {}),
    ("BitwiseNot", [np.array([0, 5, -3], np.int64)], {}),
    (
        "GatherElements",
        [np.arange(12).reshape(3, 4), np.array([[0, -1], [2, 1], [3, 0]])],
        {"axis": 1},
    ),
    (
        "GatherElements",
        [np.arange(12.0, dtype=np.float32).reshape(3, 4), np.array([[2, 0, 1, -1]])],
        {},
    ),
    ("Pad", [np.arange(6.0, dtype=np.float32).reshape(2, 3), np.array([0, 1, 1, 2])], {}),
    (
        "Pad",
        [np.arange(6.0, dtype=np.float32).reshape(2, 3), np.array([1, 1, 1, 1])],
        {"mode": "reflect"},
    ),
    (
        "Pad",
        [np.arange(6).reshape(2, 3), np.array([1, 0, 0, 2]), np.array(7)],
        {"mode": "constant"},
    ),
    # GatherND: whole rows, single elements, negative indices, and batch_dims (the causal-mask
    # builder of transformers' decoders gathers [batch, 1, q, kv, 2] index pairs).
    ("GatherND", [_RNG.standard_normal((3, 4, 5)).astype(np.float32), np.array([[1], [-1]])], {}),
    ("GatherND", [np.arange(24).reshape(2, 3, 4), np.array([[[0, 1, 2], [1, -1, 0]]])], {}),
    (
        "GatherND",
        [np.arange(60).reshape(3, 4, 5), np.array([[[1], [0]], [[3], [2]], [[0], [-1]]])],
        {"batch_dims": 1},
    ),
    (
        "GatherND",
        [
            np.arange(2 * 6).reshape(2, 6),
            np.stack(np.meshgrid(np.arange(2), np.arange(6), indexing="ij"), -1)[
                :, None, :, :
            ].repeat(3, 1),
        ],
        {},
    ),
]


@pytest.mark.parametrize("traced", [True, False], ids=["jax", "numpy"])
@pytest.mark.parametrize(
    ("op_type", "inputs", "attributes"),
    CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)],
)
def test_op_matches_onnxruntime(
    op_type: str, inputs: list[np.ndarray], attributes: dict[str, object], traced: bool
) -> None:
    expected = _onnxruntime(op_type, inputs, attributes)
    found = _executor(op_type, inputs, attributes, traced)
    assert found.shape == expected.shape
    # jax without x64 keeps 64-bit integers in 32 bits; NumPy keeps ONNX's type exactly.
    assert found.dtype.kind == expected.dtype.kind
    assert found.dtype == expected.dtype or traced
    np.testing.assert_array_equal(found.astype(expected.dtype), expected)


def test_gather_nd_on_numpy_values_stays_numpy() -> None:
    # Shape arithmetic must stay static while tracing: NumPy in, NumPy out.
    (result,) = run_op("GatherND", {}, OPSET, [np.arange(6).reshape(2, 3), np.array([[1, 2]])], 1)
    assert isinstance(result, np.ndarray) and result.tolist() == [5]
