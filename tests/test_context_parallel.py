"""Context parallelism: the sequence dims the planner finds (`planner/sequence_dims.py`) and
`evaluate --cp`, which forces them onto a mesh axis (`planner/configuration.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from conftest import stacked_mlp_model
from test_compare import v100_cluster

from cli import exit_codes
from cli.main import main
from planner.configuration import ConfigTables, ParallelConfig, config_mesh, evaluate_config
from planner.graph import Graph, TensorKind
from planner.onnx_import import load_onnx
from planner.options import PlanOptions
from planner.sequence_dims import _reshaped, with_sequence_dims
from plans.errors import InputError

CORPUS = Path(__file__).parent / "corpus" / "models"
EXPORTERS = ("gpt2-dynamo.onnx", "gpt2-torchscript.onnx")


def _gpt2(name: str, sequence: int = 64) -> Graph:
    return load_onnx(CORPUS / name, batch_size=4, dims={"seq": sequence})


def test_reshape_keeps_the_sequence_by_its_stride_in_elements() -> None:
    """By hand: [b, s, h] = [4, 32, 64] merged to [b s, h] = [128, 64] has the sequence inside
    dim 0 at stride 1 (the batch outside it); a projection to [128, 192] keeps that; splitting
    back to [4, 32, 192] finds it on dim 1 again, not on the batch; a sequence cut in pieces
    ([4, 1024, 8] -> [4, 32, 32, 8]) goes with its outer piece."""
    merged = _reshaped((4, 32, 64), (1, 1, 32), (128, 64))
    assert merged == (0, 1, 32)
    assert _reshaped((128, 192), merged, (4, 32, 192)) == (1, 1, 32)
    assert _reshaped((4, 32, 64), (1, 1, 32), (4, 32, 4, 16)) == (1, 1, 32)
    assert _reshaped((4, 1024, 8), (1, 1, 1024), (4, 32, 32, 8)) == (1, 1, 32)
    assert _reshaped((4, 32, 64), (1, 1, 32), (4, 2048))[0] == 1  # merged with the features


@pytest.mark.parametrize("model", EXPORTERS)
def test_every_attention_core_is_found_on_the_queries_sequence(model: str) -> None:
    """In both exporters' GPT-2 graphs: the token embedding keeps the sequence on dim 1, every
    Softmax [b, heads, s_q, s_k] has it on the queries (dim 2), and no weight has one."""
    graph = with_sequence_dims(_gpt2(model))
    softmaxes = [op for op in graph.ops if op.op_type == "Softmax"]
    assert len(softmaxes) == 2  # the corpus GPT-2 has two blocks
    for op in softmaxes:
        tensor = graph.tensors[op.outputs[0]]
        assert tensor.shape[2:] == (64, 64) and tensor.sequence_dim == 2
    embedding = next(op for op in graph.ops if op.op_type == "Gather")
    assert graph.tensors[embedding.outputs[0]].sequence_dim == 1
    weights = [t for t in graph.tensors.values() if t.kind is TensorKind.PARAMETER]
    assert weights and all(t.sequence_dim is None for t in weights)


def test_config_mesh_puts_the_sequence_on_the_free_axis() -> None:
    assert config_mesh(ParallelConfig(4, 2, 1, 1)).shape == (4, 2)
    dp_cp = config_mesh(ParallelConfig(2, 1, 1, 1, cp=4))
    assert (dp_cp.shape, dp_cp.batch_axis, dp_cp.sequence_axis) == ((2, 4), 0, 1)
    cp_tp = config_mesh(ParallelConfig(1, 2, 1, 1, cp=4))
    assert (cp_tp.shape, cp_tp.batch_axis, cp_tp.sequence_axis) == ((4, 2), None, 0)


@pytest.mark.parametrize(
    ("dp", "cp", "wanted"),
    [(1, 4, "RRS1R"), (2, 2, "S0RS1R")],
)
def test_evaluate_cp_splits_every_attention_core_on_the_queries(
    dp: int, cp: int, wanted: str
) -> None:
    """On 1 x 4 GPUs, cp = 4 (mesh (1, 4)) splits every Softmax on its queries over axis 1 and
    nothing else; dp = 2 x cp = 2 puts the batch on axis 0 and the queries on axis 1."""
    graph = _gpt2("gpt2-dynamo.onnx")
    cluster, options = v100_cluster(1, 4), PlanOptions()
    tables = ConfigTables(graph, cluster, options)
    found = evaluate_config(graph, cluster, options, ParallelConfig(dp, 1, 1, 4 // dp, cp=cp),
                            tables=tables)  # fmt: skip
    stage = found.plan.stages[0]
    softmaxes = [op.outputs[0] for op in tables.typed.ops if op.op_type == "Softmax"]
    assert [stage.shardings[name] for name in softmaxes] == [wanted] * len(softmaxes)
    assert found.plan.search.parameters["cp"] == cp


def test_cp_with_both_dp_and_tp_is_refused_naming_the_flag(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cluster = Path(__file__).parent.parent / "examples" / "clusters" / "aws-p3.16xlarge.yaml"
    args = [
        "evaluate", str(CORPUS / "gpt2-dynamo.onnx"), str(cluster), "--hosts", "1",
        "--batch-size", "8", "--dim", "seq=64", "--microbatch", "1", "--pp", "1",
    ]  # fmt: skip
    assert main([*args, "--dp", "2", "--tp", "2", "--cp", "2"]) == exit_codes.BAD_INPUT
    error = capsys.readouterr().err
    assert "--cp" in error and "dp 2, tp 2, cp 2" in error
    assert main([*args, "--dp", "2", "--tp", "1", "--cp", "4", "--json"]) == exit_codes.OK
    document = json.loads(capsys.readouterr().out)
    assert document["configuration"]["cp"] == 4


def test_cp_needs_a_token_sequence(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(stacked_mlp_model(layers=2, hidden=64), str(path))
    graph = load_onnx(path, batch_size=8)
    cluster, options = v100_cluster(1, 4), PlanOptions()
    with pytest.raises(InputError) as raised:
        evaluate_config(graph, cluster, options, ParallelConfig(2, 1, 1, 4, cp=2))
    assert raised.value.file == "--cp"
