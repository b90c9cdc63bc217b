"""The executor runs plans on 8 CPU virtual devices and gives the unsharded model's numbers.

Needs the `executor` extra (skipped without jax). XLA reads XLA_FLAGS when its CPU backend
starts, so the flag is set here, before jax is first imported (no other test imports jax).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
jax = pytest.importorskip("jax")
pytest.importorskip("optax")
pytest.importorskip("onnxruntime")

from conftest import ROOT  # noqa: E402

from cli.main import main  # noqa: E402
from executor.onnx_model import load_model  # noqa: E402
from executor.reference import max_relative_error, reference_outputs  # noqa: E402
from executor.runtime import PlanRuntime, RuntimeOptions  # noqa: E402
from executor.stages import ModelFacts  # noqa: E402
from planner.onnx_import import load_onnx  # noqa: E402
from planner.recompute import recomputed_ops  # noqa: E402
from plans.check import check_plan  # noqa: E402
from plans.errors import InputError  # noqa: E402
from plans.io import read_plan  # noqa: E402
from plans.plan import Layer, Plan, ZeroStage, frozen_map  # noqa: E402

DATA = ROOT / "tests" / "data" / "executor"
BATCH = 16
TOLERANCE = 1e-4  # relative, float32

CLUSTER = """\
name: one-host-8
hosts: 1
gpus_per_host: 8
gpu:
  name: test-gpu
  memory: 16 GiB
  flops: {float16: 125 TFLOP/s, float32: 15.7 TFLOP/s}
  memory_bandwidth: 900 GB/s
links:
  intra_host: {bandwidth: 150 GB/s, latency: 5 us}
  inter_host: {bandwidth: 3.125 Gbit/s, latency: 20 us}
"""


@pytest.fixture(scope="module")
def make_plan(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Plan a test model with the real planner on one host of 8 GPUs (float32): one stage
    (`--intra-only`, one microbatch) unless the options say `--full-search`."""
    if len(jax.devices()) < 8:  # here, not at collection: jax starts only if these tests run
        pytest.skip("needs 8 devices (XLA_FLAGS was set after jax started)")
    folder = tmp_path_factory.mktemp("plans")
    cluster = folder / "cluster.yaml"
    cluster.write_text(CLUSTER)
    made: dict[tuple[str, ...], Path] = {}

    def plan(model: str, *options: str) -> Path:
        key = (model, *options)
        if key not in made:
            target = folder / f"{model}-{len(made)}.plan.json"
            argv = [str(DATA / f"{model}.onnx"), str(cluster), "--batch-size", str(BATCH)]
            argv += ["--dtype", "float32", "-o", str(target)]
            if "--full-search" in options:
                # In a child process: the inter-op search forks workers, which is unsafe in
                # a process where jax's threads already run.
                argv += [option for option in options if option != "--full-search"]
                command = [sys.executable, "-m", "cli.main", *argv]
                done = subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
                assert done.returncode == 0, done.stderr
            else:
                assert main([*argv, "--intra-only", *options]) == 0
            made[key] = target
        return made[key]

    return plan


def facts(model: str) -> ModelFacts:
    graph = load_onnx(DATA / f"{model}.onnx", batch_size=BATCH)
    return ModelFacts(graph.fingerprint, {op.name: op.outputs for op in graph.ops})


def runtime(plan: Plan, model: str, mode: str = "infer", **options: object) -> PlanRuntime:
    return PlanRuntime(
        plan,
        load_model(DATA / f"{model}.onnx"),
        RuntimeOptions(mode=mode, **options),  # type: ignore[arg-type]
        facts=facts(model),
    )


def two_stages(plan: Plan, mesh: tuple[int, int], microbatches: int = 2) -> Plan:
    """The one-stage plan cut into two stages of 4 devices: the ops split in half in
    topological order, specs kept (the inter-op pass will make such plans)."""
    (stage,) = plan.stages
    half = len(stage.ops) // 2
    stages = []
    for index, ops in enumerate((stage.ops[:half], stage.ops[half:])):
        stages.append(
            dataclasses.replace(
                stage,
                index=index,
                ops=ops,
                devices=stage.devices[4 * index : 4 * index + 4],
                logical_mesh=mesh,
                strategies=frozen_map({op: stage.strategies[op] for op in ops}),
            )
        )
    settings = dataclasses.replace(plan.settings, microbatches=microbatches)
    return dataclasses.replace(plan, stages=tuple(stages), settings=settings)


