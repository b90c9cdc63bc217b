"""`evaluate`: price one Megatron-style configuration exactly (`planner/configuration.py`).

`alpa-plan evaluate MODEL CLUSTER --dp N --tp N --pp N [--vp N] [--cp N]
[--recompute none|selective|full] [--sequence-parallel] [--zero 0|1|2|3] --microbatch N
[--batch-size N] [--json] [-o plan.json]`
prints the configuration's iteration time, throughput, model and hardware TFLOP/s per GPU and
peak memory (with `--json`, one JSON line of those fields); `-o` writes it as a plan for
`show`, `diff` and `check`. Exit 3 when it does not fit the memory budget (the figures are
still printed; no plan is written).
"""

from __future__ import annotations

import json
import os

import click
from rich.table import Table

from cli import exit_codes
from cli.arguments import check_counts, input_options, load_inputs, plan_options
from cli.render import error_console, no_color_option, output_console
from cost_models.units import format_bytes, format_seconds
from planner.configuration import FIXED_RECOMPUTES, ZERO_STRATEGIES, Evaluation, ParallelConfig
from planner.configuration import evaluate_config as price
from planner.options import Recompute
from plans.errors import InfeasibleError
from plans.io import check_output_path, plan_to_json, write_text_atomically


def evaluation_document(evaluation: Evaluation) -> dict[str, object]:
    """The `--json` line: the documented figures, and the configuration."""
    estimate = evaluation.plan.estimate
    return {
        "iteration_time_s": estimate.iteration_time_s,
        "samples_per_s": estimate.samples_per_s,
        "tflops_per_gpu": estimate.tflops_per_gpu,
        "hardware_tflops_per_gpu": evaluation.hardware_tflops_per_gpu,
        "peak_memory_bytes": estimate.peak_memory_bytes,
        "memory_budget_bytes": evaluation.budget_bytes,
        "fits": evaluation.fits,
        "configuration": {
            **evaluation.config.record(),
            "microbatches": evaluation.plan.settings.microbatches,
        },
    }


def _render(evaluation: Evaluation, no_color: bool) -> None:
    plan, estimate = evaluation.plan, evaluation.plan.estimate
    console = output_console(no_color)
    config = evaluation.config
    console.print(
        f"{plan.model.name} on {plan.cluster.name} ({plan.cluster.hosts} x "
        f"{plan.cluster.gpus_per_host} {plan.cluster.gpu.name}), batch {plan.settings.batch_size}: "
        f"dp {config.dp}, tp {config.tp}, pp {config.pp}, vp {config.vp}"
        + (f", cp {config.cp}" if config.cp > 1 else "")
        + ", microbatch "
        f"{config.microbatch_size} ({plan.settings.microbatches} microbatches), recompute "
        f"{config.recompute}, ZeRO {config.zero}"
        + (", sequence parallel" if config.sequence_parallel else ""),
        highlight=False,
    )
    table = Table(show_edge=False, pad_edge=False, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("iteration", format_seconds(estimate.iteration_time_s))
    table.add_row("samples/s", f"{estimate.samples_per_s:.4g}")
    table.add_row("TFLOP/s per GPU (model)", f"{estimate.tflops_per_gpu:.3g}")
    table.add_row("TFLOP/s per GPU (hardware)", f"{evaluation.hardware_tflops_per_gpu:.3g}")
    table.add_row(
        "peak memory per GPU",
        f"{format_bytes(estimate.peak_memory_bytes)} of {format_bytes(evaluation.budget_bytes)}",
    )
    table.add_row("fits", "yes" if evaluation.fits else "no")
    console.print(table)


@click.command("evaluate", epilog=exit_codes.EPILOG)
@input_options
@click.option("--dp", type=int, required=True, help="Data-parallel degree.")
@click.option("--tp", type=int, required=True, help="Tensor-parallel degree (inside a stage).")
@click.option("--pp", type=int, required=True, help="Pipeline stages (device groups).")
@click.option(
    "--vp", type=int, default=1, show_default=True,
    help="Chunks of layers per device group (interleaved 1F1B when above 1).",
)  # fmt: skip
@click.option(
    "--cp", type=int, default=1, show_default=True,
    help="Context-parallel degree: the token sequence split this many ways inside each stage "
    "(Megatron's --context-parallel-size); needs --dp 1 or --tp 1.",
)  # fmt: skip
@click.option(
    "--microbatch",
    "microbatch_size",
    type=int,
    required=True,
    help="Samples per microbatch per data-parallel replica (Megatron's --micro-batch-size).",
)
@click.option(
    "--recompute",
    type=click.Choice([str(r) for r in FIXED_RECOMPUTES]),
    default="none",
    show_default=True,
    help="Recompute in the backward, in every stage: whole layers (full, Megatron's "
    "--recompute-granularity full), the attention cores (selective), or none.",
)
@click.option(
    "--sequence-parallel",
    is_flag=True,
    help="Megatron-LM's sequence parallelism: the row-parallel matmuls may reduce-scatter "
    "their partial sums (onto the sequence) instead of all-reducing them, the LayerNorm and "
    "residual regions running split.",
)
@click.option(
    "--zero",
    type=click.Choice([str(z) for z in ZERO_STRATEGIES]),
    default="0",
    show_default=True,
    help="ZeRO stage over the data-parallel axis: 0 none, 1 optimizer state sharded (Megatron's "
    "distributed optimizer), 2 gradients too, 3 the weights too (FSDP).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON line.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the configuration's plan here (when it fits).",
)
@no_color_option
def evaluate_command(
    model: str,
    cluster: str,
    batch_size: int | None,
    dims: tuple[str, ...],
    hosts: int | None,
    dtype: str,
    optimizer: str,
    schedule: str,
    memory_fraction: float,
    ilp_time_limit: float,
    jobs: int | None,
    calibration: str | None,
    dp: int,
    tp: int,
    pp: int,
    vp: int,
    cp: int,
    microbatch_size: int,
    recompute: str,
    sequence_parallel: bool,
    zero: str,
    as_json: bool,
    output: str | None,
    no_color: bool,
) -> int:
    """Price one Megatron-style configuration of MODEL on CLUSTER (training): pp stages of
    equal layer counts, each on a dp x tp logical mesh, by the planner's own cost model."""
    check_counts(click.get_current_context().params)
    if output:
        check_output_path(output)  # before pricing, which may take minutes
    graph, cluster_spec, measured = load_inputs(
        model, cluster, batch_size, dims, hosts, dtype, calibration
    )
    flags = dict(click.get_current_context().params)
    flags["recompute"] = "auto"  # the configuration's own recompute is `config.recompute`
    options = plan_options(flags, measured)
    config = ParallelConfig(
        dp, tp, pp, microbatch_size, vp, Recompute(recompute), int(zero), sequence_parallel, cp
    )
    evaluation = price(graph, cluster_spec, options, config, jobs or os.cpu_count() or 1)
    if as_json:
        click.echo(json.dumps(evaluation_document(evaluation), sort_keys=True, allow_nan=False))
    else:
        _render(evaluation, no_color)
    if not evaluation.fits:
        raise InfeasibleError(
            f"the configuration needs {format_bytes(evaluation.plan.estimate.peak_memory_bytes)} "
            f"per GPU, over the budget of {format_bytes(evaluation.budget_bytes)}"
            + ("; no plan written" if output else "")
        )
    if output:
        write_text_atomically(plan_to_json(evaluation.plan), output)
        error_console().print(f"wrote {output}", highlight=False)
    return exit_codes.OK


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    group.add_command(evaluate_command)
