"""The `alpa-plan` command line: parse, call, render, pick the exit code.

`alpa-plan MODEL CLUSTER [options]` is short for `alpa-plan plan MODEL CLUSTER [options]`.
Messages and progress go to stderr; stdout carries only what was asked for (`-o -`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

import click
from rich.markup import escape

from cli import (
    compare_command,
    evaluate_command,
    exit_codes,
    export_command,
    inspect_commands,
    ops_command,
    profile_command,
    run_command,
)
from cli.arguments import check_counts, input_options, load_inputs, plan_options
from cli.render import error_console, print_plan_summary, progress_bar
from planner import __version__
from planner.mesh_shapes import SUBMESH_SPACES
from planner.options import MODES, OBJECTIVES, RECOMPUTES
from planner.search import plan as make_plan
from plans.errors import InfeasibleError, InputError
from plans.io import check_output_path, plan_to_json, write_text_atomically

_DEFAULT_COMMAND = "plan"


class _PlanByDefault(click.Group):
    """A group whose first argument, when it is not a command, starts the `plan` command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [_DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=_PlanByDefault,
    epilog=exit_codes.EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="alpa-plan")
def cli() -> None:
    """Plan how to train or serve an ONNX model on a GPU cluster.

    \b
    alpa-plan MODEL.onnx CLUSTER.yaml [options]   plan (same as `alpa-plan plan ...`)
    """


@cli.command("plan", epilog=exit_codes.EPILOG)
@input_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the JSON plan ('-' for stdout). Default: MODEL's stem + .plan.json "
    "in the current directory.",
)
@click.option("--mode", type=click.Choice(MODES), default="train", show_default=True)
@click.option(
    "--microbatches",
    type=click.IntRange(min=1),
    help="Microbatches per iteration. Default: searched over a few divisors of the batch "
    "(1 with --intra-only).",
)
@click.option(
    "--intra-only",
    is_flag=True,
    help="Alpa's ShardParallel: one stage on the whole cluster, sharded by the ILP. Default: "
    "the full search (pipeline stages on submeshes, each sharded by the ILP).",
)
@click.option("--layers", type=click.IntRange(min=1), help="Number of layers to cluster ops into.")
@click.option(
    "--submesh-space",
    type=click.Choice(SUBMESH_SPACES),
    default="power-of-two",
    show_default=True,
    help="In-host submeshes of 2^k GPUs, or of every size that divides a host.",
)
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="throughput",
    show_default=True,
    help="Inference only: the slowest stage (throughput) or the sum of stages (latency).",
)
@click.option(
    "--recompute",
    type=click.Choice(RECOMPUTES),
    default="auto",
    show_default=True,
    help="Recompute activations in the backward (activation checkpointing): searched per "
    "stage (auto), never, only the attention cores (selective: keep what they read, rerun "
    "their forward), or whole layers in every stage (full: keep only layer inputs).",
)
@click.option("--remat", is_flag=True, help="The same as --recompute full.")
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="NAME=VALUE",
    help="Fix part of the configuration, repeatable: dp=N, tp=N (every stage's logical mesh "
    "dp x tp, batch on dp), pp=N (device groups), vp=N (chunks per group), stages=N, "
    "microbatch=N (samples per microbatch), recompute=none|selective|full|auto.",
)
@click.option(
    "--zero/--no-zero",
    default=None,
    help="Shard optimizer state and gradients over the axes where a parameter is replicated "
    "(always with --zero, never with --no-zero; by default the ILP decides per op).",
)
@click.option("--force-data-parallel", is_flag=True, help="Split only the batch, over every GPU.")
@click.option("--no-all-to-all", is_flag=True, help="Reshard with all-gather + slice instead.")
@click.option("--no-all-gather", is_flag=True, help="Forbid reshardings that all-gather.")
@click.option(
    "--force-batch-dim-to-mesh-dim",
    type=click.Choice(["0", "1"]),
    help="Put the batch on this logical mesh axis.",
)
def plan_command(
    model: str,
    cluster: str,
    output: str | None,
    batch_size: int | None,
    dims: tuple[str, ...],
    hosts: int | None,
    mode: str,
    dtype: str,
    optimizer: str,
    microbatches: int | None,
    schedule: str,
    memory_fraction: float,
    intra_only: bool,
    layers: int | None,
    submesh_space: str,
    objective: str,
    recompute: str,
    remat: bool,
    pins: tuple[str, ...],
    jobs: int | None,
    ilp_time_limit: float,
    zero: bool | None,
    force_data_parallel: bool,
    no_all_to_all: bool,
    no_all_gather: bool,
    force_batch_dim_to_mesh_dim: str | None,
    calibration: str | None,
) -> int:
    """Plan MODEL (ONNX) on CLUSTER (YAML) and write the plan as JSON."""
    started = time.perf_counter()
    flags = click.get_current_context().params
    check_counts(flags)
    target = output or f"{os.path.splitext(os.path.basename(model))[0]}.plan.json"
    if target != "-":
        check_output_path(target)  # before the search, which may take minutes
    graph, cluster_spec, measured = load_inputs(
        model, cluster, batch_size, dims, hosts, dtype, calibration
    )
    options = plan_options(flags, measured)
    with progress_bar() as progress:
        result = make_plan(graph, cluster_spec, options, progress, jobs or os.cpu_count() or 1)
    text = plan_to_json(result)
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomically(text, target)
    for warning in [*graph.warnings, *result.search.warnings]:
        error_console().print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    print_plan_summary(
        result, written_to=None if target == "-" else target, seconds=time.perf_counter() - started
    )
    return exit_codes.OK


inspect_commands.register(cli)
run_command.register(cli)
profile_command.register(cli)
compare_command.register(cli)
evaluate_command.register(cli)
export_command.register(cli)
ops_command.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script passes it to `sys.exit`)."""
    console = error_console()
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="alpa-plan",
            standalone_mode=False,
        )
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as error:
        error.show()
        return exit_codes.BAD_INPUT
    except click.exceptions.Abort:
        console.print("aborted", highlight=False)
        return exit_codes.BAD_INPUT
    except InputError as error:
        console.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        return exit_codes.BAD_INPUT
    except InfeasibleError as error:
        console.print(
            f"[red]does not fit:[/] {escape(str(error))}", highlight=False, soft_wrap=True
        )
        return exit_codes.INFEASIBLE
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get("ALPA_PLAN_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/] {type(error).__name__}: {escape(str(error))} "
            "(a bug in alpa-plan; rerun with ALPA_PLAN_DEBUG=1 for the traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        return exit_codes.INTERNAL_ERROR
    return int(result) if isinstance(result, int) else exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
