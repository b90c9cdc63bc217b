"""The import corpus: stock transformers models exported by both torch exporters plan end to end.

`tests/corpus/make_corpus.py` made the files (graph-only, committed, so this needs no torch);
`tests/corpus/corpus.json` lists them with the dimensions to bind. Each model is planned for
training on one cluster and for inference on another, then checked with `check --model`, as a
user would: `alpa-plan MODEL CLUSTER --batch-size N --dim seq=S`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import CLUSTERS, ROOT

from cli import exit_codes
from cli.main import main
from planner.graph import TensorKind
from planner.onnx_import import load_onnx

CORPUS = ROOT / "tests" / "corpus"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "corpus.json").read_text())
MODELS: dict[str, dict[str, Any]] = MANIFEST["models"]
BATCH = 8
# Two shipped clusters, one host each: training on V100s, inference on H100s.
RUNS = {
    "train": (CLUSTERS / "aws-p3.16xlarge.yaml", ["--mode", "train"]),
    "infer": (CLUSTERS / "dgx-h100.yaml", ["--mode", "infer"]),
}


# Mixtral exported by transformers' `batched_mm` experts route (the one that exports) gathers
# every routed token's expert weights with a GatherND: at batch 8 x seq 64 x top-2 the gathered
# [1024, 28672, 4096] tensor alone is 224 GiB in float16, kept for the backward. No plan of that
# graph fits a host; the planner must say so (exit 3, nothing written), and inference, which
# keeps nothing, plans.
NO_TRAINING_PLAN = {"mixtral-dynamo"}


def _dim_flags(entry: dict[str, Any]) -> list[str]:
    return [flag for name, value in entry["dims"].items() for flag in ("--dim", f"{name}={value}")]


@pytest.mark.parametrize("mode", sorted(RUNS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_corpus_model_plans_and_the_plan_checks_against_the_model(
    name: str, mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = MODELS[name]
    model = CORPUS / "models" / entry["file"]
    cluster, mode_flags = RUNS[mode]
    plan = tmp_path / "plan.json"
    args = [str(model), str(cluster), "--hosts", "1", "--batch-size", str(BATCH)]
    args += [*_dim_flags(entry), *mode_flags, "--microbatches", "2", "-o", str(plan)]
    if mode == "train" and name in NO_TRAINING_PLAN:
        assert main(args) == exit_codes.INFEASIBLE
        assert "does not fit" in capsys.readouterr().err and not plan.exists()
        return
    assert main(args) == exit_codes.OK, capsys.readouterr().err
    document = json.loads(plan.read_text())
    assert document["settings"]["mode"] == mode
    assert document["settings"]["batch_size"] == BATCH
    capsys.readouterr()
    check = ["check", str(plan), "--model", str(model), "--cluster", str(cluster)]
    assert main([*check, *_dim_flags(entry)]) == exit_codes.OK, capsys.readouterr().out
    assert capsys.readouterr().out.splitlines() == [f"{plan}: read alpa-plan/2", f"{plan}: ok"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_corpus_model_binds_batch_and_sequence_everywhere(name: str) -> None:
    """Every data input follows the bound batch and dims, and tensors scale with the batch."""
    entry = MODELS[name]
    graph = load_onnx(CORPUS / "models" / entry["file"], batch_size=BATCH, dims=entry["dims"])
    for input_name, axes in entry["inputs"].items():
        tensor = graph.tensors[input_name]
        for position, symbol in axes.items():
            expected = BATCH if symbol == "batch" else entry["dims"][symbol]
            assert tensor.shape[int(position)] == expected
        assert tensor.batch_dim == 0
    # Every op reads tensors with static shapes (a Graph holds nothing else), and the
    # activations of the data path follow the batch.
    outputs = [graph.tensors[name] for name in graph.outputs]
    assert all(tensor.batch_dim == 0 for tensor in outputs)


def test_every_family_of_the_issue_is_in_the_corpus_or_its_failure_is_recorded() -> None:
    families = {"gpt2", "llama", "gemma", "bert", "distilbert", "vit", "t5", "whisper", "mixtral"}
    exported = {entry["family"] for entry in MODELS.values()}
    assert families <= exported
    assert exported & {"swin", "convnext"}
    for key, failure in MANIFEST["failures"].items():
        assert key not in MODELS and failure


def test_corpus_parameters_are_weights_not_constants() -> None:
    entry = MODELS["llama-dynamo"]
    graph = load_onnx(CORPUS / "models" / entry["file"], batch_size=2, dims={"seq": 16})
    # Llama-3.2-1B widths, 2 layers; built without weight tying, so embedding and LM head
    # are two matrices: per layer q, o (h x heads*head_dim), k, v (h x kv_heads*head_dim), the
    # SwiGLU's three (h x ffn) and two RMSNorm scales, then the final norm.
    h, ffn, heads, kv_heads, head_dim, vocab, layers = 2048, 8192, 32, 8, 64, 128256, 2
    per_layer = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2 + 3 * h * ffn + 2 * h
    assert entry["parameters"] == 2 * vocab * h + layers * per_layer + h
    # The ONNX file holds the same weights plus RoPE's inverse frequencies (head_dim / 2), a
    # float buffer the planner cannot tell from a weight.
    assert graph.parameter_count == entry["parameters"] + head_dim // 2
    assert {t.kind for t in graph.parameters} == {TensorKind.PARAMETER}
