"""`alpa-plan diff`: what changed between two plans, laid out with rich."""

from __future__ import annotations

from collections.abc import Callable

from rich import box
from rich.console import Console
from rich.table import Table

from cli.show_view import number_ranges
from cost_models.units import format_bytes, format_seconds
from plans.diff import NameChanges, PlanDiff, StageOutline

LISTED_NAMES = 5  # strategies and specs named before "... and N more"
_ESTIMATE_LABELS: dict[str, tuple[str, Callable[[float], str]]] = {
    "iteration_time_s": ("iteration time", format_seconds),
    "samples_per_s": ("samples/s", lambda value: f"{value:.4g}"),
    "tflops_per_gpu": ("TFLOP/s per GPU", lambda value: f"{value:.3g}"),
    "peak_memory_bytes": ("peak memory per GPU", format_bytes),
}


def render_diff(
    console: Console, diff: PlanDiff, old_name: str, new_name: str, failures: tuple[str, ...]
) -> None:
    if diff.identical:
        console.print(f"{old_name} and {new_name} are identical")
        return
    console.print(f"[bold]{old_name} → {new_name}[/]: {', '.join(diff.changed_sections)} differ")
    if diff.fields:
        console.print(_fields(diff))
    if diff.stages:
        console.print(_stages(diff))
    _names(console, "strategies", diff.strategies)
    _names(console, "tensor specs", diff.shardings)
    console.print(_estimate(diff))
    for failure in failures:
        console.print(f"[red]regression:[/] {failure}")


def _fields(diff: PlanDiff) -> Table:
    table = _table("settings", ("field", "old", "new"))
    for change in diff.fields:
        table.add_row(change.path, change.old or "-", change.new or "-")
    return table


def _stages(diff: PlanDiff) -> Table:
    table = _table("stages", ("stage", "old", "new"))
    for change in diff.stages:
        table.add_row(str(change.index), _outline(change.old), _outline(change.new))
    return table


def _outline(outline: StageOutline | None) -> str:
    if outline is None:
        return "-"
    rows, columns = outline.logical_mesh
    hosts = tuple(sorted({host for host, _ in outline.devices}))
    return (
        f"{outline.op_count} ops {outline.first_op}..{outline.last_op}, "
        f"{len(outline.devices)} GPUs on hosts {number_ranges(hosts)}, mesh {rows}x{columns}"
        + (", recomputes" if outline.recompute != "none" else "")
    )


def _names(console: Console, what: str, changes: NameChanges) -> None:
    if not changes.count:
        return
    console.print(
        f"[bold]{what}[/]: {len(changes.changed)} changed, {len(changes.added)} added, "
        f"{len(changes.removed)} removed"
    )
    lines = [
        *(f"{name}: {old} → {new}" for name, old, new in changes.changed),
        *(f"{name}: added" for name in changes.added),
        *(f"{name}: removed" for name in changes.removed),
    ]
    for line in lines[:LISTED_NAMES]:
        console.print(f"  {line}", soft_wrap=True)
    if len(lines) > LISTED_NAMES:
        console.print(f"  ... and {len(lines) - LISTED_NAMES} more (--json lists them all)")


def _estimate(diff: PlanDiff) -> Table:
    table = _table("estimate", ("", "old", "new", "change"))
    for quantity in diff.estimate:
        label, shown = _ESTIMATE_LABELS[quantity.name]
        relative = quantity.relative
        change = "new" if relative is None else f"{relative:+.2%}" if relative else "="
        table.add_row(label, shown(quantity.old), shown(quantity.new), change)
    return table


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        min_width=len(title),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    for column in columns:
        table.add_column(column)
    return table
