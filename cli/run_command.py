"""`run`: apply a plan with the executor (issue 8). Registered on the main group.

The executor (and jax) is imported only when `run` runs, so planning never needs it; without the
`executor` extra, `run` says which extra to install. The CLI reads the model through the planner's
importer to give the executor plain facts (fingerprint, op names and outputs) that the plan is
checked against: the executor itself never imports the planner.
"""

from __future__ import annotations

import sys

import click

from cli import exit_codes
from cli.arguments import parse_dims
from cli.extras import missing_executor_extra
from cli.render import error_console
from cost_models.units import format_bytes, format_seconds
from planner.onnx_import import load_onnx
from plans.io import read_plan


@click.command("run", epilog=exit_codes.EPILOG)
@click.argument("plan", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Training iterations, or inference passes over the batch.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of random inputs, labels and (graph-only models) weights.",
)
@click.option(
    "--mode",
    type=click.Choice(["train", "infer"]),
    help="Train or run inference (default: the plan's mode).",
)
@click.option(
    "--loss",
    type=click.Choice(["mean", "cross-entropy"]),
    default="mean",
    show_default=True,
    help="Training loss on the first graph output: its mean, or cross-entropy of "
    "logits (last axis) against labels.",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Of the plan's optimizer (Adam or SGD).",
)
@click.option(
    "--precision",
    type=click.Choice(["plan", "model"]),
    default="plan",
    show_default=True,
    help="Compute in the plan's dtype (float16/bfloat16: mixed precision, float32 weights "
    "at rest), or in the model's own dtypes.",
)
@click.option(
    "--inputs",
    "inputs_path",
    type=click.Path(dir_okay=False),
    help="An .npz with an array per graph input (global batch), and `labels`.",
)
@click.option(
    "--outputs",
    "outputs_path",
    type=click.Path(dir_okay=False),
    help="Write an .npz: the graph outputs by name (infer) or `loss` per step (train).",
)
@click.option(
    "--dim",
    "dims",
    multiple=True,
    metavar="NAME=VALUE",
    help="Bind a symbolic dimension other than the batch (as when planning).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Inference: compare the outputs with onnxruntime on the same weights.",
)
@click.option(
    "--coordinator",
    metavar="HOST:PORT",
    help="Multi-host: address of process 0 (else $ALPA_PLAN_COORDINATOR).",
)
@click.option(
    "--num-processes",
    type=click.IntRange(min=1),
    help="Multi-host: one process per host (else $ALPA_PLAN_NUM_PROCESSES).",
)
@click.option(
    "--process-id",
    type=click.IntRange(min=0),
    help="Multi-host: this process, = the plan's host id (else $ALPA_PLAN_PROCESS_ID).",
)
def run_command(
    plan: str,
    model: str,
    steps: int,
    seed: int,
    mode: str | None,
    loss: str,
    learning_rate: float,
    precision: str,
    inputs_path: str | None,
    outputs_path: str | None,
    dims: tuple[str, ...],
    check: bool,
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
) -> int:
    """Run MODEL (ONNX) as PLAN (JSON) says, with JAX/XLA: on GPUs, or on CPU virtual
    devices."""
    bound = parse_dims(dims)
    the_plan = read_plan(plan)
    graph = load_onnx(model, batch_size=the_plan.settings.batch_size, dims=bound)
    devices = len({device for stage in the_plan.stages for device in stage.devices})
    try:
        from executor.environment import use_host_devices

        use_host_devices(devices)  # before jax starts: CPU runs get one virtual device per GPU
        from executor import distributed
        from executor.run import RunRequest
        from executor.run import run as run_plan
        from executor.stages import ModelFacts
    except ModuleNotFoundError as error:
        raise missing_executor_extra("run", error) from None
    facts = ModelFacts(
        fingerprint=graph.fingerprint,
        op_outputs={op.name: op.outputs for op in graph.ops},
        batch_inputs=frozenset(
            name for name in graph.inputs if graph.tensors[name].batch_dim is not None
        ),
    )
    console = error_console()
    report = run_plan(
        RunRequest(
            plan_path=plan,
            model_path=model,
            mode=mode,
            steps=steps,
            seed=seed,
            loss=loss,
            learning_rate=learning_rate,
            precision=precision,
            inputs_path=inputs_path,
            outputs_path=outputs_path,
            dims=bound,
            check=check,
            cluster=distributed.Cluster(coordinator, num_processes, process_id),
        ),
        facts=facts,
        progress=lambda line: console.print(line, highlight=False),
    )
    console.print(
        f"{report.mode}: {report.stages} stage(s) on {report.devices} {report.platform} "
        f"device(s), {report.processes} process(es); step "
        f"{format_seconds(report.steady_step_s)} (the plan's schedule simulated: "
        f"{format_seconds(report.estimated_iteration_s)})",
        highlight=False,
    )
    if report.peak_memory_bytes is not None:
        console.print(
            f"peak memory {format_bytes(report.peak_memory_bytes)} per device (plan estimate "
            f"{format_bytes(report.estimated_peak_memory_bytes)})",
            highlight=False,
        )
    for stage in report.collectives:
        compiled = ", ".join(f"{kind} x{count}" for kind, count in sorted(stage.compiled.items()))
        predicted = ", ".join(sorted(stage.predicted)) or "none"
        console.print(
            f"stage {stage.stage}: collectives compiled: {compiled or 'none'}; plan predicts: "
            f"{predicted}",
            highlight=False,
        )
    for sync in report.gradient_sync:
        console.print(sync.describe(), highlight=False, markup=False)
    if report.losses:
        console.print(f"loss: {report.losses[0]:.6g} -> {report.losses[-1]:.6g}", highlight=False)
    if report.reference_error is not None:
        console.print(
            f"largest relative difference from onnxruntime: {report.reference_error:.3g}",
            highlight=False,
        )
    if report.outputs_written:
        console.print(f"wrote {report.outputs_written}", highlight=False)
    sys.stderr.flush()
    return exit_codes.OK


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    group.add_command(run_command)
