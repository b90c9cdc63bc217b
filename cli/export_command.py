"""`export`: hand a plan to other tools (issue 17). Registered on the main group.

`alpa-plan export PLAN MODEL --to onnx -o annotated.onnx` writes MODEL with PLAN in ONNX's own
multi-device annotations (`planner/onnx_export.py`; the mapping in docs/ONNX_SHARDING.md);
`alpa-plan check PLAN --model annotated.onnx` reads them back and reports any difference.
"""

from __future__ import annotations

from pathlib import Path

import click

from cli import exit_codes
from cli.arguments import parse_dims
from planner.graph import Graph
from planner.onnx_export import annotated_model
from planner.onnx_import import load_onnx
from plans.errors import InputError
from plans.io import check_output_path, read_plan, write_bytes_atomically
from plans.plan import Plan

TARGETS = ("onnx",)


def model_of_plan(path: str, plan: Plan, plan_source: str, dims: dict[str, int]) -> Graph:
    """The model at the plan's batch size; `InputError` when it is not the model the plan was
    made for."""
    graph = load_onnx(path, batch_size=plan.settings.batch_size, dims=dims)
    if graph.fingerprint != plan.model.fingerprint:
        raise InputError(
            path,
            "",
            f"the model {plan_source} was planned for (fingerprint {plan.model.fingerprint} at "
            f"batch {plan.settings.batch_size})",
            f"fingerprint {graph.fingerprint}",
        )
    return graph


@click.command("export", epilog=exit_codes.EPILOG)
@click.argument("plan", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--to", "target", type=click.Choice(TARGETS), required=True, help="The format.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Where to write (onnx: required; external weight data is referenced by the same "
    "relative paths, so write it beside MODEL).",
)
@click.option(
    "--dim",
    "dims",
    multiple=True,
    metavar="NAME=VALUE",
    help="Bind a symbolic dimension of MODEL other than the batch, as when planning.",
)
def export_command(
    plan: str, model: str, target: str, output: str | None, dims: tuple[str, ...]
) -> int:
    """Write PLAN for MODEL in another tool's form: ONNX multi-device annotations (--to onnx)."""
    if output is None:
        raise InputError("--output", "", f"a path to write the {target} export to", "none")
    check_output_path(output)
    loaded = read_plan(plan)
    graph = model_of_plan(model, loaded, plan, parse_dims(dims))
    annotated = annotated_model(model, loaded, graph)
    write_bytes_atomically(annotated.data, output)
    stages = len(loaded.stages)
    click.echo(
        f"wrote {output}: {model} with {plan} as ONNX multi-device annotations "
        f"({stages} stage{'s' if stages != 1 else ''}, {sum(len(s.ops) for s in loaded.stages)} "
        "ops annotated)",
        err=True,
    )
    if annotated.external_data and Path(output).resolve().parent != Path(model).resolve().parent:
        click.echo(
            f"note: {output} references its weights as {model} does "
            f"({', '.join(annotated.external_data)}, relative to its folder): copy them beside it",
            err=True,
        )
    return exit_codes.OK


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    group.add_command(export_command)
