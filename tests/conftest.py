"""Shared fixtures: paths to the shipped examples and small ONNX models built by hand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import settings
from onnx import TensorProto, helper, numpy_helper

# Timings are never asserted in tests, hypothesis' per-example deadline included (a loaded CI
# machine would fail it by chance); the same examples run every time.
settings.register_profile("alpa-plan", deadline=None, derandomize=True)
settings.load_profile("alpa-plan")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MODELS = EXAMPLES / "models"
CLUSTERS = EXAMPLES / "clusters"
P3 = CLUSTERS / "aws-p3.16xlarge.yaml"


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 18,
) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs), list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def mlp_model(
    batch: int | str = "batch", features: int = 16, hidden: int = 32, heads: int = 4
) -> onnx.ModelProto:
    """x[batch, features] -> MatMul w1 -> Relu -> MatMul w2, with a Shape-derived Reshape pair in
    the middle, as exporters write for dynamic batches."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, features])
    w1 = numpy_helper.from_array(np.ones((features, hidden), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((hidden, features), np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node(
            "Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.int64))
        ),
        helper.make_node("Gather", ["s", "zero"], ["b"], axis=0, name="batch_of"),
        helper.make_node(
            "Constant",
            [],
            ["rest"],
            value=numpy_helper.from_array(np.array([heads, hidden // heads], np.int64)),
        ),
        helper.make_node("Concat", ["b", "rest"], ["shape3"], axis=0, name="concat"),
        helper.make_node("Reshape", ["r", "shape3"], ["r3"], name="split_heads"),
        helper.make_node(
            "Constant",
            [],
            ["flat"],
            value=numpy_helper.from_array(np.array([-1, hidden], np.int64)),
        ),
        helper.make_node("Reshape", ["r3", "flat"], ["r2"], name="merge_heads"),
        helper.make_node("MatMul", ["r2", "w2"], ["y"], name="fc2"),
    ]
    return make_model(nodes, [x], [y], [w1, w2])


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(), str(path))
    return path


def graph_only_weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    """A float32 initializer whose data lives in an absent external file: shapes only."""
    tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="absent.onnx.data")
    return tensor


def stacked_mlp_model(layers: int, hidden: int, batch: int | str = "batch") -> onnx.ModelProto:
    """`layers` blocks of x -> MatMul(hidden x 4 hidden) -> Relu -> MatMul(4 hidden x hidden) ->
    Add(x), each under the exporter-style name scope `layers.<i>`: uniform pipeline stages."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, hidden])
    nodes: list[onnx.NodeProto] = []
    weights = []
    current = "x"
    for i in range(layers):
        up, down = f"layers.{i}.up", f"layers.{i}.down"
        weights.append(graph_only_weight(up, (hidden, 4 * hidden)))
        weights.append(graph_only_weight(down, (4 * hidden, hidden)))
        block = [
            helper.make_node("MatMul", [current, up], [f"h{i}"], name=f"up_{i}"),
            helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu_{i}"),
            helper.make_node("MatMul", [f"r{i}", down], [f"d{i}"], name=f"down_{i}"),
            helper.make_node("Add", [current, f"d{i}"], [f"x{i}"], name=f"residual_{i}"),
        ]
        for node in block:
            helper.set_metadata_props(
                node, {"pkg.torch.onnx.name_scopes": repr(["", f"layers.{i}"])}
            )
        nodes += block
        current = f"x{i}"
    y = helper.make_tensor_value_info(current, TensorProto.FLOAT, [batch, hidden])
    return make_model(nodes, [x], [y], weights)
