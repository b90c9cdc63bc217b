"""`compare` and the hand-written baselines: valid plans, same cost model, Megatron's splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MODELS

from cli import exit_codes
from cli.main import main
from cost_models.cluster import Cluster, Gpu, Link
from cost_models.mesh import logical_mesh
from planner.baselines import (
    BASELINES,
    MEGATRON_STRATEGY,
    Baseline,
    all_baselines,
    megatron_configurations,
    megatron_plan,
)
from planner.configuration import even_split
from planner.graph import Graph, Subgraph
from planner.intra_op import IntraOpSettings, solve_stage
from planner.onnx_import import load_onnx
from planner.ops import cast_floats
from planner.options import PlanOptions
from planner.search import plan
from planner.strategies import StrategyOptions
from plans.check import ModelFacts, check_plan
from plans.plan import Plan

GPT_TINY = MODELS / "gpt-tiny.onnx"
GPT_BATCH = 64
MICROBATCHES = 4  # fixed, to keep the searches small


def v100_cluster(hosts: int = 2, gpus: int = 4) -> Cluster:
    """`hosts` x `gpus` V100s with the p3.16xlarge links (examples/clusters)."""
    return Cluster(
        name="p3-small",
        hosts=hosts,
        gpus_per_host=gpus,
        gpu=Gpu("V100-SXM2-16GB", 16 * 2**30, (("float16", 125e12), ("float32", 15.7e12)), 900e9),
        intra_host=Link(150e9, 5e-6),
        inter_host=Link(3.125e9 / 8, 20e-6),
    )


@pytest.fixture(scope="module")
def gpt() -> Graph:
    return load_onnx(GPT_TINY, batch_size=GPT_BATCH)


@pytest.fixture(scope="module")
def compared(gpt: Graph) -> tuple[Plan, tuple[Baseline, ...]]:
    cluster = v100_cluster()
    options = PlanOptions(microbatches=MICROBATCHES)
    return plan(gpt, cluster, options), all_baselines(gpt, cluster, options)


def _facts(graph: Graph, plan: Plan) -> ModelFacts:
    from planner.graph import split_batch

    shapes = split_batch(graph.tensors, plan.settings.microbatches)
    return ModelFacts(
        graph.fingerprint,
        tuple(op.name for op in graph.ops),
        {n: t.shape for n, t in shapes.items()},
    )


def test_every_baseline_builds_a_valid_plan(
    gpt: Graph, compared: tuple[Plan, tuple[Baseline, ...]]
) -> None:
    _, baselines = compared
    assert [b.name for b in baselines] == list(BASELINES)
    for baseline in baselines:
        assert baseline.plan is not None and baseline.fits, baseline
        assert check_plan(baseline.plan, _facts(gpt, baseline.plan)) == (), baseline.name
        assert baseline.plan.settings.microbatches == MICROBATCHES


def test_auto_is_never_slower_than_the_best_baseline(
    compared: tuple[Plan, tuple[Baseline, ...]],
) -> None:
    auto, baselines = compared
    best = min(b.iteration_time_s for b in baselines if b.fits)
    # The chosen stages are solved whole (planner/polish.py: polish_stages), so the search
    # is never slower than the hand-written plans it could have found.
    assert auto.estimate.iteration_time_s <= best
    # and clearly faster than plain data parallelism over the slow inter-host link
    dp = next(b for b in baselines if b.name == "data-parallel")
    assert auto.estimate.iteration_time_s < dp.iteration_time_s


def test_baselines_are_what_they_say(compared: tuple[Plan, tuple[Baseline, ...]]) -> None:
    _, baselines = compared
    by_name = {b.name: b for b in baselines}

    def modes(name: str) -> set[str]:
        plan = by_name[name].plan
        assert plan is not None
        return {str(mode) for stage in plan.stages for mode in stage.zero.values()}

    assert modes("data-parallel") == {"none"}
    assert "zero2" in modes("zero2") and "zero3" not in modes("zero2")
    assert "zero3" in modes("zero3") and "zero2" not in modes("zero3")
    megatron = by_name["megatron"]
    assert {"dp", "tp", "pp", "microbatches"} <= set(megatron.parameters)
    assert megatron.plan is not None and len(megatron.plan.stages) == megatron.parameters["pp"]
    deepspeed = by_name["deepspeed"].plan
    assert deepspeed is not None and len(deepspeed.stages) == 1


@pytest.mark.parametrize(
    ("zero", "variants"),
    [
        ("auto", {"plain", "zero1", "zero2", "zero3"}),
        ("on", {"zero1", "zero2", "zero3"}),
        ("zero1", {"zero1"}),
        ("off", {"plain"}),
        ("zero2", {"zero2"}),
        ("zero3", {"zero3"}),
    ],
)
def test_zero_modes_offer_their_variants(gpt: Graph, zero: str, variants: set[str]) -> None:
    from planner.intra_op import enumerate_strategies

    cluster = v100_cluster()
    mesh = logical_mesh(cluster, (2, 4), (1, 8))
    settings = IntraOpSettings(
        "float16", "adam", True, 1, 1, 2**40,
        strategy_options=StrategyOptions(zero=zero, force_data_parallel=True),
    )  # fmt: skip
    typed = cast_floats(gpt, "float16")
    found = enumerate_strategies(typed.subgraph(), mesh, cluster.gpu, settings)
    gemm = next(op for op in typed.ops if op.op_type == "Gemm")
    kinds = {str(s.zero) for s in found[gemm.name]}
    assert {"plain" if k == "none" else k for k in kinds} == variants


def test_megatron_configurations_keep_tp_inside_a_host() -> None:
    configs = megatron_configurations(v100_cluster(2, 4), num_layers=4)
    assert all(tp <= 4 and dp * tp * pp == 8 for dp, tp, pp in configs)
    assert (1, 4, 2) in configs and (2, 4, 1) in configs and (8, 1, 1) in configs
    assert even_split(5, 2) == ((0, 2), (3, 4))


def test_megatron_splits_the_mlp_column_then_row(tmp_path: Path) -> None:
    import onnx
    from conftest import stacked_mlp_model

    path = tmp_path / "mlp.onnx"
    onnx.save(stacked_mlp_model(layers=2, hidden=1024), str(path))
    graph = load_onnx(path, batch_size=16)
    plan = megatron_plan(
        graph, v100_cluster(1, 8), PlanOptions(dtype="float32"), dp=2, tp=4, pp=1, microbatches=1
    )
    (stage,) = plan.stages
    assert stage.logical_mesh == (2, 4)
    for i in range(2):
        assert stage.shardings[f"layers.{i}.up"] == "RS1"  # column split
        assert stage.shardings[f"layers.{i}.down"] == "S1R"  # row split
        assert stage.shardings[f"r{i}"] == "S0S1"  # hidden stays split: batch x columns


def test_megatron_splits_a_transformer_layer_like_megatron() -> None:
    """On one GPT-3 1.3B block, (dp, tp) = (2, 4): QKV and the MLP's first projection split by
    columns, the attention output and the MLP's second projection by rows."""
    graph = cast_floats(load_onnx(MODELS / "gpt3-1.3b.onnx", batch_size=8), "float16")
    ops = [op for op in graph.ops if "transformer.h.3" in op.scopes]
    cluster = v100_cluster(1, 8)
    mesh = logical_mesh(cluster, (1, 8), (2, 4))
    settings = IntraOpSettings(
        "float16", "adam", True, 1, 1, 14 * 2**30, strategy_options=MEGATRON_STRATEGY
    )
    stage = solve_stage(Subgraph(tuple(ops), graph.tensors), mesh, cluster.gpu, settings)
    gemms = [op for op in ops if op.op_type == "Gemm"]
    weights = [str(stage.strategies[op.name].input_specs[1]) for op in gemms]
    assert weights == ["RS1", "S1R", "RS1", "S1R"]  # c_attn, attn c_proj, mlp c_fc, mlp c_proj
    for op in gemms:
        x_spec = stage.strategies[op.name].input_specs[0]
        assert x_spec is not None and x_spec.dims[0] == (0,)  # the batch rides axis 0