def interleaved(plan: Plan, mesh: tuple[int, int], microbatches: int) -> Plan:
    """The one-stage plan cut into four stages on two groups of 4 devices, stage k on group
    k mod 2 (interleaved 1F1B, two virtual stages per group): the ops split in quarters in
    topological order, specs kept."""
    (stage,) = plan.stages
    quarter = -(-len(stage.ops) // 4)
    stages = []
    for index in range(4):
        ops = stage.ops[quarter * index : quarter * (index + 1)]
        group = index % 2
        stages.append(
            dataclasses.replace(
                stage,
                index=index,
                ops=ops,
                devices=stage.devices[4 * group : 4 * group + 4],
                logical_mesh=mesh,
                strategies=frozen_map({op: stage.strategies[op] for op in ops}),
            )
        )
    settings = dataclasses.replace(plan.settings, microbatches=microbatches, virtual_stages=2)
    return dataclasses.replace(plan, stages=tuple(stages), settings=settings)


def three_stages(plan: Plan, cuts: tuple[int, int]) -> Plan:
    """The one-stage plan cut into three stages of 2 devices (1 x 2 meshes) before ops
    `cuts[0]` and `cuts[1]` (in topological order), specs kept."""
    (stage,) = plan.stages
    first, second = cuts
    parts = (stage.ops[:first], stage.ops[first:second], stage.ops[second:])
    stages = tuple(
        dataclasses.replace(
            stage,
            index=index,
            ops=ops,
            devices=stage.devices[2 * index : 2 * index + 2],
            logical_mesh=(1, 2),
            strategies=frozen_map({op: stage.strategies[op] for op in ops}),
        )
        for index, ops in enumerate(parts)
    )
    settings = dataclasses.replace(plan.settings, microbatches=2)
    return dataclasses.replace(plan, stages=stages, settings=settings)


def one_device(plan: Plan) -> Plan:
    """The same model unsharded: one stage on device (0, 0), one microbatch."""
    stage = plan.stages[0]
    ops = tuple(op for s in plan.stages for op in s.ops)
    single = dataclasses.replace(
        stage,
        ops=ops,
        devices=((0, 0),),
        logical_mesh=(1, 1),
        strategies=frozen_map({}),
        shardings=frozen_map({}),
    )
    settings = dataclasses.replace(plan.settings, microbatches=1, virtual_stages=1)
    return dataclasses.replace(plan, stages=(single,), settings=settings)


def with_specs(plan: Plan, model: str, specs: Mapping[str, str]) -> Plan:
    """A one-stage plan whose tensors are replicated except `specs`, with every op's strategy
    rewritten to match ('OUT = IN0 x IN1', the planner's format)."""
    (stage,) = plan.stages
    onnx_model = load_model(DATA / f"{model}.onnx")
    ranks = {name: _rank(spec) for name, spec in stage.shardings.items()}
    shardings = {name: specs.get(name, "R" * rank) for name, rank in ranks.items()}
    shardings = {
        name: "R" * (ranks[name] - 1) + "S1" if spec == LAST else spec
        for name, spec in shardings.items()
    }
    strategies = {}
    by_name = {node.name: node for node in onnx_model.nodes}
    for op in stage.ops:
        node = by_name[op]
        outs = " ".join(shardings[name] for name in node.outputs if name in shardings)
        ins = " x ".join(shardings[name] for name in node.inputs if name in shardings)
        strategies[op] = f"{outs or '-'} = {ins or '-'}"
    new = dataclasses.replace(
        stage, shardings=frozen_map(shardings), strategies=frozen_map(strategies)
    )
    return dataclasses.replace(plan, stages=(new,))


def _rank(spec: str) -> int:
    return len(spec.replace("S01", "x").replace("S0", "x").replace("S1", "x"))


def megatron_mlp_specs() -> dict[str, str]:
    """mlp.onnx split Megatron-style over mesh axis 1: fc1 by columns, fc2 by rows."""
    return {
        "fc1.weight": "S1R",  # [out, in] (Gemm transB): output features split
        "fc1.bias": "S1",
        "linear": "RS1",
        "relu": "RS1",
        "fc2.weight": "RS1",  # [out, in]: the contracted features split
    }


def megatron_gpt_mlp_specs() -> dict[str, str]:
    """Both transformer layers of gpt2.onnx with their MLP blocks split Megatron-style: c_fc by
    columns, every tensor up to c_proj split on its last (hidden) dimension, c_proj by rows.
    `LAST` stands for the spec that splits the last dimension over mesh axis 1."""
    model = load_model(DATA / "gpt2.onnx")
    specs: dict[str, str] = {}
    inside = False
    for node in model.nodes:
        weights = [name for name in node.inputs if name.endswith(".weight")]
        if any(name.endswith("mlp.c_fc.weight") for name in weights):
            inside = True
            specs[weights[0]] = "RS1"
            specs[node.inputs[2]] = "S1"
            specs[node.outputs[0]] = LAST
        elif any(name.endswith("mlp.c_proj.weight") for name in weights):
            inside = False
            specs[weights[0]] = "S1R"
        elif inside:
            specs.update({name: LAST for name in node.outputs})
    return specs


LAST = "last"


# --- inference against onnxruntime -----------------------------------------------------------


@pytest.mark.parametrize("model", ["mlp", "gpt2", "convnet"])
def test_inference_under_the_planners_plan_matches_onnxruntime(
    make_plan: Callable[..., Path], model: str
) -> None:
    plan = read_plan(make_plan(model, "--mode", "infer"))
    assert len(plan.stages[0].devices) == 8
    run = runtime(plan, model)
    inputs = run.random_inputs(seed=1)
    actual = run.infer(inputs)
    expected = reference_outputs(run.model, run.weights, inputs)
    for name, value in expected.items():
        assert actual[name].shape == value.shape
        assert max_relative_error(actual[name], value) < TOLERANCE


@pytest.mark.parametrize("model", ["gpt2", "convnet"])
def test_the_planners_full_search_plan_runs_and_matches_onnxruntime(
    make_plan: Callable[..., Path], model: str
) -> None:
    """Whatever stages, meshes and microbatches the inter-op search picks."""
    plan = read_plan(make_plan(model, "--mode", "infer", "--full-search"))
    run = runtime(plan, model)
    inputs = run.random_inputs(seed=8)
    actual = run.infer(inputs)
    expected = reference_outputs(run.model, run.weights, inputs)
    for name, value in expected.items():
        assert max_relative_error(actual[name], value) < TOLERANCE


@pytest.mark.parametrize("model, mesh", [("gpt2", (2, 2)), ("convnet", (1, 4)), ("mlp", (1, 4))])
def test_a_pipeline_of_two_stages_of_four_devices_matches_onnxruntime(
    make_plan: Callable[..., Path], model: str, mesh: tuple[int, int]
) -> None:
    plan = two_stages(read_plan(make_plan(model, "--mode", "infer")), mesh)
    run = runtime(plan, model)
    assert [len(p.devices) for p in run.programs] == [4, 4]
    assert run.programs[1].inputs  # something crosses the stage boundary
    inputs = run.random_inputs(seed=2)
    actual = run.infer(inputs)
    expected = reference_outputs(run.model, run.weights, inputs)
    for name, value in expected.items():
        assert max_relative_error(actual[name], value) < TOLERANCE


def in_dtype(plan: Plan, dtype: str) -> Plan:
    return dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, dtype=dtype))


