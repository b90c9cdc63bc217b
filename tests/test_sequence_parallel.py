"""Sequence and context parallelism: what the ILP recovers of Megatron-LM's sequence parallelism
(reduce-scattered partial sums, `planner/strategies.py: _scattered`) and of context parallelism
(queries split on the sequence, keys and values gathered)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT
from test_pipeshard import GiB, cluster

from cli import exit_codes
from cli.main import main
from cost_models.mesh import logical_mesh
from planner.configuration import ConfigTables, ParallelConfig, evaluate_config
from planner.graph import Graph, Op, Subgraph
from planner.intra_op import IntraOpSettings, StageSharding, prepare_stage
from planner.layers import cluster_layers
from planner.notation import Notation
from planner.onnx_import import load_onnx
from planner.ops import cast_floats, notation_of
from planner.options import PlanOptions
from planner.strategies import CostContext, StrategyOptions, op_strategies
from plans.specs import ShardingSpec

GPT2 = ROOT / "tests" / "corpus" / "models" / "gpt2-dynamo.onnx"


def _gpt2_block(seq: int) -> tuple[Graph, Subgraph]:
    """GPT-2's widths (hidden 768, 12 heads), one sequence of `seq` tokens, float16: its first
    transformer block."""
    graph = cast_floats(load_onnx(GPT2, 1, {"seq": seq}), "float16")
    layers = cluster_layers(graph)
    return graph, graph.subgraph().slice(layers[1].start, layers[1].stop)


def _gemms(block: Subgraph) -> list[Op]:
    return [op for op in block.ops if op.op_type == "Gemm"]


def test_a_row_parallel_matmul_may_scatter_its_partial_sums_for_one_latency_more() -> None:
    # Y = X W with the contracted dim split 4 ways: the plain strategy all-reduces Y (2 x 3/4 V
    # beta + alpha); the scattered one reduce-scatters it onto the token dim (3/4 V beta +
    # alpha) and all-gathers the gradient back in the backward (3/4 V beta + alpha): one more
    # alpha in all, and Y a quarter the size.
    _, block = _gpt2_block(256)
    out_projection = _gemms(block)[1]  # attention's output projection, [256, 768] x [768, 768]
    four = cluster(1, 4, 25e9)
    mesh = logical_mesh(four, (1, 4), (1, 4))
    context = CostContext(mesh, four.gpu, "float16", "adam", training=True)
    notation: Notation = notation_of(out_projection, block.tensors)
    strategies = op_strategies(out_projection, notation, block.tensors, context, frozenset())
    contracted = ShardingSpec(((), (1,)))  # X's features split: the row-parallel input
    row = [s for s in strategies if s.input_specs[0] == contracted and s.zero.value == "none"]
    (plain,) = [s for s in row if s.output_specs[0] == ShardingSpec(((), ()))]
    (scattered,) = [s for s in row if s.output_specs[0] == ShardingSpec(((1,), ()))]
    assert scattered.communication_s - plain.communication_s == pytest.approx(
        mesh.axes[1].alpha_s, rel=1e-9
    )
    assert scattered.forward_s == plain.forward_s and scattered.backward_s == plain.backward_s
    without = op_strategies(
        out_projection, notation, block.tensors,
        CostContext(mesh, four.gpu, "float16", "adam", True,
                    StrategyOptions(scatter_partial_sums=False)),
        frozenset(),
    )  # fmt: skip
    assert len(without) < len(strategies)
    assert all(s.output_specs[0] != scattered.output_specs[0] or s.input_specs[0] != contracted
               for s in without)  # fmt: skip


def _least_memory(block: Subgraph, scatter: bool) -> StageSharding:
    four = cluster(1, 4, 25e9)
    settings = IntraOpSettings(
        "float16", "adam", True, 16, 16, 2**40,
        strategy_options=StrategyOptions(scatter_partial_sums=scatter),
    )  # fmt: skip
    prepared = prepare_stage(block, logical_mesh(four, (1, 4), (1, 4)), four.gpu, settings)
    return prepared.solve_least_memory()


def test_a_transformer_block_at_least_memory_scatters_its_row_parallel_partial_sums() -> None:
    # One sequence of 1024 tokens on 4 GPUs, 16 microbatches in flight: the least memory needs
    # the weights split (Megatron's tensor parallelism). With scattering allowed, every
    # row-parallel matmul (contracted dim split) reduce-scatters its partial sums onto a dim of
    # its output, and the residual and LayerNorm regions after it run split (Megatron-LM's
    # sequence parallelism scatters onto the tokens; onto the features, the LayerNorm pays an
    # all-reduce of two statistics per row instead, which the model prices the same but for
    # that); without it, they all-reduce and the LayerNorm input arrives whole.
    _, block = _gpt2_block(1024)
    sp, tp = _least_memory(block, True), _least_memory(block, False)
    tokens, features = ShardingSpec(((1,), ())), ShardingSpec(((), (1,)))
    replicated = ShardingSpec(((), ()))
    for found, scattered in ((sp, True), (tp, False)):
        rows = [op for op in _gemms(block) if found.strategies[op.name].input_specs[0] == features]
        assert rows
        for op in rows:
            output = found.strategies[op.name].output_specs[0]
            assert output in ((tokens, features) if scattered else (replicated,))
    assert sp.peak_bytes <= tp.peak_bytes * (1 + 1e-9)
    assert sp.microbatch_s <= tp.microbatch_s * (1 + 1e-6)


def test_a_long_sequence_splits_attention_on_the_sequence_not_the_heads() -> None:
    # Context parallelism, as the ILP expresses it: at 8192 tokens of one sequence on 4 GPUs the
    # scores (12 heads x 8192^2) dwarf the weights. The fastest plan keeps the tokens split
    # through the whole block (each GPU its quarter of the sequence, the weights whole) and
    # through attention splits the scores on a sequence dim: the keys (the queries gathered
    # whole, the softmax's statistics all-reduced, the context summed over the key pieces) or
    # the queries (the keys and values gathered); never the heads.
    graph, block = _gpt2_block(8192)
    four = cluster(1, 4, 25e9)
    settings = IntraOpSettings("float16", "adam", True, 1, 1, 2**40)
    found = prepare_stage(block, logical_mesh(four, (1, 4), (1, 4)), four.gpu, settings).solve()
    scores = next(op for op in block.ops if op.op_type == "MatMul")
    assert graph.tensors[scores.outputs[0]].shape == (1, 12, 8192, 8192)
    queries_split = ShardingSpec(((), (), (1,), ()))
    keys_split = ShardingSpec(((), (), (), (1,)))
    assert found.strategies[scores.name].output_specs[0] in (queries_split, keys_split)
    softmax = next(op for op in block.ops if op.op_type == "Softmax")
    assert found.strategies[softmax.name].output_specs[0] in (queries_split, keys_split)
    tokens = ShardingSpec(((1,), ()))
    assert all(found.strategies[op.name].output_specs[0] == tokens for op in _gemms(block))


def test_evaluate_prices_megatron_with_and_without_sequence_parallelism(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GPT-2's widths, 8 sequences of 1024 tokens, tp = 4 on GPUs of 1 GiB: the weights must be
    # split, the ILP takes Megatron's column-then-row matmuls. With sequence parallelism the
    # row-parallel ones (attention's output projection, the MLP's second) reduce-scatter their
    # partial sums onto the tokens, as Megatron-LM's does, and the plan is faster and smaller.
    graph = load_onnx(GPT2, 8, {"seq": 1024})
    four = cluster(1, 4, 25e9, memory=GiB)
    options = PlanOptions(dtype="float16")
    tables = ConfigTables(graph, four, options)
    found = {
        sp: evaluate_config(
            graph, four, options, ParallelConfig(1, 4, 1, 1, sequence_parallel=sp), tables=tables
        )
        for sp in (False, True)
    }
    (plain,), (sequence,) = found[False].plan.stages, found[True].plan.stages
    row, scattered_row = "RR = RS1 x S1R", "S1R = RS1 x S1R"  # [tokens, features] x [in, out]
    gemms = [op.name for op in graph.ops if op.op_type == "Gemm"]
    assert any(plain.strategies[name] == row for name in gemms)
    assert not any(sequence.strategies[name] == row for name in gemms)
    assert sum(sequence.strategies[name] == scattered_row for name in gemms) >= 2
    estimates = found[True].plan.estimate, found[False].plan.estimate
    assert estimates[0].iteration_time_s < estimates[1].iteration_time_s
    assert estimates[0].peak_memory_bytes <= estimates[1].peak_memory_bytes
    assert found[True].plan.search.parameters["sequence_parallel"] is True
    # The flag, from the command line.
    p4d = ROOT / "examples" / "clusters" / "aws-p4d.24xlarge.yaml"
    args = [
        "evaluate", str(GPT2), str(p4d), "--hosts", "1", "--batch-size", "8", "--dim",
        "seq=1024", "--dp", "2", "--tp", "4", "--pp", "1", "--microbatch", "1",
        "--sequence-parallel", "--json", "--jobs", "1",
    ]  # fmt: skip
    assert main(args) == exit_codes.OK
    document = json.loads(capsys.readouterr().out)
    assert document["configuration"]["sequence_parallel"] is True
