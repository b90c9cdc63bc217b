"""`compare`: the planner's plan against the hand-written baselines (`planner/baselines.py`).

`alpa-plan compare MODEL CLUSTER [options]` plans MODEL, builds every baseline as an explicit
plan priced by the same cost model, and prints one table on stdout (or, with `--json`, one JSON
line: `{"auto": {...}, "baselines": {name: {...}}}`). `--write-plans DIR` saves the plans that
fit as `DIR/auto.plan.json` and `DIR/<baseline>.plan.json`, for `show`, `diff` and `check`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import click
from rich.table import Table

from cli import exit_codes
from cli.arguments import check_counts, input_options, load_inputs, plan_options
from cli.render import error_console, no_color_option, output_console, progress_bar
from cost_models.units import format_bytes, format_seconds
from planner.baselines import BASELINES, Baseline, all_baselines
from planner.search import plan as make_plan
from plans.errors import InputError
from plans.io import plan_to_json, write_text_atomically
from plans.plan import JsonValue, Plan


def _entry(plan: Plan | None, fits: bool, parameters: dict[str, JsonValue]) -> dict[str, object]:
    """One row of the JSON output; the estimate's fields are null without a plan."""
    estimate = plan.estimate if plan is not None else None
    return {
        "iteration_time_s": estimate.iteration_time_s if estimate else None,
        "samples_per_s": estimate.samples_per_s if estimate else None,
        "tflops_per_gpu": estimate.tflops_per_gpu if estimate else None,
        "peak_memory_bytes": estimate.peak_memory_bytes if estimate else None,
        "fits": fits,
        "parameters": parameters,
    }


def auto_parameters(plan: Plan) -> dict[str, JsonValue]:
    """What the search chose: microbatches, and per stage its GPUs and logical mesh."""
    return {
        "microbatches": plan.settings.microbatches,
        "stages": len(plan.stages),
        "stage_gpus": tuple(len(stage.devices) for stage in plan.stages),
        "logical_meshes": tuple(stage.logical_mesh for stage in plan.stages),
    }


def comparison_document(auto: Plan, baselines: Sequence[Baseline]) -> dict[str, object]:
    return {
        "auto": _entry(auto, True, _plain(auto_parameters(auto))),
        "baselines": {
            b.name: {
                **_entry(b.plan, b.fits, _plain(b.parameters)),
                **({"note": b.note} if b.note else {}),
            }
            for b in baselines
        },
    }


def _plain(parameters: object) -> dict[str, JsonValue]:
    """Tuples as lists, for JSON."""
    result: dict[str, JsonValue] = json.loads(json.dumps(parameters))
    return result


def _describe(parameters: dict[str, JsonValue]) -> str:
    shown = {k: v for k, v in parameters.items() if k not in ("configurations_tried",)}
    parts = []
    for key, value in shown.items():
        text = json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else value
        parts.append(f"{key}={text}")
    return " ".join(str(p) for p in parts)