@pytest.mark.parametrize("model", ["mlp", "gpt2"])
def test_a_bfloat16_plan_computes_in_bfloat16_and_model_precision_in_float32(
    make_plan: Callable[..., Path], model: str
) -> None:
    plan = in_dtype(read_plan(make_plan(model, "--mode", "infer")), "bfloat16")
    half = runtime(plan, model)
    inputs = half.random_inputs(seed=1)
    expected = reference_outputs(half.model, half.weights, inputs)
    actual = half.infer(inputs)
    full = runtime(plan, model, precision="model").infer(inputs)
    for name, value in expected.items():
        assert actual[name].dtype == np.dtype(jax.numpy.bfloat16)
        # bfloat16 keeps 8 bits of mantissa: about 2 decimal digits, through a few layers.
        error = max_relative_error(actual[name].astype(np.float32), value)
        assert 1e-4 < error < 0.1
        assert full[name].dtype == value.dtype
        assert max_relative_error(full[name], value) < TOLERANCE


def test_mixed_precision_training_keeps_float32_weights_and_follows_the_float32_loss(
    make_plan: Callable[..., Path],
) -> None:
    plan = read_plan(make_plan("mlp", "--force-data-parallel", "--microbatches", "2"))
    half = runtime(in_dtype(plan, "bfloat16"), "mlp", "train", learning_rate=1e-2)
    full = runtime(plan, "mlp", "train", learning_rate=1e-2)
    inputs = half.random_inputs(seed=5)
    before = full.parameters()
    for _ in range(3):
        assert half.train_step(inputs) == pytest.approx(full.train_step(inputs), rel=0.05)
    after_half, after_full = half.parameters(), full.parameters()
    assert {value.dtype for value in after_half.values()} == {np.dtype(np.float32)}
    for name, value in after_full.items():  # the same steps, give or take bfloat16 rounding
        moved = np.linalg.norm(value - before[name])
        assert np.linalg.norm(after_half[name] - value) < 0.25 * moved


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_training_of_gpt_tiny_stays_finite_and_near_float32(
    tmp_path: Path, dtype: str
) -> None:
    """Softmax, layer norms, Pow and the loss run in float32 (as under torch.autocast): in
    float16 without that, gpt-tiny's GELU (x^3) overflows and its second step's loss is NaN."""
    model_path = ROOT / "examples" / "models" / "gpt-tiny.onnx"
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    plan_path = tmp_path / "plan.json"
    argv = [str(model_path), str(cluster), "--batch-size", str(BATCH), "--microbatches", "2"]
    assert main([*argv, "--dtype", "float32", "--intra-only", "-o", str(plan_path)]) == 0
    plan = read_plan(plan_path)
    graph = load_onnx(model_path, batch_size=BATCH)
    facts = ModelFacts(graph.fingerprint, {op.name: op.outputs for op in graph.ops})

    def run(the_plan: Plan) -> PlanRuntime:
        options = RuntimeOptions(mode="train", learning_rate=1e-3)
        return PlanRuntime(the_plan, load_model(model_path), options, facts=facts)

    half, full = run(in_dtype(plan, dtype)), run(plan)
    inputs = half.random_inputs(seed=0)
    for _ in range(3):
        loss = half.train_step(inputs)
        assert np.isfinite(loss)
        assert loss == pytest.approx(full.train_step(inputs), rel=0.05, abs=1e-3)


def test_an_unknown_precision_is_refused(make_plan: Callable[..., Path]) -> None:
    plan = read_plan(make_plan("mlp", "--mode", "infer"))
    with pytest.raises(InputError, match="--precision: expected one of plan, model, found 'fp8'"):
        runtime(plan, "mlp", precision="fp8")


# --- training --------------------------------------------------------------------------------


