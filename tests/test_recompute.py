"""Recomputation: which ops rerun (`planner/recompute.py`), what is kept and rebuilt
(`planner/saved_tensors.py`), what it costs (`planner/strategies.py`, `planner/stage_costs.py`),
a fixed configuration's choice (`planner/configuration.py`) and the search's (`planner/pipeshard.py`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from conftest import MODELS, ROOT, stacked_mlp_model
from test_compare import v100_cluster
from test_pipeline_search import _brute_force
from test_pipeshard import GiB, cluster

from cost_models.compute import CostClass
from cost_models.mesh import logical_mesh
from planner.configuration import ConfigTables, ParallelConfig, evaluate_config
from planner.graph import Graph, split_batch
from planner.inter_op import Candidate, dp_pipelines
from planner.intra_op import IntraOpSettings, StageSharding, solve_stage
from planner.layers import cluster_layers
from planner.mesh_shapes import submesh_shapes
from planner.onnx_import import load_onnx
from planner.ops import cast_floats, cost_class_of
from planner.options import PlanOptions
from planner.pipeline_search import search_pipeline
from planner.pipeshard import _add_recomputing
from planner.recompute import attention_cores, recomputed_ops
from planner.saved_tensors import kept_and_rebuilt, saved_for_backward
from planner.search import plan
from planner.stage_costs import RangePlan, StageCostTable
from plans.check import check_plan
from plans.errors import InfeasibleError
from plans.timeline import pipeline_timeline

CORPUS = ROOT / "tests" / "corpus"
# Attention softmaxes per corpus model, from each configuration: two layers of self-attention;
# T5 and Whisper add the decoder's self- and cross-attention (2 + 2 x 2), Swin has four blocks;
# Mixtral's other two softmaxes are its routers' (over experts, into no matmul of activations).
ATTENTIONS = {
    "bert": 2, "distilbert": 2, "gemma": 2, "gpt2": 2, "llama": 2, "mixtral": 2, "opt": 2,
    "swin": 4, "t5": 6, "vit": 2, "whisper": 6, "convnext": 0,
}  # fmt: skip


def _corpus() -> list[tuple[str, dict[str, object]]]:
    entries = json.loads((CORPUS / "corpus.json").read_text())["models"]
    return sorted(entries.items())


@pytest.mark.parametrize("name, entry", _corpus(), ids=[name for name, _ in _corpus()])
def test_every_exported_attention_is_a_core_and_nothing_else(
    name: str, entry: dict[str, object]
) -> None:
    dims = entry["dims"] or None
    graph = load_onnx(CORPUS / "models" / str(entry["file"]), 2, dims)  # type: ignore[arg-type]
    cores = attention_cores(graph.subgraph())
    in_cores = [op for op in graph.ops if op.name in cores]
    softmaxes = [op for op in in_cores if op.op_type == "Softmax"]
    contractions = [op for op in in_cores if cost_class_of(op) is CostClass.CONTRACTION]
    assert len(softmaxes) == ATTENTIONS[str(entry["family"])]
    assert len(contractions) == 2 * len(softmaxes)  # Q K^T and P V, no projection
    parameters = {t.name for t in graph.parameters}
    assert not any(name in parameters for op in contractions for name in op.inputs)


def test_gpt_tiny_rebuilds_its_attention_probabilities_counted_by_hand() -> None:
    # gpt-tiny: 2 layers, 4 heads, sequence 32, float32, batch 8. Each core rebuilds the
    # softmax's output (kept for its own backward), the NaN guard's output (P V's input) and
    # the guard's condition (a bool): (4 + 4 + 1) bytes x b a s^2 per layer.
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=8).subgraph()
    rerun = recomputed_ops(graph, "selective")
    kinds = sorted(op.op_type for op in graph.ops if op.name in rerun)
    assert kinds == sorted(["MatMul", "MatMul", "Add", "Softmax", "IsNaN", "Where"] * 2)
    kept, rebuilt = kept_and_rebuilt(graph, rerun)
    size = sum(graph.tensors[name].size_bytes for name in rebuilt)
    assert size == 2 * (4 + 4 + 1) * 8 * 4 * 32 * 32
    # Q, K and V are kept anyway (their projections' outputs, which the score and context
    # matmuls read): selective keeps exactly the rest.
    assert kept == saved_for_backward(graph) - rebuilt


def test_without_attention_every_op_but_the_contractions_reruns() -> None:
    graph = load_onnx(MODELS / "wide-resnet-tiny.onnx", batch_size=8).subgraph()
    rerun = recomputed_ops(graph, "selective")
    assert rerun == {op.name for op in graph.ops if cost_class_of(op) is not CostClass.CONTRACTION}
    kept, rebuilt = kept_and_rebuilt(graph, rerun)
    # What the convolutions write stays (the batch norms read it); the activations after the
    # norms and ReLUs are rebuilt from it.
    convolutions = [op for op in graph.ops if op.op_type == "Conv"]
    assert all(op.outputs[0] in kept for op in convolutions)
    assert rebuilt and not rebuilt & kept
    size = lambda names: sum(graph.tensors[n].size_bytes for n in names)  # noqa: E731
    assert size(kept) < size(saved_for_backward(graph))


def test_none_reruns_nothing_and_full_everything() -> None:
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=8).subgraph()
    assert recomputed_ops(graph, "none") == frozenset()
    assert recomputed_ops(graph, "full") == {op.name for op in graph.ops}
    with pytest.raises(ValueError, match="recompute"):
        recomputed_ops(graph, "some")


def _one_gpu_layer(graph: Graph, recompute: str) -> StageSharding:
    layers = cluster_layers(graph)
    layer = graph.subgraph().slice(layers[1].start, layers[1].stop)  # the first block
    one = cluster(1, 1, 25e9)
    settings = IntraOpSettings("float32", "adam", True, 1, 1, 2**40, recompute=recompute)
    return solve_stage(layer, logical_mesh(one, (1, 1), (1, 1)), one.gpu, settings)


def test_a_selective_layer_pays_its_cores_forward_again_and_keeps_less() -> None:
    # On one GPU every op has one strategy: the difference is recomputation alone.
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=8)
    plain, selective = (_one_gpu_layer(graph, mode) for mode in ("none", "selective"))
    cores = [
        s for name, s in selective.strategies.items() if name in attention_cores(graph.subgraph())
    ]
    assert len(cores) == 6
    assert selective.forward_s == pytest.approx(plain.forward_s, rel=1e-12)
    assert selective.backward_s == pytest.approx(
        plain.backward_s + sum(s.forward_s for s in cores), rel=1e-12
    )
    assert selective.rebuilt_bytes == (4 + 4 + 1) * 8 * 4 * 32 * 32
    assert selective.activation_bytes == plain.activation_bytes - selective.rebuilt_bytes
    assert plain.rebuilt_bytes == 0


def test_a_selective_configuration_counts_its_cores_flops_once_more() -> None:
    graph = load_onnx(MODELS / "gpt-tiny.onnx", batch_size=64)
    cluster_, options = v100_cluster(1, 4), PlanOptions(dtype="float32")
    tables = ConfigTables(graph, cluster_, options)
    found = {
        mode: evaluate_config(
            graph, cluster_, options, ParallelConfig(2, 2, 1, 8, recompute=mode), tables=tables
        )
        for mode in ("none", "selective", "full")
    }
    (stage,) = found["selective"].plan.stages
    assert stage.recompute == "selective"
    cores = attention_cores(graph.subgraph())
    assert stage.recomputed_ops == tuple(op.name for op in graph.ops if op.name in cores)
    core_flops = sum(op.flops for op in graph.ops if op.name in cores)
    selective = found["selective"]
    assert selective.hardware_flops_per_iteration == pytest.approx(
        selective.model_flops_per_iteration + core_flops, rel=1e-12
    )
    times = [found[m].plan.estimate.iteration_time_s for m in ("none", "selective", "full")]
    assert times == sorted(times) and len(set(times)) == 3
    memory = [found[m].plan.estimate.peak_memory_bytes for m in ("none", "selective", "full")]
    assert memory == sorted(memory, reverse=True) and len(set(memory)) == 3
    assert check_plan(selective.plan) == ()


def test_the_search_recomputes_selectively_where_that_is_enough() -> None:
    # GPT-2's widths, 2 blocks, sequence 1024: the attention probabilities (5 a s^2 b bytes)
    # outweigh the rest of a block's activations (34 s b h). At 8 microbatches on 4 GPUs of
    # 640 MiB nothing fits without recomputation, selective fits and full is slower.
    graph = load_onnx(CORPUS / "models" / "gpt2-dynamo.onnx", 32, {"seq": 1024})
    small = cluster(1, 4, 25e9, memory=5 * GiB // 8)
    found = {}
    for mode in ("auto", "none", "selective", "full"):
        try:
            options = PlanOptions(microbatches=8, recompute=mode, dtype="float16")
            found[mode] = plan(graph, small, options)
        except InfeasibleError:
            found[mode] = None
    auto, full = found["auto"], found["full"]
    assert found["none"] is None and auto is not None and full is not None
    assert {s.recompute for s in auto.stages} == {"selective"}
    assert auto.estimate.iteration_time_s < full.estimate.iteration_time_s
    assert auto.estimate.iteration_time_s == pytest.approx(pipeline_timeline(auto).makespan_s)
    cores = attention_cores(graph.subgraph())
    for stage in auto.stages:
        assert stage.recomputed_ops == tuple(op for op in stage.ops if op in cores)
        assert stage.memory.peak_bytes <= 0.9 * small.gpu.memory_bytes
    assert check_plan(auto) == ()


@pytest.mark.parametrize(
    "model, batch, memory_mib, chosen",
    [("mlp", 4096, 160, "full"), ("mlp", 4096, 256, "none"), ("gpt-tiny", 2048, 64, "selective")],
)
def test_the_recompute_choice_per_stage_equals_enumeration(
    tmp_path: Path, model: str, batch: int, memory_mib: int, chosen: str
) -> None:
    # 2 x 2 GPUs, 4 microbatches in 1F1B: every cut, submesh, memory level and recompute mode
    # of every stage (each mode's cost table whole) against the candidates the search keeps (a
    # recomputing one only where no earlier mode's dominates it) and its makespan search.
    path = MODELS / "gpt-tiny.onnx"
    if model == "mlp":  # 4 stacked layers, their ReLUs the only ops selective recomputes
        path = tmp_path / "stacked.onnx"
        onnx.save(stacked_mlp_model(4, 1024), str(path))
    graph = cast_floats(load_onnx(path, batch_size=batch), "float16")
    small = cluster(2, 2, 5e9, memory=memory_mib * 2**20)
    options = PlanOptions(microbatches=4)
    layers = cluster_layers(graph)
    split = graph.subgraph(tensors=split_batch(graph.tensors, 4))
    settings = options.intra_op_settings(small, 4)
    submeshes = submesh_shapes(small, "power-of-two")
    every: list[Candidate] = []
    every_plan: list[RangePlan] = []
    for mode in ("none", "selective", "full"):
        table = StageCostTable(split, layers, small, replace(settings, recompute=mode))
        table.solve_layers(submeshes)
        found, found_plans = table.candidates(submeshes, 4, "1f1b")
        every += [replace(c, key=c.key + len(every_plan)) for c in found]
        every_plan += found_plans
    expected = _brute_force(every, every_plan, len(layers), 2, 2, 4, "1f1b")

    table = StageCostTable(split, layers, small, settings)
    table.solve_layers(submeshes)
    kept, plans = table.candidates(submeshes, 4, "1f1b")
    _add_recomputing(table, kept, plans, submeshes, {}, options, lambda _: None, 1)  # type: ignore[arg-type, return-value]
    starting = [s.stages for s in dp_pipelines(kept, len(layers), 4, 4, 2)]
    result = search_pipeline(kept, plans, starting, len(layers), 2, 2, 4, "1f1b")
    assert result is not None and result.proven
    assert result.makespan_s == pytest.approx(expected, rel=1e-12)
    modes = {plans[c.key].recompute for c in result.stages}
    assert chosen in modes and (chosen != "none" or modes == {"none"})
