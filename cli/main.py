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

from cli import exit_codes
from cli.render import error_console, print_plan_summary
from cost_models.cluster_yaml import load_cluster
from planner import __version__
from planner.onnx_import import load_onnx
from planner.options import DTYPES, MODES, SCHEDULES, PlanOptions
from planner.search import plan as make_plan
from plans.errors import InfeasibleError, InputError
from plans.io import plan_to_json, write_text_atomically

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


def _parse_dims(values: Sequence[str]) -> dict[str, int]:
    dims: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name or not number.strip().isdigit():
            raise InputError("--dim", "", "NAME=VALUE with a positive integer VALUE", repr(value))
        dims[name] = int(number)
    return dims


@cli.command("plan", epilog=exit_codes.EPILOG)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("cluster", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the JSON plan ('-' for stdout). Default: MODEL's stem + .plan.json "
    "in the current directory.",
)
@click.option("--batch-size", type=int, help="Global batch size (binds the model's batch).")
@click.option(
    "--dim", "dims", multiple=True, metavar="NAME=VALUE", help="Bind a symbolic dimension."
)
@click.option("--hosts", type=int, help="Override the cluster's number of hosts.")
@click.option("--mode", type=click.Choice(MODES), default="train", show_default=True)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="float16",
    show_default=True,
    help="Training dtype; 16-bit training keeps float32 master weights.",
)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--microbatches", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default="1f1b", show_default=True)
@click.option(
    "--memory-fraction",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=0.9,
    show_default=True,
    help="Share of GPU memory the plan may use.",
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
    microbatches: int,
    schedule: str,
    memory_fraction: float,
) -> int:
    """Plan MODEL (ONNX) on CLUSTER (YAML) and write the plan as JSON."""
    started = time.perf_counter()
    cluster_spec = load_cluster(cluster, hosts=hosts)
    if dtype not in cluster_spec.gpu.dtypes:
        raise InputError(
            cluster,
            f"gpu.flops.{dtype}",
            f"a peak FLOP/s for the training dtype {dtype} (or pick --dtype from "
            f"{', '.join(d for d in cluster_spec.gpu.dtypes if d in DTYPES)})",
            "nothing",
        )
    graph = load_onnx(model, batch_size=batch_size, dims=_parse_dims(dims))
    options = PlanOptions(
        mode=mode,
        dtype=dtype,
        optimizer=optimizer,
        microbatches=microbatches,
        schedule=schedule,
        memory_fraction=memory_fraction,
    )
    result = make_plan(graph, cluster_spec, options)
    text = plan_to_json(result)
    target = output or f"{os.path.splitext(os.path.basename(model))[0]}.plan.json"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomically(text, target)
    for warning in graph.warnings:
        error_console().print(f"[yellow]warning:[/] {warning}", highlight=False)
    print_plan_summary(
        result, written_to=None if target == "-" else target, seconds=time.perf_counter() - started
    )
    return exit_codes.OK


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
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        return exit_codes.BAD_INPUT
    except InfeasibleError as error:
        console.print(f"[red]does not fit:[/] {error}", highlight=False, soft_wrap=True)
        return exit_codes.INFEASIBLE
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get("ALPA_PLAN_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/] {type(error).__name__}: {error} "
            "(a bug in alpa-plan; rerun with ALPA_PLAN_DEBUG=1 for the traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        return exit_codes.INTERNAL_ERROR
    return int(result) if isinstance(result, int) else exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
