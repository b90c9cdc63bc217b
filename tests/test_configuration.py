"""Fixed Megatron-style configurations (`planner/configuration.py`) and `alpa-plan evaluate`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import onnx
import pytest
from conftest import MODELS, stacked_mlp_model
from test_compare import _facts, v100_cluster

from cli import exit_codes
from cli.main import main
from planner.baselines import megatron
from planner.configuration import (
    ConfigTables,
    ParallelConfig,
    config_problem,
    evaluate_config,
    even_split,
)
from planner.graph import Graph
from planner.onnx_import import load_onnx
from planner.options import PlanOptions
from plans.check import check_plan
from plans.errors import InputError
from plans.timeline import pipeline_timeline

GPT_TINY = MODELS / "gpt-tiny.onnx"


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    onnx.save(stacked_mlp_model(layers=4, hidden=1024), str(path))
    return load_onnx(path, batch_size=64)


@pytest.fixture(scope="module")
def gpt() -> Graph:
    return load_onnx(GPT_TINY, batch_size=64)


@pytest.fixture(scope="module")
def gpt24() -> Graph:
    """GPT-3 1.3B's graph: 24 blocks, enough for interleaved chunks."""
    return load_onnx(MODELS / "gpt3-1.3b.onnx", batch_size=64)


def test_full_recompute_reruns_each_forward_and_keeps_only_layer_inputs(mlp: Graph) -> None:
    """Pure data parallelism (tp = 1, the batch forced on axis 0) leaves the ILP no choice, so
    recomputation changes exactly what it should: one more forward in every backward (no
    collectives inside a data-parallel op), activations down to each layer's input plus one
    layer's, and a third more hardware FLOPs (4 forward-equivalents for 3)."""
    cluster, options = v100_cluster(1, 4), PlanOptions(dtype="float32")
    tables = ConfigTables(mlp, cluster, options)
    plain, full = (
        evaluate_config(
            mlp, cluster, options, ParallelConfig(4, 1, 1, 4, recompute=r), tables=tables
        )
        for r in ("none", "full")
    )
    (a,), (b,) = plain.plan.stages, full.plan.stages
    assert (a.recompute, b.recompute) == ("none", "full")
    assert b.time.forward_s == pytest.approx(a.time.forward_s, rel=1e-12)
    assert b.time.backward_s == pytest.approx(a.time.backward_s + a.time.forward_s, rel=1e-9)
    assert b.memory.activations_bytes < a.memory.activations_bytes
    assert full.hardware_flops_per_iteration == pytest.approx(
        plain.model_flops_per_iteration * 4 / 3, rel=1e-12
    )
    assert plain.hardware_flops_per_iteration == plain.model_flops_per_iteration
    # 64 samples over 4 replicas of 4 samples: 4 microbatches.
    assert plain.plan.settings.microbatches == 4


def test_interleaved_configuration_places_chunks_on_groups(gpt24: Graph) -> None:
    cluster = v100_cluster(2, 4)
    config = ParallelConfig(dp=2, tp=2, pp=2, microbatch_size=2, vp=2, recompute="full")
    found = evaluate_config(gpt24, cluster, PlanOptions(), config)
    plan = found.plan
    assert plan.settings.virtual_stages == 2 and plan.settings.microbatches == 16
    assert len(plan.stages) == 4
    assert [s.devices for s in plan.stages[2:]] == [s.devices for s in plan.stages[:2]]
    assert plan.stages[0].devices != plan.stages[1].devices
    assert all(s.logical_mesh == (2, 2) for s in plan.stages)
    layers = [len(s.layers) for s in plan.stages]
    assert max(layers) - min(layers) <= 1
    assert plan.estimate.iteration_time_s == pipeline_timeline(plan).makespan_s
    assert all(s.recompute == "full" for s in plan.stages)
    assert check_plan(plan, _facts(gpt24, plan)) == ()


