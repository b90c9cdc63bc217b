"""The intra-op pass on small models whose best plan is known by hand."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from conftest import MODELS, mlp_model

from cost_models.cluster import Cluster, Gpu, Link
from cost_models.mesh import logical_mesh
from planner.graph import Graph, Subgraph, split_batch
from planner.intra_op import IntraOpSettings, StageSharding, solve_stage
from planner.onnx_import import load_onnx
from planner.ops import cast_floats
from planner.options import PlanOptions
from planner.search import plan
from planner.strategies import StrategyOptions
from plans.errors import InfeasibleError
from plans.plan import ZeroStage

PEAK_FLOPS = 1e12
MEMORY_BANDWIDTH = 1e11
LINK_BANDWIDTH = 1e10
LINK_LATENCY_S = 1e-6


def toy_cluster(hosts: int = 1, gpus: int = 8, memory_bytes: int = 2**30) -> Cluster:
    return Cluster(
        name="toy",
        hosts=hosts,
        gpus_per_host=gpus,
        gpu=Gpu("toy-gpu", memory_bytes, (("float32", PEAK_FLOPS),), MEMORY_BANDWIDTH),
        intra_host=Link(LINK_BANDWIDTH, LINK_LATENCY_S),
        inter_host=Link(LINK_BANDWIDTH / 10, 10 * LINK_LATENCY_S),
    )


def roofline(flops: float, num_bytes: float) -> float:
    return max(flops / PEAK_FLOPS, num_bytes / MEMORY_BANDWIDTH)


def all_reduce(num_bytes: float, n: int = 8) -> float:
    return 2 * (n - 1) / n * num_bytes / LINK_BANDWIDTH + LINK_LATENCY_S


def save_mlp(tmp_path: Path, **kwargs: int) -> Path:
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_model(**kwargs), str(path))
    return path


FLOAT32_ADAM_UPDATE_BYTES = 2 * 4 + 4 + 2 * 8  # read+write weights, read grads, read+write m, v


def test_forced_data_parallel_costs_by_hand(tmp_path: Path) -> None:
    graph = load_onnx(save_mlp(tmp_path), batch_size=64)
    options = PlanOptions(
        dtype="float32", search="intra-only", strategy=StrategyOptions(force_data_parallel=True)
    )
    result = plan(graph, toy_cluster(), options)
    b = 64 // 8  # samples per device
    fc1 = roofline(2 * b * 16 * 32, 4 * (b * 16 + 16 * 32 + b * 32))
    relu = roofline(b * 32, 4 * (b * 32 + b * 32))
    fc2 = roofline(2 * b * 32 * 16, 4 * (b * 32 + 32 * 16 + b * 16))
    forward = fc1 + relu + fc2  # the two reshapes are views: free
    backward = 2 * fc1 + relu + 2 * fc2
    parameters = 16 * 32 + 32 * 16
    # Each weight's gradient is all-reduced over the 8 GPUs once per iteration, then Adam
    # updates the full (replicated) weights.
    sync = 2 * all_reduce(4 * 16 * 32)
    step = parameters * FLOAT32_ADAM_UPDATE_BYTES / MEMORY_BANDWIDTH
    (stage,) = result.stages
    assert stage.logical_mesh == (1, 8)
    assert stage.time.forward_s == pytest.approx(forward)
    assert stage.time.backward_s == pytest.approx(backward)
    assert stage.time.communication_s == 0
    assert stage.time.gradient_sync_s == pytest.approx(sync)
    assert stage.time.optimizer_step_s == pytest.approx(step)
    assert result.estimate.iteration_time_s == pytest.approx(forward + backward + sync + step)
    # float32 Adam: 4 + 4 + 8 bytes per parameter. Kept for backward: x (fc1's input) and r
    # (relu's output, which fc2 also reads through the two reshapes); not h or y.
    assert stage.memory.parameters_bytes == 4 * parameters
    assert stage.memory.optimizer_bytes == 8 * parameters
    assert stage.memory.activations_bytes == 4 * b * (16 + 32)
    assert stage.shardings["x"] == "S1R" and stage.shardings["w1"] == "RR"


def _mlp_stage(
    tmp_path: Path,
    batch: int,
    features: int,
    hidden: int,
    budget: float = 2**40,
    remat: bool = False,
    scatter: bool = True,
) -> tuple[Graph, StageSharding]:
    path = save_mlp(tmp_path, features=features, hidden=hidden, heads=8)
    graph = load_onnx(path, batch_size=batch)
    cluster = toy_cluster()
    mesh = logical_mesh(cluster, (1, 8), (1, 8))
    settings = IntraOpSettings(
        "float32", "adam", True, 1, 1, budget, relative_gap=0.0,
        strategy_options=StrategyOptions(scatter_partial_sums=scatter),
        recompute="full" if remat else "none",
    )  # fmt: skip
    return graph, solve_stage(graph.subgraph(), mesh, cluster.gpu, settings)


def test_weights_dominate_megatron_column_then_row(tmp_path: Path) -> None:
    _, stage = _mlp_stage(tmp_path, batch=8, features=1024, hidden=4096)
    # fc1 splits its weight by columns, fc2 by rows: the hidden activation stays split and the
    # only collective is fc2's all-reduce of its partial sums.
    assert str(stage.specs["w1"]) == "RS1"
    assert str(stage.specs["w2"]) == "S1R"
    assert str(stage.specs["h"]) == "RS1" and str(stage.specs["r"]) == "RS1"
    assert stage.strategies["fc2"].name.startswith("RR = RS1 x S1R")
    # The forward all-reduce of fc2's partial sums is the only collective: x is a graph input,
    # so fc1 needs no all-reduce of its input gradient.
    assert stage.communication_s == pytest.approx(all_reduce(4 * 8 * 1024))


def test_remat_pays_the_forward_all_reduce_again_in_the_backward(tmp_path: Path) -> None:
    _, stage = _mlp_stage(tmp_path, batch=8, features=1024, hidden=4096, remat=True, scatter=False)
    assert str(stage.specs["w1"]) == "RS1" and str(stage.specs["w2"]) == "S1R"
    # The recomputed forward all-reduces fc2's partial sums a second time.
    assert stage.communication_s == pytest.approx(2 * all_reduce(4 * 8 * 1024))
    # Allowed to, fc2 reduce-scatters them instead (twice, the gradient gathered once): the
    # graph's output needs no whole copy.
    _, scattered = _mlp_stage(tmp_path, batch=8, features=1024, hidden=4096, remat=True)
    assert str(scattered.specs["y"]) in ("S1R", "RS1")
    gather = (all_reduce(4 * 8 * 1024) + LINK_LATENCY_S) / 2  # an all-gather: half the bytes
    assert scattered.communication_s == pytest.approx(3 * gather)


def test_batch_dominates_pure_data_parallel(tmp_path: Path) -> None:
    _, stage = _mlp_stage(tmp_path, batch=8192, features=16, hidden=32)
    assert str(stage.specs["w1"]) == "RR" and str(stage.specs["w2"]) == "RR"
    assert str(stage.specs["x"]) == "S1R" and str(stage.specs["y"]) == "S1R"
    assert stage.communication_s == 0  # only the once-per-iteration gradient all-reduce
    assert all(s.zero is ZeroStage.NONE for s in stage.strategies.values())
    parameters = 2 * 16 * 32
    update = parameters * FLOAT32_ADAM_UPDATE_BYTES / MEMORY_BANDWIDTH
    assert stage.iteration_s == pytest.approx(2 * all_reduce(4 * 16 * 32) + update)


def test_tight_memory_shards_optimizer_state_zero_style(tmp_path: Path) -> None:
    _, roomy = _mlp_stage(tmp_path, batch=8192, features=16, hidden=32)
    parameters = 2 * 16 * 32
    # A budget 8 bytes per parameter short of plain data parallelism: ZeRO-2 saves 7/8 of the
    # 12 bytes of gradients and Adam state, 10.5 bytes per parameter, and both layers need it.
    budget = roomy.peak_bytes - 8 * parameters
    _, tight = _mlp_stage(tmp_path, batch=8192, features=16, hidden=32, budget=budget)
    assert tight.peak_bytes <= budget
    modes = {tight.strategies[op].zero for op in ("fc1", "fc2")}
    assert modes == {ZeroStage.ZERO2}, modes
    assert str(tight.specs["w1"]) == "RR"  # weights still replicated, batch still split
    assert tight.optimizer_bytes == roomy.optimizer_bytes // 8
    assert tight.gradient_bytes == roomy.gradient_bytes // 8


def test_transformer_mlp_on_2x4_batch_on_one_axis_megatron_splits_on_the_other() -> None:
    """The stock GPT-2 export (issue 13): in each block's MLP the batch goes on one mesh axis and
    the weights split on the other, column then row (Megatron). The attention cannot follow:
    transformers fuses q, k and v in one projection whose output a Split cuts into thirds, so a
    contiguous column split of it is not a split of each head's q, k and v (Megatron lays the
    fused weight out head by head for this); the ILP runs that part data parallel instead."""
    graph = cast_floats(load_onnx(MODELS / "gpt3-1.3b.onnx", batch_size=8), "float16")
    ops = [op for op in graph.ops if "transformer.h.3" in op.scopes]
    cluster = Cluster(
        "p3-host", 1, 8,
        Gpu("V100", 16 * 2**30, (("float16", 125e12),), 900e9),
        Link(150e9, 5e-6), Link(3.125e9 / 8, 20e-6),
    )  # fmt: skip
    mesh = logical_mesh(cluster, (1, 8), (2, 4))
    settings = IntraOpSettings("float16", "adam", True, 1, 1, 14 * 2**30)
    stage = solve_stage(Subgraph(tuple(ops), graph.tensors), mesh, cluster.gpu, settings)
    gemms = [op for op in ops if op.op_type == "Gemm"]
    assert len(gemms) == 4  # c_attn, attn c_proj, c_fc, mlp c_proj
    c_fc, c_proj = gemms[2], gemms[3]
    (x_fc, w_fc), (x_proj, w_proj) = (
        stage.strategies[op.name].input_specs[:2] for op in (c_fc, c_proj)
    )
    assert x_fc is not None and w_fc is not None and x_proj is not None and w_proj is not None
    (batch_axis,) = x_fc.dims[0]
    (weight_axis,) = w_fc.dims[1]  # column split
    assert batch_axis != weight_axis
    assert x_proj.dims == ((batch_axis,), (weight_axis,))  # row split: the hidden arrives split
    assert w_proj.dims == ((weight_axis,), ())


def test_memory_infeasible_says_budget_and_least_memory(tmp_path: Path) -> None:
    graph = load_onnx(save_mlp(tmp_path), batch_size=64)
    with pytest.raises(InfeasibleError) as error:
        plan(
            graph, toy_cluster(memory_bytes=1024), PlanOptions(dtype="float32", search="intra-only")
        )
    message = str(error.value)
    assert "the smallest memory per GPU any logical mesh reaches is" in message
    assert "the budget is 0.00 GiB (90% of 0.00 GiB)" in message


def test_reported_objective_equals_recomputed_cost() -> None:
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=16)
    cluster = toy_cluster()
    mesh = logical_mesh(cluster, (1, 8), (2, 4))
    settings = IntraOpSettings("float32", "adam", True, 2, 1, 2**40, relative_gap=0.0)
    tensors = split_batch(graph.tensors, 2)
    stage = solve_stage(graph.subgraph(tensors=tensors), mesh, cluster.gpu, settings)
    recomputed = 2 * stage.microbatch_s + stage.iteration_s
    assert stage.solution.objective_s == pytest.approx(recomputed, rel=1e-9)
    assert stage.solution.solver_objective_s == pytest.approx(recomputed, rel=1e-6)


SMALL_EXAMPLES = ["gpt-tiny", "gshard-moe-tiny", "wide-resnet-tiny", "mlp-tiny", "bert-base"]


@pytest.mark.parametrize("name", SMALL_EXAMPLES)
@pytest.mark.parametrize("hosts", [1, 8])
def test_every_example_model_plans_on_8_and_64_gpus(name: str, hosts: int) -> None:
    graph = load_onnx(MODELS / f"{name}.onnx", batch_size=128)
    cluster = toy_cluster(hosts=hosts, memory_bytes=80 * 2**30)
    options = PlanOptions(dtype="float32", search="intra-only", ilp_time_limit_s=30)
    result = plan(graph, cluster, options)
    (stage,) = result.stages
    assert len(stage.devices) == 8 * hosts
    assert set(stage.strategies) == {op.name for op in graph.ops}
    assert set(stage.shardings) >= set(graph.inputs)
    assert result.estimate.iteration_time_s > 0