def _cli(tmp_path: Path, *extra: str) -> list[str]:
    cluster = tmp_path / "cluster.yaml"
    if not cluster.exists():
        cluster.write_text(
            (Path(__file__).parent / "data/cases/gpt-tiny-2x4/cluster.yaml").read_text()
        )
    return [
        "compare", str(GPT_TINY), str(cluster), "--batch-size", str(GPT_BATCH),
        "--microbatches", str(MICROBATCHES), "--jobs", "1", *extra,
    ]  # fmt: skip


def test_compare_json_has_the_documented_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only = ("--baseline", "data-parallel", "--baseline", "megatron")
    assert main(_cli(tmp_path, "--json", *only)) == exit_codes.OK
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"auto", "baselines"}
    assert set(document["baselines"]) == {"data-parallel", "megatron"}
    keys = {
        "iteration_time_s", "samples_per_s", "tflops_per_gpu", "peak_memory_bytes", "fits",
        "parameters",
    }  # fmt: skip
    for entry in (document["auto"], *document["baselines"].values()):
        assert keys <= set(entry)
    assert {"dp", "tp", "pp", "microbatches"} <= set(
        document["baselines"]["megatron"]["parameters"]
    )


def test_compare_table_and_written_plans_pass_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plans"
    only = ("--baseline", "zero3", "--baseline", "deepspeed")
    assert main(_cli(tmp_path, "--write-plans", str(out), *only)) == exit_codes.OK
    table = capsys.readouterr().out
    assert "auto" in table and "zero3" in table and "deepspeed" in table
    written = sorted(p.name for p in out.iterdir())
    assert written == ["auto.plan.json", "deepspeed.plan.json", "zero3.plan.json"]
    for name in written:
        assert main(["check", str(out / name), "--model", str(GPT_TINY)]) == exit_codes.OK


