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


# --- floating-point ops the planner has rules for, within float32 rounding of onnxruntime -----

_X = _RNG.standard_normal((2, 3, 4)).astype(np.float32)
_POSITIVE = np.abs(_X) + 1.5  # Acosh's domain
_UNIT = np.tanh(_X)  # Asin, Acos, Atanh's domain
_IMAGE = _RNG.standard_normal((2, 4, 5, 6)).astype(np.float32)
_CHANNELS = _RNG.standard_normal(4).astype(np.float32)
_FLOAT_CASES: list[tuple[str, list[np.ndarray], dict[str, object], int]] = [
    *((name, [_X], {}, OPSET) for name in ("Tan", "Atan", "Sinh", "Cosh", "Asinh", "Softsign")),
    *((name, [_UNIT], {}, OPSET) for name in ("Asin", "Acos", "Atanh")),
    ("Acosh", [_POSITIVE], {}, OPSET),
    ("Mish", [_X], {}, OPSET),
    ("Round", [np.array([0.5, 1.5, 2.5, -0.5, -1.7, 2.2], np.float32)], {}, OPSET),
    ("Elu", [_X], {"alpha": 0.7}, OPSET),
    ("Celu", [_X], {"alpha": 2.0}, OPSET),
    ("Selu", [_X], {}, OPSET),
    ("HardSigmoid", [_X], {"alpha": 0.3, "beta": 0.4}, OPSET),
    ("HardSwish", [_X * 4], {}, OPSET),
    ("ThresholdedRelu", [_X], {"alpha": 0.2}, OPSET),
    ("PRelu", [_X, np.array([0.1, -0.2, 0.3, 0.5], np.float32)], {}, OPSET),
    ("Shrink", [_X], {}, OPSET),
    ("Shrink", [_X], {"bias": 0.3, "lambd": 0.2}, OPSET),
    ("ReduceL1", [_X, np.array([1])], {"keepdims": 0}, OPSET),
    ("ReduceLogSumExp", [_X, np.array([0, 2])], {}, OPSET),
    ("RMSNormalization", [_X, _CHANNELS], {"epsilon": 1e-5}, 23),
    ("InstanceNormalization", [_IMAGE, _CHANNELS, _CHANNELS[::-1].copy()], {}, OPSET),
    ("GroupNormalization", [_IMAGE, _CHANNELS, _CHANNELS[::-1].copy()], {"num_groups": 2}, 21),
    ("LpPool", [_IMAGE], {"kernel_shape": [2, 3], "strides": [1, 2], "p": 2}, OPSET),
    (
        "ConvTranspose",
        [_IMAGE, _RNG.standard_normal((4, 3, 3, 2)).astype(np.float32)],
        {"strides": [2, 1], "pads": [1, 0, 0, 1], "output_padding": [1, 0]},
        OPSET,
    ),
    (
        "ConvTranspose",
        [_IMAGE, _RNG.standard_normal((4, 2, 2, 2)).astype(np.float32)],
        {"group": 2, "dilations": [2, 1]},
        OPSET,
    ),
    (
        "ScatterND",
        [_X, np.array([[1, 0], [0, 2]]), np.ones((2, 4), np.float32)],
        {"reduction": "add"},
        OPSET,
    ),
    (
        "ScatterElements",
        [_X, np.array([[[0, 2], [1, 0], [2, 2]]] * 2), np.full((2, 3, 2), 9.0, np.float32)],
        {"axis": 2},
        OPSET,
    ),
    *(
        (
            "Resize",
            [_IMAGE, np.array([], np.float32), np.array([1, 1, 2, 0.5], np.float32)],
            {"mode": mode, "coordinate_transformation_mode": transform},
            OPSET,
        )
        for mode in ("nearest", "linear")
        for transform in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel")
    ),
]


def _onnxruntime_at(
    op_type: str, inputs: list[np.ndarray], attributes: dict[str, object], opset: int
) -> np.ndarray:
    names = [f"x{i}" for i in range(len(inputs))]
    node = helper.make_node(op_type, names, ["y"], **attributes)
    values = [
        helper.make_tensor_value_info(name, _TYPES[value.dtype], list(value.shape))
        for name, value in zip(names, inputs, strict=True)
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(
        helper.make_graph([node], "one_op", values, [output]),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, dict(zip(names, inputs, strict=True)))
    return np.asarray(result)


@pytest.mark.parametrize(
    ("op_type", "inputs", "attributes", "opset"),
    _FLOAT_CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(_FLOAT_CASES)],
)
def test_float_op_matches_onnxruntime(
    op_type: str, inputs: list[np.ndarray], attributes: dict[str, object], opset: int
) -> None:
    expected = _onnxruntime_at(op_type, inputs, attributes, opset)
    rest = inputs[1:]
    jitted = jax.jit(lambda x: run_op(op_type, attributes, opset, [x, *rest], 1)[0])
    found = np.asarray(jitted(jax.numpy.asarray(inputs[0])))
    assert found.shape == expected.shape
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


def test_simplified_layer_norm_is_the_rms_norm_by_hand() -> None:
    # onnxruntime's SimplifiedLayerNormalization (what its fusions emit): x / rms(x) * scale.
    scale = _CHANNELS
    expected = _X / np.sqrt(np.mean(_X * _X, axis=-1, keepdims=True) + 1e-5) * scale
    y, inverse = run_op("SimplifiedLayerNormalization", {"epsilon": 1e-5}, OPSET, [_X, scale], 2)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
    assert np.asarray(inverse).shape == (2, 3, 1)


def test_bit_shift_by_hand() -> None:
    x, shift = np.array([1, 8, 255], np.uint32), np.array([3, 2, 4], np.uint32)
    (left,) = run_op("BitShift", {"direction": "LEFT"}, OPSET, [x, shift], 1)
    (right,) = run_op("BitShift", {"direction": "RIGHT"}, OPSET, [x, shift], 1)
    assert np.asarray(left).tolist() == [8, 32, 4080] and np.asarray(right).tolist() == [0, 2, 15]


def test_opset_6_prelu_has_a_slope_per_channel_by_hand() -> None:
    # PRelu-6 applies a [C] slope along dimension 1 (numpy broadcasting came with opset 7).
    slope = np.array([0.1, -0.2, 0.3, 0.5], np.float32)
    (found,) = run_op("PRelu", {}, 6, [jax.numpy.asarray(_IMAGE), slope], 1)
    expected = np.where(_IMAGE < 0, slope.reshape(4, 1, 1) * _IMAGE, _IMAGE)
    np.testing.assert_allclose(np.asarray(found), expected, rtol=1e-6)


def test_opset_6_broadcast_from_an_axis_by_hand() -> None:
    # Add-6 with broadcast=1, axis=1: B [4, 5] matches A [2, 4, 5, 6] from dimension 1.
    b = _RNG.standard_normal((4, 5)).astype(np.float32)
    attributes = {"broadcast": 1, "axis": 1}
    for op_type, expected in (("Add", _IMAGE + b[:, :, None]), ("Div", _IMAGE / b[:, :, None])):
        (found,) = run_op(op_type, attributes, 6, [jax.numpy.asarray(_IMAGE), b], 1)
        np.testing.assert_allclose(np.asarray(found), expected, rtol=1e-6)
