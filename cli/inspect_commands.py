"""`show`, `diff` and `check`: reading plans (issue 3). Registered on the main group.

Each command prints what was asked for on stdout and returns an exit code from
`cli/exit_codes.py`: `diff` exits 1 when a regression gate is exceeded, `check` when it finds a
problem.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cli import exit_codes
from cli.arguments import parse_dims
from cli.diff_view import render_diff
from cli.render import no_color_option, output_console
from cli.show_view import render_plan
from cost_models.cluster_yaml import load_cluster
from planner.graph import Graph, TensorKind, split_batch
from planner.onnx_export import expected_annotations, model_annotations, tensor_ranks
from planner.onnx_import import load_onnx
from plans.check import ClusterFacts, ModelFacts, Problem, check_plan
from plans.chrome_trace import chrome_trace
from plans.diff import Gates, diff_plans, diff_to_dict, gate_failures
from plans.errors import InputError
from plans.io import (
    check_output_path,
    parse_json,
    plan_from_document,
    read_plan,
    read_text,
    write_text_atomically,
)
from plans.onnx_sharding import annotation_problems
from plans.plan import SCHEMA, Plan
from plans.schema import check_version
from plans.summary import op_rows, plan_summary, tensor_rows

_PLAN = click.Path(dir_okay=False)


class _Percentage(click.ParamType):
    """'5%' as 0.05."""

    name = "percentage"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            if not text.endswith("%"):
                raise ValueError(text)
            return float(text[:-1]) / 100
        except ValueError:
            self.fail(f"expected a percentage such as '5%', found {value!r}", param, ctx)


def _json_line(value: object) -> None:
    click.echo(json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False))


@click.command("show", epilog=exit_codes.EPILOG)
@click.argument("plan", type=_PLAN)
@click.option(
    "--ops",
    "ops_pattern",
    is_flag=False,
    flag_value="*",
    default=None,
    metavar="[GLOB]",
    help="List per-op strategies and tensor specs whose name (or LAYER/NAME) matches GLOB, "
    "such as 'h.3/*' (every op when GLOB is left out).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a compact machine summary.")
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False),
    help="Also write the simulated schedule here as a Chrome trace event file (open it in "
    "ui.perfetto.dev or chrome://tracing): one process per stage, forward, backward, "
    "transfer and gradient-sync slices.",
)
@no_color_option
def show_command(
    plan: str, ops_pattern: str | None, as_json: bool, trace_path: str | None, no_color: bool
) -> int:
    """Show PLAN: settings and estimate, stages, transfers and the pipeline timeline."""
    if trace_path is not None:
        check_output_path(trace_path)
    loaded = read_plan(plan)
    if trace_path is not None:
        text = json.dumps(chrome_trace(loaded), sort_keys=True, allow_nan=False)
        write_text_atomically(text + "\n", trace_path)
        click.echo(f"wrote {trace_path}: the schedule of {plan} as a Chrome trace", err=True)
    if as_json:
        _json_line(_show_json(loaded, ops_pattern))
    else:
        render_plan(output_console(no_color), loaded, ops_pattern)
    return exit_codes.OK


def _show_json(plan: Plan, ops_pattern: str | None) -> dict[str, Any]:
    summary = plan_summary(plan)
    if ops_pattern is not None:
        summary["ops"] = [
            {"stage": r.stage, "layer": r.layer, "op": r.op, "strategy": r.strategy}
            for r in op_rows(plan, ops_pattern)
        ]
        summary["tensors"] = [
            {"stage": r.stage, "tensor": r.tensor, "spec": r.spec}
            for r in tensor_rows(plan, ops_pattern)
        ]
    return summary


@click.command("diff", epilog=exit_codes.EPILOG)
@click.argument("old", type=_PLAN)
@click.argument("new", type=_PLAN)
@click.option(
    "--max-slowdown",
    type=_Percentage(),
    metavar="PCT",
    help="Exit 1 when the iteration time grows by more than PCT, such as '5%'.",
)
@click.option(
    "--max-memory-growth",
    type=_Percentage(),
    metavar="PCT",
    help="Exit 1 when the peak memory per GPU grows by more than PCT, such as '10%'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@no_color_option
def diff_command(
    old: str,
    new: str,
    max_slowdown: float | None,
    max_memory_growth: float | None,
    as_json: bool,
    no_color: bool,
) -> int:
    """What changed from plan OLD to plan NEW: settings, stages, strategies, estimate.

    Exit 0 when identical or within the gates, 1 when a gate is exceeded.
    """
    difference = diff_plans(read_plan(old), read_plan(new))
    failures = gate_failures(difference, Gates(max_slowdown, max_memory_growth))
    if as_json:
        _json_line(diff_to_dict(difference, failures))
    else:
        render_diff(output_console(no_color), difference, old, new, failures)
    return exit_codes.CHECK_FAILED if failures else exit_codes.OK


@click.command("check", epilog=exit_codes.EPILOG)
@click.argument("plan", type=_PLAN)
@click.option(
    "--model",
    type=click.Path(dir_okay=False),
    help="The ONNX model: check that every op is in exactly one stage, the specs and the "
    "fingerprint; and, when it carries multi-device annotations (`export --to onnx`), that "
    "they say the plan.",
)
@click.option(
    "--cluster",
    type=click.Path(dir_okay=False),
    help="The cluster YAML: check devices and memory against it (default: the plan's record).",
)
@click.option(
    "--dim",
    "dims",
    multiple=True,
    metavar="NAME=VALUE",
    help="Bind a symbolic dimension of --model other than the batch, as when planning.",
)
def check_command(plan: str, model: str | None, cluster: str | None, dims: tuple[str, ...]) -> int:
    """Validate PLAN: schema, op placement, devices, meshes, specs, memory, fingerprint.

    The first line says which format version was read; then one line per problem on stdout
    (or `ok`); exit 1 if there is any problem.
    """
    document = parse_json(read_text(plan), plan)
    version = check_version(document, plan)
    read = f"{plan}: read {version}"
    click.echo(read if version == SCHEMA else f"{read} (converted to {SCHEMA})")
    graph = _model_graph(model, document, parse_dims(dims)) if model else None
    op_parameters = None
    if graph is not None:
        op_parameters = {
            op.name: tuple(
                dict.fromkeys(
                    n for n in op.present_inputs if graph.tensors[n].kind is TensorKind.PARAMETER
                )
            )
            for op in graph.ops
        }
    try:
        loaded = plan_from_document(document, plan, op_parameters)
    except InputError as error:
        return _report(plan, [f"{error.field}: expected {error.expected}, found {error.found}"])
    problems = check_plan(
        loaded,
        _model_facts(graph, loaded) if graph is not None else None,
        _cluster_facts(cluster, loaded) if cluster else None,
    )
    if model is not None and graph is not None:
        problems += _annotation_problems(model, graph, loaded)
    return _report(plan, [str(problem) for problem in problems])


def _annotation_problems(path: str, graph: Graph, plan: Plan) -> tuple[Problem, ...]:
    """Where the model carries multi-device annotations (`alpa-plan export --to onnx`), how
    they differ from the plan; nothing for a model without any."""
    found = model_annotations(path, graph)
    if not found.configurations and not found.nodes:
        return ()
    ranks = tensor_ranks(graph)
    return annotation_problems(plan, expected_annotations(plan, graph), found, ranks)


def _report(plan: str, problems: list[str]) -> int:
    for problem in problems:
        click.echo(f"{plan}: {problem}")
    if problems:
        return exit_codes.CHECK_FAILED
    click.echo(f"{plan}: ok")
    return exit_codes.OK


def _model_graph(path: str, document: Any, dims: dict[str, int]) -> Graph:
    """The model at the batch size the plan document records (validated later; a document
    without one binds none) and the `--dim` bindings."""
    settings = document.get("settings") if isinstance(document, dict) else None
    batch = settings.get("batch_size") if isinstance(settings, dict) else None
    return load_onnx(path, batch_size=batch if isinstance(batch, int) else None, dims=dims)


def _model_facts(graph: Graph, plan: Plan) -> ModelFacts:
    shapes = split_batch(graph.tensors, plan.settings.microbatches)
    return ModelFacts(
        fingerprint=graph.fingerprint,
        op_names=tuple(op.name for op in graph.ops),
        tensor_shapes={name: tensor.shape for name, tensor in shapes.items()},
    )


def _cluster_facts(path: str, plan: Plan) -> ClusterFacts:
    cluster = load_cluster(path, hosts=plan.cluster.hosts)
    return ClusterFacts(cluster.hosts, cluster.gpus_per_host, cluster.gpu.memory_bytes)


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    for command in (show_command, diff_command, check_command):
        group.add_command(command)