@pytest.mark.parametrize(
    ("config", "flag"),
    [
        (ParallelConfig(2, 2, 1, 2), "--dp x --tp x --pp x --cp"),  # 4 of 8 GPUs
        (ParallelConfig(4, 2, 1, 3), "--batch-size"),  # 64 / (4 x 3)
        (ParallelConfig(1, 2, 4, 2, vp=8), "--pp x --vp"),  # more chunks than layers
        (ParallelConfig(8, 1, 1, 8, zero=4), "--zero"),
        (ParallelConfig(2, 2, 2, 32, vp=2), "--batch-size / (dp x microbatch)"),  # 1 of 2 groups
    ],
)
def test_configurations_that_cannot_run_are_named(
    gpt24: Graph, config: ParallelConfig, flag: str
) -> None:
    cluster, options = v100_cluster(2, 4), PlanOptions()
    layers = len(ConfigTables(gpt24, cluster, options).layers)
    problem = config_problem(config, gpt24, cluster, options, layers)
    assert isinstance(problem, InputError) and problem.file == flag


def test_even_split_by_hand() -> None:
    assert even_split(5, 2) == ((0, 2), (3, 4))
    assert even_split(8, 4) == ((0, 1), (2, 3), (4, 5), (6, 7))


def test_megatron_baseline_is_the_best_configuration_it_enumerates(gpt: Graph) -> None:
    """Brute force: the baseline equals the fastest fitting (dp, tp, pp, vp, recompute,
    distributed optimizer) at the fixed microbatch count, each priced by `evaluate_config`."""
    from planner.baselines import MEGATRON_VIRTUAL_STAGES, megatron_configurations

    cluster, options = v100_cluster(2, 4), PlanOptions(microbatches=4)
    tables = ConfigTables(gpt, cluster, options)
    times = []
    for dp, tp, pp in megatron_configurations(cluster, len(tables.layers)):
        for vp, recompute, zero in itertools.product(
            MEGATRON_VIRTUAL_STAGES, ("none", "full"), (0, 1)
        ):
            config = ParallelConfig(dp, tp, pp, 64 // (dp * 4), vp, recompute, zero)  # type: ignore[arg-type]
            if 64 % (dp * 4) or (vp > 1 and pp == 1):
                continue
            if config_problem(config, gpt, cluster, options, len(tables.layers)):
                continue
            found = evaluate_config(gpt, cluster, options, config, tables=tables)
            if found.fits:
                times.append(found.plan.estimate.iteration_time_s)
    baseline = megatron(gpt, cluster, options)
    assert baseline.fits and times
    assert baseline.iteration_time_s == min(times)
    wanted = {"dp", "tp", "pp", "vp", "recompute", "distributed_optimizer", "microbatches"}
    assert wanted <= set(baseline.parameters)


def test_deepspeed_baseline_is_the_best_zero_configuration_it_enumerates(gpt: Graph) -> None:
    """Brute force: one stage of (dp, tp), tp inside a host, ZeRO stage 1, 2 or 3, recompute
    or not, at the fixed microbatch count; the baseline is the fastest that fits."""
    from planner.baselines import deepspeed, tensor_parallel_degrees

    cluster, options = v100_cluster(2, 4), PlanOptions(microbatches=4)
    tables = ConfigTables(gpt, cluster, options)
    times = {}
    for tp, zero, recompute in itertools.product(
        tensor_parallel_degrees(cluster), (1, 2, 3), ("none", "full")
    ):
        dp = 8 // tp
        config = ParallelConfig(dp, tp, 1, 64 // (dp * 4), 1, recompute, zero)  # type: ignore[arg-type]
        if 64 % (dp * 4) or config_problem(config, gpt, cluster, options, len(tables.layers)):
            continue
        found = evaluate_config(gpt, cluster, options, config, tables=tables)
        if found.fits:
            times[(tp, zero, recompute)] = found.plan.estimate.iteration_time_s
    baseline = deepspeed(gpt, cluster, options)
    assert baseline.fits and times
    assert baseline.iteration_time_s == min(times.values())
    chosen = (
        baseline.parameters["tp"],
        baseline.parameters["zero"],
        baseline.parameters["recompute"],
    )
    assert times[chosen] == baseline.iteration_time_s  # type: ignore[index]
    assert baseline.plan is not None and len(baseline.plan.stages) == 1


def test_the_distributed_optimizer_shards_optimizer_state_over_the_replicas(gpt: Graph) -> None:
    # Known answer: Adam in mixed precision holds 12 bytes of optimizer state (float32 master,
    # m, v) per 2-byte float16 weight. ZeRO-1 over dp = 4 replicas keeps a quarter of the state
    # of the weights a GPU holds (those tensor parallelism leaves replicated over its 2 GPUs,
    # such as LayerNorm's, are sharded over those too: an eighth); the weights and gradients
    # stay whole. (The ILP may choose other splits when state is cheaper: compare per plan.)
    cluster, options = v100_cluster(2, 4), PlanOptions()
    tables = ConfigTables(gpt, cluster, options)
    plain, sharded = (
        evaluate_config(gpt, cluster, options, ParallelConfig(4, 2, 1, 4, zero=z), tables=tables)
        for z in (0, 1)
    )
    before, after = (e.plan.stages[0].memory for e in (plain, sharded))
    assert before.optimizer_bytes == 6 * before.parameters_bytes
    assert before.gradients_bytes == before.parameters_bytes
    assert after.gradients_bytes == after.parameters_bytes  # ZeRO-1 keeps whole gradients
    assert 6 * after.parameters_bytes / 8 <= after.optimizer_bytes <= 6 * after.parameters_bytes / 4
    assert sharded.plan.estimate.peak_memory_bytes < plain.plan.estimate.peak_memory_bytes


def _evaluate(tmp_path: Path, *flags: str) -> list[str]:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text((Path(__file__).parent / "data/cases/gpt-tiny-2x4/cluster.yaml").read_text())
    return ["evaluate", str(GPT_TINY), str(cluster), "--batch-size", "64", "--jobs", "1", *flags]


def test_evaluate_json_has_the_documented_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    flags = ("--dp", "2", "--tp", "4", "--pp", "1", "--microbatch", "8", "--recompute", "full")
    assert main([*_evaluate(tmp_path, *flags), "--json", "-o", str(out)]) == exit_codes.OK
    document = json.loads(capsys.readouterr().out)
    assert {
        "iteration_time_s", "samples_per_s", "tflops_per_gpu", "hardware_tflops_per_gpu",
        "peak_memory_bytes", "fits",
    } <= set(document)  # fmt: skip
    assert document["fits"] is True
    assert document["hardware_tflops_per_gpu"] == pytest.approx(
        document["tflops_per_gpu"] * 4 / 3, rel=1e-9
    )
    assert document["configuration"]["microbatches"] == 4
    written = json.loads(out.read_text())
    assert written["search"]["parameters"]["dp"] == 2
    # the plan file rounds to 5 significant digits
    assert written["estimate"]["iteration_time_s"] == pytest.approx(
        document["iteration_time_s"], rel=1e-4
    )


def test_evaluate_bad_configuration_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ("--dp", "3", "--tp", "1", "--pp", "1", "--microbatch", "1")
    assert main(_evaluate(tmp_path, *flags)) == exit_codes.BAD_INPUT
    err = capsys.readouterr().err
    assert "--dp x --tp x --pp" in err and "8 GPUs" in err and "Traceback" not in err


def test_evaluate_that_does_not_fit_exits_3_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    flags = (
        "--dp",
        "8",
        "--tp",
        "1",
        "--pp",
        "1",
        "--microbatch",
        "8",
        "--memory-fraction",
        "1e-6",
    )
    assert main([*_evaluate(tmp_path, *flags), "-o", str(out)]) == exit_codes.INFEASIBLE
    assert "fits" in capsys.readouterr().out
    assert not out.exists()


def test_evaluate_recomputes_selectively_and_writes_which_ops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    flags = ("--dp", "2", "--tp", "2", "--pp", "2", "--microbatch", "4")
    args = [*_evaluate(tmp_path, *flags), "--recompute", "selective", "--json", "-o", str(out)]
    assert main(args) == exit_codes.OK
    document = json.loads(capsys.readouterr().out)
    # The attention cores' FLOPs run twice: more hardware FLOPs, far fewer than full's 4/3.
    ratio = document["hardware_tflops_per_gpu"] / document["tflops_per_gpu"]
    assert 1 < ratio < 1.05
    stages = json.loads(out.read_text())["stages"]
    assert [stage["recompute"] for stage in stages] == ["selective", "selective"]
    assert all(stage["recomputed_ops"] for stage in stages)
    assert main(["check", str(out), "--model", str(GPT_TINY)]) == exit_codes.OK
