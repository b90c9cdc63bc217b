"""Expert parallelism as the ILP finds it: a GShard MoE layer (Lepikhin et al., ICLR'21) on a
2x4 mesh puts its experts on one mesh axis and moves the tokens to them by all-to-all."""

from __future__ import annotations

import onnx
import pytest
from conftest import graph_only_weight
from onnx import TensorProto, helper
from test_compare import v100_cluster

from planner.graph import Graph
from planner.onnx_import import load_onnx
from planner.options import PlanOptions
from planner.reshard import ReshardRules
from planner.search import plan
from plans.plan import Plan

EXPERTS, CAPACITY, TOKENS, HIDDEN, FFN = 8, 256, 1024, 1024, 4096


def gshard_moe_layer() -> onnx.ModelProto:
    """A dense layer, GShard's dispatch (gsec,gsm->egcm), the experts' two matmuls, the combine
    (gsec,egcm->gsm) and a dense layer; the routing tensor is an input of the layer."""
    x = helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["batch", TOKENS, HIDDEN])
    dispatch = helper.make_tensor_value_info(
        "dispatch", TensorProto.FLOAT, ["batch", TOKENS, EXPERTS, CAPACITY]
    )
    y = helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["batch", TOKENS, HIDDEN])
    weights = [
        graph_only_weight("pre.weight", (HIDDEN, HIDDEN)),
        graph_only_weight("moe.w_in", (EXPERTS, HIDDEN, FFN)),
        graph_only_weight("moe.w_out", (EXPERTS, FFN, HIDDEN)),
        graph_only_weight("post.weight", (HIDDEN, HIDDEN)),
    ]

    def einsum(inputs: list[str], output: str, equation: str, name: str) -> onnx.NodeProto:
        return helper.make_node("Einsum", inputs, [output], equation=equation, name=name)

    nodes = [
        helper.make_node("MatMul", ["x0", "pre.weight"], ["x"], name="pre"),
        einsum(["dispatch", "x"], "xe", "gsec,gsm->egcm", "dispatch_tokens"),
        einsum(["xe", "moe.w_in"], "he", "egcm,emh->egch", "expert_in"),
        helper.make_node("Relu", ["he"], ["ae"], name="expert_relu"),
        einsum(["ae", "moe.w_out"], "ye", "egch,ehm->egcm", "expert_out"),
        einsum(["dispatch", "ye"], "y", "gsec,egcm->gsm", "combine_tokens"),
        helper.make_node("MatMul", ["y", "post.weight"], ["y1"], name="post"),
    ]
    graph = helper.make_graph(nodes, "gshard-moe-layer", [x, dispatch], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    path = tmp_path_factory.mktemp("moe") / "moe.onnx"
    onnx.save(gshard_moe_layer(), str(path))
    return load_onnx(path, batch_size=32)


def _plan(moe: Graph, rules: ReshardRules | None = None) -> Plan:
    options = PlanOptions(search="intra-only", dtype="float16", reshard=rules or ReshardRules())
    return plan(moe, v100_cluster(2, 4), options)


def _input_spec(plan_: Plan, op: str, position: int) -> str:
    """The spec op `op` reads its input `position` in (from its strategy "OUT = IN0 x IN1")."""
    strategy = plan_.stages[0].strategies[op]
    return strategy.split(" = ")[1].split(" x ")[position]


def test_experts_on_one_axis_tokens_moved_by_all_to_all(moe: Graph) -> None:
    found = _plan(moe)
    (stage,) = found.stages
    assert stage.logical_mesh == (2, 4)
    # The experts dim of both expert weights is split over mesh axis 1 (8 experts, 2 a GPU).
    assert stage.shardings["moe.w_in"] == "S1RR"
    assert stage.shardings["moe.w_out"] == "S1RR"
    # The dispatched tokens leave the dispatch split on a dim other than the experts' over
    # axis 1 and reach the experts split on the experts: a change of split dim over one axis,
    # an all-to-all (planner/reshard.py); the combine reads the experts' output back the same way.
    produced = stage.shardings["xe"]
    consumed = _input_spec(found, "expert_in", 0)
    assert consumed.startswith("S1") and not produced.startswith("S1") and "S1" in produced
    back = _input_spec(found, "combine_tokens", 1)
    assert stage.shardings["ye"].startswith("S1") and not back.startswith("S1") and "S1" in back


def test_without_all_to_all_the_layer_is_slower(moe: Graph) -> None:
    with_all_to_all = _plan(moe).estimate.iteration_time_s
    without = _plan(moe, ReshardRules(allow_all_to_all=False)).estimate.iteration_time_s
    assert with_all_to_all < without


def test_graph_is_what_gshard_computes(moe: Graph) -> None:
    einsums = [op for op in moe.ops if op.op_type == "Einsum"]
    assert [dict(op.attributes)["equation"] for op in einsums] == [
        "gsec,gsm->egcm", "egcm,emh->egch", "egch,ehm->egcm", "gsec,egcm->gsm",
    ]  # fmt: skip
    assert moe.tensors["xe"].shape == (EXPERTS, 32, CAPACITY, HIDDEN)