def _relative(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    return max(max_relative_error(a[name], b[name]) for name in b)


@pytest.mark.parametrize(
    "shape",
    [
        "data-parallel",
        "megatron",
        "pipeline",
        "pipeline-of-replicas",
        "pipeline-deeper-warm-up",
        "pipeline-interleaved",
        "pipeline-recomputing",
        "pipeline-recomputing-selectively",
    ],
)
def test_one_sharded_training_step_updates_weights_as_one_device_does(
    make_plan: Callable[..., Path], shape: str
) -> None:
    """SGD, so the updated weights compare the gradients themselves: Adam's first step is
    lr * sign(g), which amplifies the rounding of gradients that are zero in exact arithmetic
    (attention's key bias) to a full step either way."""
    sgd = ("--optimizer", "sgd")
    if shape == "data-parallel":
        plan = read_plan(make_plan("gpt2", *sgd, "--force-data-parallel", "--microbatches", "2"))
    elif shape == "megatron":
        plan = with_specs(read_plan(make_plan("gpt2", *sgd)), "gpt2", megatron_gpt_mlp_specs())
    elif shape == "pipeline":
        plan = two_stages(read_plan(make_plan("gpt2", *sgd)), (2, 2), microbatches=2)
    elif shape == "pipeline-deeper-warm-up":  # 1F1B: stage 0 warms up with 1 + 2 forwards
        plan = two_stages(read_plan(make_plan("gpt2", *sgd)), (2, 2), microbatches=4)
        plan = dataclasses.replace(
            plan, settings=dataclasses.replace(plan.settings, warmup_extra=2)
        )
        assert plan.settings.schedule == "1f1b"
    elif shape == "pipeline-recomputing":  # stage 1 rebuilds its layers in the backward
        plan = two_stages(read_plan(make_plan("gpt2", *sgd)), (2, 2), microbatches=2)
        recomputing = dataclasses.replace(plan.stages[1], recompute="full")
        plan = dataclasses.replace(plan, stages=(plan.stages[0], recomputing))
    elif shape == "pipeline-recomputing-selectively":  # both stages rerun their attention cores
        plan = selectively_recomputing(two_stages(read_plan(make_plan("gpt2", *sgd)), (2, 2)))
    elif shape == "pipeline-interleaved":  # 4 stages on 2 groups: each microbatch crosses twice
        plan = interleaved(read_plan(make_plan("gpt2", *sgd)), (2, 2), microbatches=4)
        assert check_plan(plan) == ()
    else:  # two data-parallel stages: the tied embedding's gradient crosses them
        data_parallel = read_plan(make_plan("gpt2", *sgd, "--force-data-parallel"))
        plan = two_stages(data_parallel, (1, 4), microbatches=2)
    assert plan.settings.optimizer == "sgd"
    options = {"loss": "cross-entropy", "learning_rate": 0.1}
    sharded = runtime(plan, "gpt2", "train", **options)
    single = runtime(one_device(plan), "gpt2", "train", **options)
    inputs = sharded.random_inputs(seed=3)
    labels = np.random.default_rng(4).integers(0, 64, (BATCH, 8))
    before = single.parameters()
    loss_sharded = sharded.train_step(inputs, labels)
    loss_single = single.train_step(inputs, labels)
    assert loss_sharded == pytest.approx(loss_single, rel=TOLERANCE)
    after = single.parameters()
    assert _relative(after, before) > 1e-3  # the step moved the weights
    assert _relative(sharded.parameters(), after) < TOLERANCE
    if shape in ("data-parallel", "pipeline-of-replicas"):
        assert all(sync.once_per_iteration for sync in sharded.gradient_sync())


def test_a_recomputing_stage_checkpoints_each_of_its_layers(
    make_plan: Callable[..., Path],
) -> None:
    plan = two_stages(read_plan(make_plan("gpt2", "--optimizer", "sgd")), (2, 2))
    first, second = plan.stages
    half = len(second.ops) // 2  # stage 1 as two layers, each checkpointed on its own
    layers = (
        Layer("a", first.ops, 1.0, 0),
        Layer("b", second.ops[:half], 1.0, 0),
        Layer("c", second.ops[half:], 1.0, 0),
    )
    plan = dataclasses.replace(
        plan, layers=layers, stages=(first, dataclasses.replace(second, recompute="full"))
    )
    sharded = runtime(plan, "gpt2", "train")
    for index, checkpoints in ((0, 0), (1, 2)):
        params, inputs = sharded._abstract_inputs(index)
        jaxpr = jax.make_jaxpr(sharded.forwards[index])(params, inputs).jaxpr
        remats = [eqn for eqn in jaxpr.eqns if eqn.primitive.name.startswith("remat")]
        assert len(remats) == checkpoints, index


def selectively_recomputing(plan: Plan) -> Plan:
    """`plan` with every stage rerunning its attention cores (`planner/recompute.py`)."""
    graph = load_onnx(DATA / "gpt2.onnx", batch_size=BATCH).subgraph()
    cores = recomputed_ops(graph, "selective")
    stages = tuple(
        dataclasses.replace(
            stage,
            recompute="selective",
            recomputed_ops=tuple(op for op in stage.ops if op in cores),
        )
        for stage in plan.stages
    )
    assert all(stage.recomputed_ops for stage in stages)  # one attention layer each
    return dataclasses.replace(plan, stages=stages)


def test_a_selectively_recomputing_stage_names_what_its_checkpoint_policy_drops(
    make_plan: Callable[..., Path],
) -> None:
    plan = selectively_recomputing(
        two_stages(read_plan(make_plan("gpt2", "--optimizer", "sgd")), (2, 2))
    )
    assert check_plan(plan) == ()
    sharded = runtime(plan, "gpt2", "train")
    written = facts("gpt2").op_outputs
    for index, stage in enumerate(plan.stages):
        expected = {name for op in stage.recomputed_ops for name in written[op] if name}
        assert sharded.programs[index].rebuilt == expected
        params, inputs = sharded._abstract_inputs(index)
        jaxpr = jax.make_jaxpr(sharded.forwards[index])(params, inputs).jaxpr
        (remat,) = [eqn for eqn in jaxpr.eqns if eqn.primitive.name.startswith("remat")]
        assert remat.params["policy"] is not None  # one checkpoint, with the names policy
        inner = remat.params["jaxpr"]
        named = {eqn.params["name"] for eqn in inner.eqns if eqn.primitive.name == "name"}
        assert named == expected


def test_a_plan_recomputing_an_op_of_another_stage_is_refused(
    make_plan: Callable[..., Path],
) -> None:
    plan = selectively_recomputing(
        two_stages(read_plan(make_plan("gpt2", "--optimizer", "sgd")), (2, 2))
    )
    first, second = plan.stages
    wrong = dataclasses.replace(second, recomputed_ops=(first.ops[0],))
    plan = dataclasses.replace(plan, stages=(first, wrong))
    assert any("not its own" in str(problem) for problem in check_plan(plan))
    with pytest.raises(InputError, match="recomputed_ops"):
        runtime(plan, "gpt2", "train")


def test_adam_steps_under_a_sharded_plan_follow_the_single_device_loss(
    make_plan: Callable[..., Path],
) -> None:
    plan = read_plan(make_plan("gpt2", "--force-data-parallel", "--microbatches", "2"))
    assert plan.settings.optimizer == "adam"
    options = {"loss": "cross-entropy", "learning_rate": 1e-3}
    sharded = runtime(plan, "gpt2", "train", **options)
    single = runtime(one_device(plan), "gpt2", "train", **options)
    inputs = sharded.random_inputs(seed=3)
    labels = np.random.default_rng(4).integers(0, 64, (BATCH, 8))
    for _ in range(3):
        assert sharded.train_step(inputs, labels) == pytest.approx(
            single.train_step(inputs, labels), rel=TOLERANCE
        )


def test_training_loss_decreases_over_20_steps(make_plan: Callable[..., Path]) -> None:
    plan = read_plan(make_plan("mlp", "--force-data-parallel", "--microbatches", "2"))
    run = runtime(plan, "mlp", "train", learning_rate=1e-2)
    inputs = run.random_inputs(seed=5)
    losses = [run.train_step(inputs) for _ in range(20)]
    assert losses[-1] < losses[0] - 0.1
    assert sum(b < a for a, b in itertools.pairwise(losses)) >= 15


def _one_step_matches_one_device(plan: Plan, model: str, **options: object) -> PlanRuntime:
    """One SGD step of `plan` moves the weights as the unsharded model's step does."""
    sharded = runtime(plan, model, "train", learning_rate=0.1, **options)
    single = runtime(one_device(plan), model, "train", learning_rate=0.1, **options)
    inputs = sharded.random_inputs(seed=3)
    before = single.parameters()
    assert sharded.train_step(inputs) == pytest.approx(single.train_step(inputs), rel=TOLERANCE)
    assert _relative(single.parameters(), before) > 1e-3
    assert _relative(sharded.parameters(), single.parameters()) < TOLERANCE
    return sharded


@pytest.mark.parametrize("model", ["mlp", "gpt2", "convnet"])
def test_data_parallel_gradients_are_summed_once_per_iteration_not_per_microbatch(
    make_plan: Callable[..., Path], model: str
) -> None:
    """The plan charges the gradient all-reduce once per iteration: the compiled backward of a
    microbatch holds no collective, and the iteration's gradient sum one all-reduce."""
    plan = read_plan(make_plan(model, "--force-data-parallel", "--microbatches", "2"))
    run = runtime(plan, model, "train")
    ((mesh_axes, _),) = [(s.replica_axes, s.reason) for s in run.gradient_sync()]
    assert mesh_axes == tuple(a for a, size in enumerate(plan.stages[0].logical_mesh) if size > 1)
    (compiled,) = run.training_collectives(run.random_inputs(seed=1))
    assert compiled.backward == {}
    assert compiled.gradient_sum is not None and set(compiled.gradient_sum) == {"all-reduce"}


def data_and_tensor_parallel_mlp(plan: Plan) -> Plan:
    """mlp.onnx on a 2x4 mesh: the batch over axis 0, fc1 and fc2 Megatron-split over axis 1."""
    specs = {**megatron_mlp_specs(), "x": "S0R", "linear": "S0S1", "relu": "S0S1"}
    specs["linear_1"] = "S0R"
    (stage,) = plan.stages
    plan = dataclasses.replace(plan, stages=(dataclasses.replace(stage, logical_mesh=(2, 4)),))
    return with_specs(plan, "mlp", specs)


def test_data_times_tensor_parallelism_sums_gradients_once_over_the_batch_axis_only(
    make_plan: Callable[..., Path],
) -> None:
    plan = data_and_tensor_parallel_mlp(read_plan(make_plan("mlp", "--optimizer", "sgd")))
    run = _one_step_matches_one_device(plan, "mlp")
    (sync,) = run.gradient_sync()
    assert sync.replica_axes == (0,), sync.reason
    assert "once per iteration over mesh axes 0" in sync.describe()


def test_a_batch_axis_that_also_splits_a_weight_leaves_the_sum_to_xla_and_says_why(
    make_plan: Callable[..., Path],
) -> None:
    plan = read_plan(make_plan("mlp", "--optimizer", "sgd"))
    specs = {**megatron_mlp_specs(), "x": "S1R"}  # axis 1 splits the batch and the features
    run = _one_step_matches_one_device(with_specs(plan, "mlp", specs), "mlp")
    (sync,) = run.gradient_sync()
    assert not sync.once_per_iteration
    assert sync.reason == (
        "mesh axis 1: it splits 'fc1.bias', which does not depend on the stage's inputs"
    )
    assert "summed by XLA in every microbatch" in sync.describe()


@pytest.mark.parametrize("shape, dim", [((8, 3), 0), ((2, 8, 5), 1), ((3, 4, 8), 2)])
def test_replica_r_holds_the_r_th_block_of_the_batch_and_join_undoes_split(
    shape: tuple[int, ...], dim: int
) -> None:
    from executor.replicas import join_replicas, split_replicas

    value = np.arange(np.prod(shape)).reshape(shape)
    split = np.asarray(split_replicas(jax.numpy.asarray(value), dim, 4))
    assert split.shape == (4, *shape[:dim], 2, *shape[dim + 1 :])
    for r in range(4):
        np.testing.assert_array_equal(split[r], np.take(value, range(2 * r, 2 * r + 2), axis=dim))
    np.testing.assert_array_equal(np.asarray(join_replicas(jax.numpy.asarray(split), dim)), value)


def test_batch_dims_and_zero_storage_by_hand() -> None:
    from executor.replicas import batch_dims, zero_storage_spec
    from plans.specs import ShardingSpec

    def stored(text: str, shape: tuple[int, ...]) -> str | None:
        spec = zero_storage_spec(ShardingSpec.parse(text), shape, (2, 4))
        return None if spec is None else str(spec)

    found = batch_dims(
        {"x": (4, 16), "merged": (64, 8), "w": (16, 16), "odd": (4, 4)},
        {"x": (8, 16), "merged": (128, 8), "w": (16, 16), "odd": (8, 8)},
    )
    assert found == {"x": 0, "merged": 0, "w": None, "odd": None}
    # A weight split RS1 on a 2x4 mesh is replicated over axis 0: ZeRO puts it on dimension 0.
    assert stored("RS1", (6, 8)) == "S0S1"
    # Replicated over both axes: both on the first dimension they divide (8 ways), here the 2nd.
    assert stored("RR", (6, 16)) == "RS01"
    assert stored("RR", (3, 5)) is None  # nothing divides
    assert stored("S0S1", (6, 8)) is None  # split over every axis


def _as_zero(plan: Plan, mode: str) -> Plan:
    """The plan with every ZeRO parameter held as `mode` instead."""
    stages = tuple(
        dataclasses.replace(
            stage,
            zero=frozen_map(
                {p: m if m is ZeroStage.NONE else ZeroStage(mode) for p, m in stage.zero.items()}
            ),
        )
        for stage in plan.stages
    )
    return dataclasses.replace(plan, stages=stages)


@pytest.mark.parametrize("mode", ["zero1", "zero2", "zero3"])
def test_zero_plans_shard_what_they_say_and_train_as_one_device_does(
    make_plan: Callable[..., Path], mode: str
) -> None:
    plan = read_plan(make_plan("mlp", "--zero", "--force-data-parallel", "--optimizer", "sgd"))
    # One microbatch: ZeRO-1 and ZeRO-2 cost the same time, and the ILP keeps the first.
    assert set(plan.stages[0].zero.values()) == {ZeroStage.ZERO1}
    plan = _as_zero(plan, mode)
    run = _one_step_matches_one_device(plan, "mlp")
    weight = run.params[0]["fc1.weight"]  # in the plan's spec RR on a 1x8 mesh
    assert run.zero["fc1.weight"] == mode
    stored = run.zero_sharding("fc1.weight", 0)
    assert stored is not None and stored.spec == jax.sharding.PartitionSpec("y", None)
    if mode == "zero3":
        assert weight.sharding.spec == stored.spec  # stored sharded, gathered where read
    else:
        assert weight.sharding.is_fully_replicated  # the plan's RR
    (forward,) = run.collectives()
    assert forward.agree, forward  # zero3: the forward gathers the weights, as predicted
    assert ("all-gather" in forward.compiled) == (mode == "zero3")
    (compiled,) = run.training_collectives(run.random_inputs(seed=1))
    assert compiled.gradient_sum is not None
    # A reduce-scatter, or (XLA's CPU backend) an all-reduce it slices.
    assert set(compiled.gradient_sum) <= {"all-reduce", "reduce-scatter"}


def test_zero_keeps_adam_state_sharded_and_follows_the_single_device_loss(
    make_plan: Callable[..., Path],
) -> None:
    plan = read_plan(make_plan("mlp", "--zero", "--force-data-parallel", "--microbatches", "2"))
    assert set(plan.stages[0].zero.values()) <= {ZeroStage.ZERO1, ZeroStage.ZERO2}
    sharded = runtime(plan, "mlp", "train", learning_rate=1e-2)
    single = runtime(one_device(plan), "mlp", "train", learning_rate=1e-2)
    inputs = sharded.random_inputs(seed=3)
    for _ in range(3):
        assert sharded.train_step(inputs) == pytest.approx(single.train_step(inputs), rel=1e-4)
    stored = sharded.zero_sharding("fc1.weight", 0)
    state = sharded._training.opt_state[0]  # type: ignore[union-attr]
    shape = sharded.params[0]["fc1.weight"].shape
    moments = [leaf for leaf in jax.tree.leaves(state) if getattr(leaf, "shape", ()) == shape]
    assert moments and all(leaf.sharding.spec == stored.spec for leaf in moments)  # type: ignore[union-attr]


# --- collectives: what XLA inserted against what the plan predicts ---------------------------


def test_data_parallel_inference_of_an_mlp_compiles_without_collectives(
    make_plan: Callable[..., Path],
) -> None:
    plan = read_plan(make_plan("mlp", "--mode", "infer"))
    batch_split = {name: "S01R" for name in ("x", "linear", "relu", "linear_1")}
    plan = with_specs(plan, "mlp", batch_split)  # the batch over all 8 devices
    (stage,) = runtime(plan, "mlp").collectives()
    assert stage.predicted == frozenset()
    assert stage.compiled == {}


@pytest.mark.parametrize("model", ["mlp", "gpt2"])
def test_megatron_split_compiles_to_all_reduce_only_as_the_plan_predicts(
    make_plan: Callable[..., Path], model: str
) -> None:
    specs = megatron_mlp_specs() if model == "mlp" else megatron_gpt_mlp_specs()
    plan = with_specs(read_plan(make_plan(model, "--mode", "infer")), model, specs)
    run = runtime(plan, model)
    (stage,) = run.collectives()
    assert stage.predicted == {"all-reduce"}
    assert set(stage.compiled) == {"all-reduce"}
    # One all-reduce per row-split matmul: one MLP, or one per transformer layer.
    assert stage.compiled["all-reduce"] == (1 if model == "mlp" else 2)
    inputs = run.random_inputs(seed=6)
    expected = reference_outputs(run.model, run.weights, inputs)
    actual = run.infer(inputs)
    assert max(max_relative_error(actual[n], expected[n]) for n in expected) < TOLERANCE


@pytest.mark.parametrize("model", ["mlp", "gpt2", "convnet"])
def test_the_planners_own_plans_compile_to_the_collectives_they_predict(
    make_plan: Callable[..., Path], model: str
) -> None:
    plan = read_plan(make_plan(model, "--mode", "infer"))
    for stage in runtime(plan, model).collectives():
        assert stage.agree, stage


# --- plans that do not fit the model ---------------------------------------------------------


def test_a_plan_for_another_model_is_refused_by_fingerprint(
    make_plan: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    plan = make_plan("gpt2", "--mode", "infer")
    assert main(["run", str(plan), str(DATA / "mlp.onnx")]) == 2
    error = capsys.readouterr().err
    assert "model.fingerprint: expected the fingerprint of" in error
    assert "the plan was made for another model" in error


def test_a_plan_missing_an_op_is_refused_naming_it(make_plan: Callable[..., Path]) -> None:
    plan = read_plan(make_plan("mlp", "--mode", "infer"))
    stage = dataclasses.replace(plan.stages[0], ops=plan.stages[0].ops[:-1])
    with pytest.raises(InputError, match=r"no stage for 'node_linear_1'"):
        runtime(dataclasses.replace(plan, stages=(stage,)), "mlp")


def test_a_plan_with_an_op_the_model_lacks_is_refused(make_plan: Callable[..., Path]) -> None:
    plan = read_plan(make_plan("mlp", "--mode", "infer"))
    stage = dataclasses.replace(plan.stages[0], ops=(*plan.stages[0].ops, "node_extra"))
    with pytest.raises(InputError, match=r"stages\[0\]\.ops: .*'node_extra', which it does not"):
        runtime(dataclasses.replace(plan, stages=(stage,)), "mlp")


def test_a_spec_of_the_wrong_rank_is_refused(make_plan: Callable[..., Path]) -> None:
    plan = read_plan(make_plan("mlp", "--mode", "infer"))
    shardings = dict(plan.stages[0].shardings, relu="S1RR")
    stage = dataclasses.replace(plan.stages[0], shardings=frozen_map(shardings))
    with pytest.raises(InputError, match=r"shardings\.relu: expected a spec of rank 2"):
        runtime(dataclasses.replace(plan, stages=(stage,)), "mlp")


def test_stages_out_of_topological_order_are_refused(make_plan: Callable[..., Path]) -> None:
    plan = two_stages(read_plan(make_plan("mlp", "--mode", "infer")), (1, 4))
    swapped = tuple(
        dataclasses.replace(stage, ops=other.ops, strategies=other.strategies)
        for stage, other in zip(plan.stages, reversed(plan.stages), strict=True)
    )
    with pytest.raises(InputError, match="contiguous runs of ops in topological order"):
        runtime(dataclasses.replace(plan, stages=swapped), "mlp")


# --- the command -----------------------------------------------------------------------------


def test_run_command_writes_outputs_and_losses(
    make_plan: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = make_plan("convnet", "--mode", "infer")
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.random.default_rng(7).standard_normal((BATCH, 3, 8, 8), np.float32))
    outputs = tmp_path / "out.npz"
    argv = ["run", str(plan), str(DATA / "convnet.onnx"), "--inputs", str(inputs)]
    assert main([*argv, "--outputs", str(outputs), "--check"]) == 0
    assert "largest relative difference from onnxruntime" in capsys.readouterr().err
    with np.load(outputs) as saved:
        assert saved["linear"].shape == (BATCH, 10)
    losses = tmp_path / "loss.npz"
    argv += ["--mode", "train", "--steps", "3", "--outputs", str(losses)]
    assert main(argv) == 0
    with np.load(losses) as saved:
        assert saved["loss"].shape == (3,)
    # The planner splits the convnet's batch over the 8 devices and nothing else.
    err = capsys.readouterr().err
    assert "stage 0: gradients summed once per iteration over mesh axes 1\n" in err


def test_run_without_the_executor_extra_names_the_extra(make_plan: Callable[..., Path]) -> None:
    plan = make_plan("mlp", "--mode", "infer")
    code = (
        "import sys; sys.modules['jax'] = None; from cli.main import main; "
        f"sys.exit(main(['run', {str(plan)!r}, {str(DATA / 'mlp.onnx')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'alpa-plan[executor]'" in result.stderr


def test_a_tensor_read_two_stages_later_is_relayed_and_trains_as_one_device_does(
    make_plan: Callable[..., Path],
) -> None:
    # A block's input is made before its attention and read again by the residual add after
    # it: cut right after it is made and again half way to that add, and the middle stage
    # relays it (planner/placement.py), forward and backward.
    data_parallel = read_plan(make_plan("gpt2", "--optimizer", "sgd", "--force-data-parallel"))
    ops = data_parallel.stages[0].ops
    graph = load_onnx(ROOT / "tests" / "data" / "executor" / "gpt2.onnx", batch_size=BATCH)
    position = {name: k for k, name in enumerate(ops)}
    made_at = {
        out: position[op.name] for op in graph.ops if op.name in position for out in op.outputs
    }
    spans = [
        (made_at[name], position[op.name])
        for op in graph.ops
        if op.name in position
        for name in op.present_inputs
        if name in made_at
    ]
    made, read = max(spans, key=lambda span: span[1] - span[0])
    plan = three_stages(data_parallel, (made + 1, (made + 1 + read) // 2 + 1))
    options = {"loss": "cross-entropy", "learning_rate": 0.1}
    sharded = runtime(plan, "gpt2", "train", **options)
    relayed = [
        name for name, made in sharded.made_in.items() if made == 0 and 2 in sharded.readers[name]
    ]
    assert relayed  # some tensor of stage 0 is read by stage 2, which gets it from stage 1
    single = runtime(one_device(plan), "gpt2", "train", **options)
    inputs = sharded.random_inputs(seed=3)
    labels = np.random.default_rng(4).integers(0, 64, (BATCH, 8))
    before = single.parameters()
    assert sharded.train_step(inputs, labels) == pytest.approx(
        single.train_step(inputs, labels), rel=TOLERANCE
    )
    after = single.parameters()
    assert _relative(after, before) > 1e-3
    assert _relative(sharded.parameters(), after) < TOLERANCE


# --- hostile inputs (issue 19) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "--inputs: x: expected an array for every graph input, found none"),
        ({"x": np.zeros((BATCH, 32), np.float32), "y": np.zeros(3)}, "y: expected only the graph inputs x, found an extra array"),
        ({"x": np.zeros((BATCH, 31), np.float32)}, "x: expected an array of shape [16, 32], found [16, 31]"),
        ({"x": np.zeros((BATCH, 32), np.int64)}, "x: expected an array of float32, found dtype int64"),
        ({"x": np.full((BATCH, 32), np.nan, np.float32)}, "x: expected finite values, found NaN or infinity"),
    ],
)  # fmt: skip
def test_inputs_are_checked_array_by_array(
    make_plan: Callable[..., Path], arrays: dict[str, np.ndarray], message: str
) -> None:
    plan = runtime(read_plan(make_plan("mlp", "--mode", "infer")), "mlp")
    with pytest.raises(InputError) as error:
        plan.infer(arrays)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: np.savez(p, x=np.array([object()], dtype=object)), "Object arrays cannot be loaded when allow_pickle=False"),
        (lambda p: np.savez(p, x=np.zeros((BATCH, 32), np.float32), extra=np.zeros(1)), "extra: expected only arrays named after graph inputs (x) and labels, found an extra array"),
        (lambda p: np.savez_compressed(p, x=np.zeros((BATCH, 32 * 100), np.float32)), "x: expected an array of shape [16, 32], found 204928 bytes of data"),
        (lambda p: np.save(p, np.zeros((BATCH, 32), np.float32)), "expected an .npz file of inputs, found a single array (.npy)"),
        (lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), "expected an .npz file of inputs"),
    ],
)  # fmt: skip
def test_an_npz_is_refused_before_its_arrays_are_read(
    make_plan: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    write: Callable[[Path], None],
    message: str,
) -> None:
    inputs = tmp_path / "in.npz"
    write(inputs)
    if not inputs.exists():  # np.save appended .npy
        (tmp_path / "in.npz.npy").rename(inputs)
    plan = make_plan("mlp", "--mode", "infer")
    assert main(["run", str(plan), str(DATA / "mlp.onnx"), "--inputs", str(inputs)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_external_data_outside_the_model_folder_is_never_opened(
    make_plan: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    proto = onnx.load(str(DATA / "mlp.onnx"))
    weight = proto.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../etc/passwd")
    model = tmp_path / "model" / "mlp.onnx"
    model.parent.mkdir()
    onnx.save(proto, str(model))
    plan = make_plan("mlp", "--mode", "infer")
    assert main(["run", str(plan), str(model)]) == 2
    err = capsys.readouterr().err
    assert f"graph.initializer[{weight.name}].external_data.location: expected a file inside" in err
