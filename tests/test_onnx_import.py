"""ONNX import: shapes, binding, folding, batch dimensions, FLOPs, parameters, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS, make_model, mlp_model
from onnx import TensorProto, helper, numpy_helper

from planner.graph import TensorKind
from planner.onnx_import import load_onnx
from plans.errors import InputError


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_dynamic_batch_binds_and_folds_shape_arithmetic(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=8)
    # Shape/Gather/Concat/Constant fold away: only compute and the two views remain.
    assert [op.name for op in graph.ops] == ["fc1", "relu", "split_heads", "merge_heads", "fc2"]
    assert graph.tensors["r3"].shape == (8, 4, 8)
    assert graph.tensors["y"].shape == (8, 16)
    assert graph.batch_size == 8


def test_batch_dimension_of_every_tensor_is_recorded(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=8)
    assert {name: t.batch_dim for name, t in graph.tensors.items()} == {
        "x": 0, "h": 0, "r": 0, "r3": 0, "r2": 0, "y": 0, "w1": None, "w2": None,
        "shape3": None, "flat": None,  # the Reshapes' folded target shapes
    }  # fmt: skip


def test_matmul_flops_and_bytes_by_hand(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=8)
    fc1 = graph.op_by_name["fc1"]
    assert fc1.flops == 2 * 8 * 16 * 32
    assert fc1.bytes_read == 4 * (8 * 16 + 16 * 32)
    assert fc1.bytes_written == 4 * 8 * 32
    assert graph.op_by_name["relu"].flops == 8 * 32
    assert graph.op_by_name["split_heads"].bytes_read == 0  # a view moves nothing


def test_kinds_of_tensors(mlp_path: Path) -> None:
    graph = load_onnx(mlp_path, batch_size=4)
    kinds = {name: t.kind for name, t in graph.tensors.items()}
    assert kinds["x"] is TensorKind.INPUT
    assert kinds["w1"] is TensorKind.PARAMETER
    assert kinds["h"] is TensorKind.ACTIVATION
    assert graph.parameter_count == 16 * 32 * 2


@pytest.mark.parametrize(
    ("node", "shapes", "flops"),
    [
        # Batched matmul with broadcasting: [2, 1, 3, 4] x [5, 4, 6] -> [2, 5, 3, 6]
        (helper.make_node("MatMul", ["a", "b"], ["y"]), [(2, 1, 3, 4), (5, 4, 6)], 2 * 10 * 3 * 4 * 6),
        # Gemm with transB and bias: [3, 4] x [6, 4]^T + [6]
        (helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1), [(3, 4), (6, 4), (6,)], 2 * 3 * 4 * 6 + 3 * 6),
        # Einsum: contraction over k
        (helper.make_node("Einsum", ["a", "b"], ["y"], equation="bik,kj->bij"), [(2, 3, 4), (4, 5)], 2 * 2 * 3 * 4 * 5),
        # Conv 3x3, 8 -> 16 channels, padding 1, 10x10 image, batch 2, with bias
        (helper.make_node("Conv", ["a", "b", "c"], ["y"], pads=[1, 1, 1, 1]), [(2, 8, 10, 10), (16, 8, 3, 3), (16,)], 2 * (2 * 16 * 100) * 8 * 9 + 2 * 16 * 100),
    ],
)  # fmt: skip
def test_contraction_flops_are_exact(
    tmp_path: Path, node: onnx.NodeProto, shapes: list[tuple[int, ...]], flops: int
) -> None:
    names = ["a", "b", "c"][: len(shapes)]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(shapes[0]))]
    inits = [
        numpy_helper.from_array(np.zeros(shape, np.float32), name)
        for name, shape in zip(names[1:], shapes[1:], strict=True)
    ]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node.name = "op"
    model = make_model([node], inputs, [out], inits)
    model = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend([v for v in model.graph.value_info if v.name == "y"])
    graph = load_onnx(_save(model, tmp_path / "m.onnx"))
    assert graph.op_by_name["op"].flops == flops


def test_fixed_batch_plans_at_its_batch(tmp_path: Path) -> None:
    path = _save(mlp_model(batch=6), tmp_path / "fixed.onnx")
    assert load_onnx(path).batch_size == 6
    assert load_onnx(path, batch_size=6).batch_size == 6


def test_fixed_batch_refuses_another_batch_size(tmp_path: Path) -> None:
    path = _save(mlp_model(batch=6), tmp_path / "fixed.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=8)
    assert str(error.value).startswith(
        f"{path}: graph.input[x].shape[0]: expected a symbolic batch dimension to bind "
        "--batch-size 8, found a fixed batch of 6; export the model with a dynamic batch"
    )


def test_symbolic_batch_without_batch_size_is_an_error(mlp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        load_onnx(mlp_path)
    assert str(error.value) == (
        f"{mlp_path}: graph.input[x].shape[0]: expected --batch-size N to bind the symbolic "
        "batch dimension 'batch', found no --batch-size"
    )


def test_batch_can_be_bound_by_name_with_dim(mlp_path: Path) -> None:
    assert load_onnx(mlp_path, dims={"batch": 4}).batch_size == 4


def test_other_symbolic_dimensions_need_dim(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [x], [y])
    path = _save(model, tmp_path / "seq.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=2)
    assert "graph.input[x].shape[1]: expected a value for the symbolic dimension 'seq'" in str(
        error.value
    )
    assert load_onnx(path, batch_size=2, dims={"seq": 7}).tensors["y"].shape == (2, 7)


def test_a_data_dependent_shape_is_one_error_naming_the_tensor_and_op(tmp_path: Path) -> None:
    # NonZero has a data-dependent output shape: no binding can make it static.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2, None])
    model = make_model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [x], [y])
    path = _save(model, tmp_path / "nz.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=2)
    assert str(error.value) == (
        f"{path}: tensor y: expected a shape that follows from the input shapes (bind them with "
        "--batch-size and --dim NAME=VALUE), found a shape that depends on data: NonZero node nz "
        "makes it from the data it reads"
    )


def test_a_top_k_whose_k_comes_from_data_names_the_input(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="top")]
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", "k"])
    model = make_model(nodes, [x, k], [v])
    with pytest.raises(InputError) as error:
        load_onnx(_save(model, tmp_path / "topk.onnx"), batch_size=2)
    assert "tensor v: expected a shape that follows" in str(error.value)
    assert "TopK node top makes it from the values of k" in str(error.value)


def _causal_mask_model() -> onnx.ModelProto:
    """transformers' causal-mask idiom on a dynamic sequence: positions from Range over the
    input's Shape, LessOrEqual of kv against q positions, And with an all-true padding mask,
    Expand to [batch, 1, seq, seq], Where into an additive mask added to scores."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1, "seq", "seq"])
    out = helper.make_tensor_value_info("masked", TensorProto.FLOAT, ["batch", 1, "seq", "seq"])
    const = lambda name, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(np.array(value))
    )
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"]),
        const("one_index", [1]),
        const("zero", np.int64(0)),
        const("one", np.int64(1)),
        helper.make_node("Gather", ["shape", "one_index"], ["seq1"], axis=0),
        helper.make_node("Squeeze", ["seq1"], ["seq"]),
        helper.make_node("Range", ["zero", "seq", "one"], ["pos"]),
        const("q_axes", [0, 1, 3]),
        const("kv_axes", [0, 1, 2]),
        helper.make_node("Unsqueeze", ["pos", "q_axes"], ["q"]),
        helper.make_node("Unsqueeze", ["pos", "kv_axes"], ["kv"]),
        helper.make_node("LessOrEqual", ["kv", "q"], ["causal"]),
        helper.make_node("Shape", ["ids"], ["batch_and_seq"]),
        helper.make_node("ConstantOfShape", ["batch_and_seq"], ["padding"],
                         value=numpy_helper.from_array(np.array([True]))),
        const("pad_axes", [1, 2]),
        helper.make_node("Unsqueeze", ["padding", "pad_axes"], ["padding4"]),
        helper.make_node("And", ["causal", "padding4"], ["allowed"]),
        helper.make_node("Shape", ["scores"], ["scores_shape"]),
        helper.make_node("Expand", ["allowed", "scores_shape"], ["allowed4"]),
        const("no", np.float32(0.0)),
        const("minus", np.float32(-1e9)),
        helper.make_node("Where", ["allowed4", "no", "minus"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"], name="add_mask"),
    ]  # fmt: skip
    return make_model(nodes, [ids, scores], [out])


def test_the_causal_mask_idiom_resolves_and_folds_away(tmp_path: Path) -> None:
    path = _save(_causal_mask_model(), tmp_path / "mask.onnx")
    graph = load_onnx(path, batch_size=3, dims={"seq": 5})
    # The mask is made of constants and shapes only: it folds to one constant [3, 1, 5, 5].
    assert [op.op_type for op in graph.ops] == ["Add"]
    (bias,) = [graph.tensors[name] for name in graph.ops[0].inputs if name != "scores"]
    assert bias.shape == (3, 1, 5, 5) and bias.kind is TensorKind.CONSTANT
    assert graph.tensors["masked"].shape == (3, 1, 5, 5)
    assert graph.tensors["masked"].batch_dim == 0


def test_the_causal_mask_too_large_to_fold_still_gets_static_shapes(tmp_path: Path) -> None:
    # [64, 1, 64, 64] bool is 262144 elements: over the value limit, so the builder stays ops,
    # each with a concrete shape (no fresh unk__ symbols).
    path = _save(_causal_mask_model(), tmp_path / "mask.onnx")
    graph = load_onnx(path, batch_size=64, dims={"seq": 64})
    assert graph.tensors["allowed4"].shape == (64, 1, 64, 64)
    assert graph.tensors["bias"].shape == (64, 1, 64, 64)
    assert graph.tensors["allowed"].shape == (64, 1, 64, 64)
    assert graph.tensors["bias"].batch_dim == 0


def test_an_unread_dropout_mask_needs_no_shape(tmp_path: Path) -> None:
    # Opset 9: Dropout's mask output, which onnx's inference leaves without a shape.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop", ratio=0.5),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
    ]
    graph = load_onnx(_save(make_model(nodes, [x], [y], opset=9), tmp_path / "d.onnx"), 2)
    assert graph.op_by_name["drop"].outputs[0] == "d"
    assert graph.tensors["y"].shape == (2, 4)


ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.mark.parametrize("name", sorted(path.stem for path in ZOO.glob("*.onnx")))
def test_the_model_zoo_in_the_onnx_wheel_imports(name: str) -> None:
    graph = load_onnx(ZOO / f"{name}.onnx")
    assert graph.ops and all(len(t.shape) >= 0 for t in graph.tensors.values())
    (output,) = graph.outputs
    assert 1000 in graph.tensors[output].shape  # ImageNet classes