def _render(auto: Plan, baselines: Sequence[Baseline], no_color: bool, seconds: float) -> None:
    console = output_console(no_color)
    table = Table(show_edge=False, pad_edge=False)
    for column, justify in (
        ("plan", "left"),
        ("iteration", "right"),
        ("samples/s", "right"),
        ("TFLOP/s/GPU", "right"),
        ("peak mem", "right"),
        ("fits", "left"),
        ("auto speed-up", "right"),
        ("parameters", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    auto_s = auto.estimate.iteration_time_s
    rows: list[tuple[str, Plan | None, bool, dict[str, JsonValue]]] = [
        ("auto", auto, True, _plain(auto_parameters(auto)))
    ]
    rows += [(b.name, b.plan, b.fits, _plain(b.parameters)) for b in baselines]
    for name, plan, fits, parameters in rows:
        if plan is None:
            table.add_row(name, "-", "-", "-", "-", "no", "-", _describe(parameters))
            continue
        e = plan.estimate
        speedup = e.iteration_time_s / auto_s if auto_s > 0 else math.nan
        table.add_row(
            name,
            format_seconds(e.iteration_time_s),
            f"{e.samples_per_s:.4g}",
            f"{e.tflops_per_gpu:.3g}",
            format_bytes(e.peak_memory_bytes),
            "yes" if fits else "no",
            f"{speedup:.2f}x" if name != "auto" else "",
            _describe(parameters),
        )
    console.print(
        f"{auto.model.name} on {auto.cluster.name} ({auto.cluster.hosts} x "
        f"{auto.cluster.gpus_per_host} {auto.cluster.gpu.name}), batch {auto.settings.batch_size}"
    )
    console.print(table)
    console.print(f"(compared in {seconds:.1f} s; one cost model for every row)")


def _check_plans_folder(directory: str) -> None:
    """`InputError` unless `directory` is a writable folder or can be made in one."""
    folder = Path(directory)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(directory, "", "a folder for the plans", f"{str(existing)!r}, a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(
            directory, "", "a writable folder for the plans", f"{str(existing)!r}, not writable"
        )


def _write_plans(directory: str, auto: Plan, baselines: Sequence[Baseline]) -> list[str]:
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            directory, "", "a folder for the plans", error.strerror or type(error).__name__
        ) from None
    written = []
    for name, plan in (("auto", auto), *((b.name, b.plan) for b in baselines if b.fits)):
        assert plan is not None
        path = folder / f"{name}.plan.json"
        write_text_atomically(plan_to_json(plan), str(path))
        written.append(str(path))
    return written


@click.command("compare", epilog=exit_codes.EPILOG)
@input_options
@click.option(
    "--microbatches",
    type=click.IntRange(min=1),
    help="Microbatches per iteration for every plan. Default: each plan searches the divisors "
    "of the batch, coarse to fine, as the planner does.",
)
@click.option(
    "--baseline",
    "only",
    multiple=True,
    type=click.Choice(BASELINES),
    help="Compare against this baseline only (repeatable). Default: all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as one JSON line.")
@click.option(
    "--write-plans",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write the auto plan and every baseline plan that fits to DIR/<name>.plan.json.",
)
@no_color_option
def compare_command(
    model: str,
    cluster: str,
    batch_size: int | None,
    dims: tuple[str, ...],
    hosts: int | None,
    dtype: str,
    optimizer: str,
    microbatches: int | None,
    schedule: str,
    memory_fraction: float,
    ilp_time_limit: float,
    jobs: int | None,
    calibration: str | None,
    only: tuple[str, ...],
    as_json: bool,
    write_plans: str | None,
    no_color: bool,
) -> int:
    """Plan MODEL on CLUSTER and compare it with hand-written plans (data parallel, ZeRO-2/3,
    Megatron-LM 3D, DeepSpeed, intra-op only, inter-op only), all priced by the same cost
    model. Training only."""
    started = time.perf_counter()
    flags = click.get_current_context().params
    check_counts(flags)
    if write_plans:
        _check_plans_folder(write_plans)  # before planning, which may take minutes
    graph, cluster_spec, measured = load_inputs(
        model, cluster, batch_size, dims, hosts, dtype, calibration
    )
    options = plan_options(flags, measured)
    workers = jobs or os.cpu_count() or 1
    with progress_bar() as progress:
        auto = make_plan(graph, cluster_spec, options, progress, workers)
        baselines = all_baselines(
            graph, cluster_spec, options, jobs=workers, progress=progress, only=only or BASELINES
        )
    if write_plans:
        for path in _write_plans(write_plans, auto, baselines):
            error_console().print(f"wrote {path}", highlight=False)
    if as_json:
        click.echo(
            json.dumps(
                comparison_document(auto, baselines),
                sort_keys=True,
                separators=(",", ":"),
                allow_nan=False,
            )
        )
    else:
        _render(auto, baselines, no_color, time.perf_counter() - started)
    return exit_codes.OK


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    group.add_command(compare_command)
