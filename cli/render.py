"""Terminal rendering with rich: consoles, and the summary `plan` prints on stderr."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cost_models.units import format_bytes, format_seconds
from plans.plan import Plan


def error_console() -> Console:
    """A console on stderr (made per call, so it follows the current sys.stderr)."""
    return Console(stderr=True, highlight=False)


PIPED_WIDTH = 120  # columns when stdout is a file or a pipe (CI logs do not wrap)


# The `--no-color` flag of every command that prints to stdout (`output_console`'s switch).
no_color_option = click.option(
    "--no-color", is_flag=True, help="Plain text (also when NO_COLOR is set or not a terminal)."
)


def output_console(no_color: bool = False) -> Console:
    """A console on stdout for what the user asked to see. Plain text, PIPED_WIDTH wide, when
    stdout is not a terminal; no colour or other styling with `no_color` or NO_COLOR set."""
    plain = no_color or bool(os.environ.get("NO_COLOR"))
    console = Console(highlight=False, color_system=None if plain else "auto")
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
    return console


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on stderr (shown only on a terminal), as a `progress(what, done, total)`
    callback for the planner."""
    console = error_console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield update


def print_plan_summary(plan: Plan, written_to: str | None, seconds: float) -> None:
    console = error_console()
    cluster = plan.cluster
    settings = plan.settings
    console.print(
        f"[bold]{plan.model.name}[/]: {plan.model.parameters / 1e9:.3g} B parameters, "
        f"{settings.mode} in {settings.dtype} with {settings.optimizer}, batch "
        f"{settings.batch_size} in {settings.microbatches} microbatch"
        f"{'es' if settings.microbatches > 1 else ''}"
    )
    console.print(
        f"on [bold]{cluster.name}[/]: {cluster.hosts} x {cluster.gpus_per_host} "
        f"{cluster.gpu.name} ({format_bytes(cluster.gpu.memory_bytes)})"
    )
    table = Table(show_edge=False, pad_edge=False)
    recomputes = any(stage.recompute != "none" for stage in plan.stages)
    columns = (
        "stage", "GPUs", "mesh", *(("recompute",) if recomputes else ()), "forward", "backward",
        "comm", "grad sync", "opt step",
    )  # fmt: skip
    for column in (*columns, "peak mem"):
        table.add_column(column, justify="right")
    for stage in plan.stages:
        table.add_row(
            str(stage.index),
            str(len(stage.devices)),
            f"{stage.logical_mesh[0]}x{stage.logical_mesh[1]}",
            *((stage.recompute,) if recomputes else ()),
            format_seconds(stage.time.forward_s),
            format_seconds(stage.time.backward_s),
            format_seconds(stage.time.communication_s),
            format_seconds(stage.time.gradient_sync_s),
            format_seconds(stage.time.optimizer_step_s),
            format_bytes(stage.memory.peak_bytes),
        )
    console.print(table)
    estimate = plan.estimate
    console.print(
        f"estimate: [bold]{format_seconds(estimate.iteration_time_s)}[/] per iteration, "
        f"{estimate.samples_per_s:.4g} samples/s, {estimate.tflops_per_gpu:.3g} TFLOP/s per GPU, "
        f"peak memory {format_bytes(estimate.peak_memory_bytes)}"
    )
    where = f"wrote {written_to}" if written_to else "wrote the plan to stdout"
    console.print(f"{where} (planned in {seconds:.1f} s)")