def test_control_flow_is_refused_naming_the_node(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    body = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])], "body", [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
    )  # fmt: skip
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"]),
        helper.make_node("If", ["positive"], ["y"], name="branch", then_branch=body,
                         else_branch=body),
    ]  # fmt: skip
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    path = _save(make_model(nodes, [x], [y], [zero]), tmp_path / "if.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=2)
    assert str(error.value) == (
        f"{path}: node branch: expected no control flow (an If folds only when its condition is "
        "a constant), found an If whose condition depends on data"
    )


def test_an_if_on_a_constant_condition_folds(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])

    def branch(value: int) -> onnx.GraphProto:
        constant = numpy_helper.from_array(np.array([value], np.int64))
        return helper.make_graph(
            [helper.make_node("Constant", [], ["shape"], value=constant)], f"b{value}", [],
            [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        )  # fmt: skip

    nodes = [
        helper.make_node("If", ["flag"], ["target"], name="pick", then_branch=branch(8),
                         else_branch=branch(-1)),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="flatten"),
    ]  # fmt: skip
    flag = numpy_helper.from_array(np.array(True), "flag")
    graph = load_onnx(_save(make_model(nodes, [x], [y], [flag]), tmp_path / "c.onnx"), 2)
    assert [op.name for op in graph.ops] == ["flatten"]
    assert graph.tensors["y"].shape == (8,)