def test_zero1_shards_optimizer_state_and_syncs_once_zero2_reduce_scatters_every_microbatch(
    gpt: Graph,
) -> None:
    """On a data-parallel Gemm over 8 GPUs: ZeRO-1 keeps whole gradients and an eighth of the
    optimizer state, and syncs once per iteration (reduce-scatter + all-gather); ZeRO-2 keeps an
    eighth of both and moves the same reduce-scatter into every microbatch."""
    from planner.intra_op import enumerate_strategies

    cluster = v100_cluster()
    mesh = logical_mesh(cluster, (2, 4), (1, 8))
    settings = IntraOpSettings(
        "float16", "adam", True, 4, 1, 2**40,
        strategy_options=StrategyOptions(zero="auto", force_data_parallel=True),
    )  # fmt: skip
    typed = cast_floats(gpt, "float16")
    found = enumerate_strategies(typed.subgraph(), mesh, cluster.gpu, settings)
    gemm = next(op for op in typed.ops if op.op_type == "Gemm")
    by_zero = {str(s.zero): s for s in found[gemm.name]}
    plain, one, two = by_zero["none"], by_zero["zero1"], by_zero["zero2"]
    assert one.gradient_bytes == plain.gradient_bytes
    assert one.optimizer_bytes == pytest.approx(plain.optimizer_bytes / 8, abs=1)
    assert two.gradient_bytes == pytest.approx(plain.gradient_bytes / 8, abs=1)
    assert one.communication_s == plain.communication_s
    reduce_scatter_s = two.communication_s - plain.communication_s
    assert reduce_scatter_s > 0
    assert one.gradient_sync_s == pytest.approx(two.gradient_sync_s + reduce_scatter_s, rel=1e-12)