def test_a_sequence_op_is_refused_naming_the_node(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("SplitToSequence", ["x"], ["parts"], name="split", axis=1),
        helper.make_node("ConcatFromSequence", ["parts"], ["y"], name="join", axis=1),
    ]
    path = _save(make_model(nodes, [x], [y]), tmp_path / "seq.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=2)
    assert str(error.value) == (
        f"{path}: node split: expected tensor values only, found SplitToSequence, an op on "
        "sequence or optional values"
    )


def test_a_training_graph_op_is_refused_naming_the_node(tmp_path: Path) -> None:
    # The onnx backend's test_gradient_of_add: scalar inputs and onnx's Gradient op.
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [])
    nodes = [
        helper.make_node("Add", ["a", "a"], ["c"]),
        helper.make_node("Gradient", ["a"], ["dc_da"], name="grad", xs=["a"], y="c",
                         domain="ai.onnx.preview.training"),
    ]  # fmt: skip
    model = make_model(nodes, [a], [c])
    model.opset_import.append(helper.make_opsetid("ai.onnx.preview.training", 1))
    path = _save(model, tmp_path / "gradient.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path)
    assert str(error.value) == (
        f"{path}: node grad: expected the forward graph of a model (the planner derives the "
        "backward and the update), found Gradient of domain 'ai.onnx.preview.training', an op "
        "of a training graph"
    )


def test_a_string_input_is_refused_naming_it(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [4])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [4])
    nodes = [helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER")]
    path = _save(make_model(nodes, [x], [y], opset=10), tmp_path / "strings.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path)
    assert str(error.value) == (
        f"{path}: graph.input[x]: expected a numeric tensor, found a string tensor (text "
        "processing has no device work to plan)"
    )


def test_inputs_whose_first_dimension_is_not_the_batch_keep_their_shape(tmp_path: Path) -> None:
    # torch's addmm exported with a fixed batch: x [2, 3] is the data, w [3, 4] an input too.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = load_onnx(_save(make_model(nodes, [x, w], [y]), tmp_path / "mm.onnx"))
    assert graph.batch_size == 2
    assert {name: graph.tensors[name].batch_dim for name in "xwy"} == {"x": 0, "w": None, "y": 0}


def test_opset_6_broadcasting_is_checked_so_a_fixed_batch_is_found(tmp_path: Path) -> None:
    # Before opset 7 a binary op broadcasts only with broadcast=1, from `axis`; onnx's inference
    # of those versions passes the first input's shape through unchecked. A constant of the
    # batch's size (PoissonNLLLoss' target) fixes the batch: no tensor follows it.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [10, 4])
    target = numpy_helper.from_array(np.ones((10, 4), np.float32), "target")
    nodes = [helper.make_node("Mul", ["target", "x"], ["y"])]
    graph = load_onnx(_save(make_model(nodes, [x], [y], [target], opset=6), tmp_path / "m.onnx"))
    assert graph.tensors["y"].shape == (10, 4)
    assert all(tensor.batch_dim is None for tensor in graph.tensors.values())
    row = helper.make_tensor_value_info("row", TensorProto.FLOAT, [3])
    nodes = [helper.make_node("Add", ["x", "row"], ["y"], name="add", broadcast=1, axis=1)]
    path = _save(make_model(nodes, [x, row], [y], opset=6), tmp_path / "add.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path)
    assert str(error.value) == (
        f"{path}: node add: expected a second input that matches the first's dimensions from "
        "axis 1 (broadcasting before opset 7), found shapes [10, 4] and [3]"
    )


def test_weights_listed_as_graph_inputs_are_parameters(tmp_path: Path) -> None:
    # keep_initializers_as_inputs (the TorchScript exporter, IR 3): initializers are inputs too.
    model = mlp_model()
    for init in model.graph.initializer:
        model.graph.input.append(
            helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        )
    graph = load_onnx(_save(model, tmp_path / "inputs.onnx"), batch_size=2)
    assert graph.inputs == ("x",)
    assert graph.parameter_count == 16 * 32 * 2


def test_unknown_op_types_still_load_with_a_warning(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [helper.make_node("Hardmax", ["x"], ["y"], name="hardmax")]
    graph = load_onnx(_save(make_model(nodes, [x], [y]), tmp_path / "h.onnx"), batch_size=3)
    assert graph.op_by_name["hardmax"].flops == 3 * 4  # one per output element
    assert graph.warnings == (
        "op types without a specific cost rule (priced by element count): Hardmax",
    )


def test_graph_only_model_with_absent_external_data_loads(tmp_path: Path) -> None:
    model = mlp_model()
    for init in model.graph.initializer:
        onnx.external_data_helper.set_external_data(init, location="absent.onnx.data")
        init.ClearField("raw_data")
        init.ClearField("float_data")
    graph = load_onnx(_save(model, tmp_path / "graph-only.onnx"), batch_size=2)
    assert graph.parameter_count == 16 * 32 * 2


def test_present_external_data_loads(tmp_path: Path) -> None:
    path = tmp_path / "with-data.onnx"
    onnx.save(mlp_model(), str(path), save_as_external_data=True, size_threshold=0)
    assert (tmp_path / "with-data.onnx.data").exists() or any(tmp_path.glob("*.data"))
    assert load_onnx(path, batch_size=2).parameter_count == 16 * 32 * 2


def test_fingerprint_ignores_weights_but_not_shapes(tmp_path: Path) -> None:
    first = load_onnx(_save(mlp_model(), tmp_path / "a.onnx"), batch_size=2)
    other_weights = mlp_model()
    other_weights.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(np.full((16, 32), 3.0, np.float32), "w1")
    )
    second = load_onnx(_save(other_weights, tmp_path / "b.onnx"), batch_size=2)
    wider = load_onnx(_save(mlp_model(hidden=64), tmp_path / "c.onnx"), batch_size=2)
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint != wider.fingerprint


# --- the shipped example models --------------------------------------------------------------


def _manifest() -> dict[str, dict[str, object]]:
    loaded: dict[str, dict[str, object]] = json.loads((MODELS / "models.json").read_text())
    return loaded


def test_gpt3_parameter_count_matches_the_formula_and_torch() -> None:
    graph = load_onnx(MODELS / "gpt3-1.3b.onnx", batch_size=1)
    h, layers, vocab, positions = 2048, 24, 51200, 1024
    # GPT-2 layout with tied input/output embeddings: token and position embeddings, per layer
    # 12 h^2 + 13 h (attention 4 h^2 + 4 h, MLP 8 h^2 + 5 h, two layer norms 4 h), final norm.
    expected = vocab * h + positions * h + layers * (12 * h * h + 13 * h) + 2 * h
    assert graph.parameter_count == expected == 1_315_557_376
    assert _manifest()["gpt3-1.3b"]["parameters"] == expected


def test_gpt3_forward_flops_by_hand() -> None:
    graph = load_onnx(MODELS / "gpt3-1.3b.onnx", batch_size=1)
    h, layers, vocab, seq = 2048, 24, 51200, 1024
    matmuls = 2 * seq * (layers * 12 * h * h + vocab * h)  # weights: QKV, proj, MLP, LM head
    attention = 2 * 2 * seq * seq * h * layers  # Q K^T and scores x V
    biases = seq * (3 * h + h + 4 * h + h) * layers  # Gemm adds its bias: one FLOP per output
    contraction = sum(op.flops for op in graph.ops if op.op_type in ("MatMul", "Gemm"))
    assert contraction == pytest.approx(matmuls + attention + biases, rel=1e-12)


def test_example_models_keep_exporter_name_scopes() -> None:
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=2)
    scoped = [op for op in graph.ops if "transformer.h.1" in op.scopes]
    assert scoped, "ops of the second block carry the exporter's name scope"


@pytest.mark.parametrize("name", sorted(_manifest()))
def test_every_example_model_imports_fully_static(name: str) -> None:
    entry = _manifest()[name]
    graph = load_onnx(MODELS / str(entry["file"]), batch_size=2)
    assert graph.batch_size == 2
    assert graph.parameter_count == entry.get("onnx_trainable_parameters", entry["parameters"])
    batch_input = graph.tensors[graph.inputs[0]]
    assert batch_input.batch_dim == 0 and batch_input.shape[0] == 2


# --- bad files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.onnx"
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=1)
    assert str(error.value) == f"{path}: expected an ONNX model file, found no such file"


def test_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "text.onnx"
    path.write_text("this is not a protobuf at all\n" * 10)
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=1)
    assert str(error.value).startswith(f"{path}: expected an ONNX model")


def test_truncated_onnx(tmp_path: Path) -> None:
    data = (MODELS / "gpt-tiny.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=1)
    assert str(error.value).startswith(f"{path}: expected a")


def test_unknown_element_type(tmp_path: Path) -> None:
    model = mlp_model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT4
    model.graph.node[0].op_type = "MatMul"
    path = _save(model, tmp_path / "uint4.onnx")
    with pytest.raises(InputError) as error:
        load_onnx(path, batch_size=1)
    assert str(error.value).startswith(f"{path}: ")
    assert "expected" in str(error.value)
