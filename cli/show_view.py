"""`alpa-plan show`: a plan drawn in the terminal with rich.

Header, stage table, cross-stage transfers, the pipeline timeline, and (with `--ops`) the per-op
strategies and per-tensor specs. The numbers come from `plans/summary.py` and
`plans/timeline.py`; this module only lays them out.
"""

from __future__ import annotations

import os
from statistics import median

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cost_models.units import format_bytes, format_flops_rate, format_seconds
from plans.plan import Plan, Settings, Stage
from plans.summary import hosts_of, model_flops_utilisation, op_rows, tensor_rows
from plans.timeline import BACKWARD, FORWARD, STEP, SYNC, Slice, Timeline, pipeline_timeline

MEMORY_BAR_WIDTH = 10
TIMELINE_MIN_WIDTH = 20
MIN_BLOCK_COLUMNS = 4  # below this, the timeline shows only the pipeline's start and end
_GAP = " ⋯ "  # between the two windows of a long timeline
_LABEL_WIDTH = 10  # "stage 12  "
# (fill character, style) of each kind of timeline block; the characters read without colour.
_BLOCK_LOOK = {
    FORWARD: (">", "black on cyan"),
    BACKWARD: ("<", "black on green"),
    SYNC: ("#", "black on magenta"),
    STEP: ("=", "black on yellow"),
}


def render_plan(console: Console, plan: Plan, ops_pattern: str | None) -> None:
    console.print(header(plan))
    if ops_pattern is not None:
        render_ops(console, plan, ops_pattern)
        return
    console.print(stage_table(plan))
    console.print(transfer_table(plan) if plan.transfers else "no cross-stage transfers")
    render_timeline(console, pipeline_timeline(plan))


def header(plan: Plan) -> Table:
    settings, estimate, cluster = plan.settings, plan.estimate, plan.cluster
    peak_flops = cluster.gpu.peak_flops.get(settings.dtype)
    mfu = model_flops_utilisation(plan)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("model", f"{plan.model.name}, {_count(plan.model.parameters)} parameters")
    grid.add_row(
        "cluster",
        f"{cluster.name}: {cluster.hosts} x {cluster.gpus_per_host} {cluster.gpu.name} "
        f"({format_bytes(cluster.gpu.memory_bytes)})",
    )
    grid.add_row(
        "settings",
        f"{settings.mode}, {settings.dtype}, {settings.optimizer}; batch {settings.batch_size} "
        f"in {settings.microbatches} x {settings.microbatch_size}; schedule {settings.schedule}"
        + _schedule_details(settings),
    )
    grid.add_row(
        "estimate",
        f"[bold]{format_seconds(estimate.iteration_time_s)}[/] per iteration, "
        f"{estimate.samples_per_s:.4g} samples/s",
    )
    utilisation = (
        "MFU unknown (no peak for this dtype)"
        if mfu is None or peak_flops is None
        else f"MFU {mfu:.1%} of {format_flops_rate(peak_flops)}"
    )
    grid.add_row("per GPU", f"{estimate.tflops_per_gpu:.3g} TFLOP/s, {utilisation}")
    return grid


def stage_table(plan: Plan) -> Table:
    table = _table("stages")
    table.add_column("stage", justify="right", no_wrap=True)
    for column in ("layers", "ops", "GPUs", "hosts", "mesh"):
        table.add_column(column, justify="right", overflow="ellipsis")
    recomputes = any(stage.recompute != "none" for stage in plan.stages)
    if recomputes:  # the column only where some stage recomputes
        table.add_column("recompute", no_wrap=True)
    for column in ("fwd", "bwd", "comm", "grad sync", "opt step"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("memory/GPU", no_wrap=True)
    for stage in plan.stages:
        table.add_row(
            str(stage.index),
            _layers(stage),
            str(len(stage.ops)),
            str(len(stage.devices)),
            number_ranges(hosts_of(stage)),
            f"{stage.logical_mesh[0]}x{stage.logical_mesh[1]}",
            *((stage.recompute,) if recomputes else ()),
            format_seconds(stage.time.forward_s),
            format_seconds(stage.time.backward_s),
            format_seconds(stage.time.communication_s),
            format_seconds(stage.time.gradient_sync_s),
            format_seconds(stage.time.optimizer_step_s),
            memory_bar(stage.memory.peak_bytes, plan.cluster.gpu.memory_bytes),
        )
    return table


def memory_bar(used_bytes: int, capacity_bytes: int) -> Text:
    share = used_bytes / capacity_bytes if capacity_bytes else 0.0
    filled = min(MEMORY_BAR_WIDTH, round(share * MEMORY_BAR_WIDTH))
    style = "green" if share < 0.7 else "yellow" if share <= 0.9 else "red"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (MEMORY_BAR_WIDTH - filled), style="dim")
    bar.append(f" {format_bytes(used_bytes)}")
    return bar


def transfer_table(plan: Plan) -> Table:
    table = _table("cross-stage transfers")
    for column in ("tensor", "stages", "specs", "size", "time"):
        table.add_column(column, justify="left" if column == "tensor" else "right")
    for transfer in plan.transfers:
        table.add_row(
            transfer.tensor,
            f"{transfer.source_stage} → {transfer.destination_stage}",
            f"{transfer.source_spec} → {transfer.destination_spec}",
            format_bytes(transfer.size_bytes),
            format_seconds(transfer.time_s),
        )
    return table


def _schedule_details(settings: Settings) -> str:
    """A deeper warm-up or interleaving, where the plan's schedule has one."""
    if settings.virtual_stages > 1:
        return f", interleaved: {settings.virtual_stages} stages per device group"
    if settings.warmup_extra:
        return f", warm-up +{settings.warmup_extra}"
    return ""


def render_timeline(console: Console, timeline: Timeline) -> None:
    """Each device group's blocks (a stage's, or an interleaved group's stages') along one time
    axis. When blocks would be narrower than a few
    columns (many microbatches), only the start and the end of the pipeline are drawn."""
    makespan_s = timeline.makespan_s
    console.print(
        f"[bold]pipeline[/]: {timeline.stages} stage{'s' if timeline.stages > 1 else ''} x "
        f"{timeline.microbatches} microbatch{'es' if timeline.microbatches > 1 else ''}, "
        f"{format_seconds(makespan_s)}"
    )
    if makespan_s <= 0:
        return
    label_width = max([_LABEL_WIDTH, *(len(lane) + 2 for lane in timeline.lanes)])
    windows, column_s = _windows(timeline, max(TIMELINE_MIN_WIDTH, console.width - label_width))
    for lane in timeline.lanes:
        blocks = [block for block in timeline.blocks if block.lane == lane]
        row = Text(lane.ljust(label_width))
        for number, window in enumerate(windows):
            row.append(_GAP if number else "")
            row.append_text(_timeline_row(blocks, window, column_s))
        console.print(row, no_wrap=True, overflow="crop")
    axis = []
    for start_s, end_s in windows:
        start, end = format_seconds(start_s) if start_s else "0", format_seconds(end_s)
        axis.append(start.ljust(_columns((start_s, end_s), column_s) - len(end)) + end)
    console.print(" " * label_width + _GAP.join(axis), no_wrap=True, overflow="crop")
    console.print(
        f"{' ' * label_width}> forward  < backward  # gradient sync  = optimizer step  "
        "0-9 microbatch  "
        f"(a column is {format_seconds(column_s)})"
    )


def _windows(timeline: Timeline, width: int) -> tuple[list[tuple[float, float]], float]:
    """The time windows to draw and the seconds per column."""
    makespan_s = timeline.makespan_s
    typical_s = median(
        [b.end_s - b.start_s for b in timeline.blocks if b.kind not in (SYNC, STEP)] or [makespan_s]
    )
    if typical_s * width >= MIN_BLOCK_COLUMNS * makespan_s or typical_s <= 0:
        return [(0.0, makespan_s)], makespan_s / width
    column_s = typical_s / MIN_BLOCK_COLUMNS
    span_s = (width - len(_GAP)) // 2 * column_s
    return [(0.0, span_s), (makespan_s - span_s, makespan_s)], column_s


def _columns(window: tuple[float, float], column_s: float) -> int:
    return max(1, round((window[1] - window[0]) / column_s))


def _timeline_row(blocks: list[Slice], window: tuple[float, float], column_s: float) -> Text:
    width = _columns(window, column_s)
    cells: list[tuple[str, str]] = [(" ", "")] * width
    for block in blocks:
        if block.end_s <= window[0] or block.start_s >= window[1]:
            continue
        first = max(0, min(width - 1, int((block.start_s - window[0]) / column_s)))
        last = max(first + 1, min(width, round((block.end_s - window[0]) / column_s)))
        fill, style = _BLOCK_LOOK[block.kind]
        label = str(block.microbatch) if block.microbatch >= 0 else ""
        text = label + fill * (last - first) if last - first > len(label) else fill * (last - first)
        for offset, column in enumerate(range(first, last)):
            cells[column] = (text[offset], style)
    row = Text()
    for character, style in cells:
        row.append(character, style=style)
    return row


def render_ops(console: Console, plan: Plan, pattern: str) -> None:
    ops = op_rows(plan, pattern)
    table = _table(f"ops matching {pattern!r}: {len(ops)}")
    for column in ("stage", "layer", "op", "strategy"):
        table.add_column(column, justify="right" if column == "stage" else "left")
    for row in ops:
        table.add_row(str(row.stage), row.layer, row.op, row.strategy)
    console.print(table)
    tensors = tensor_rows(plan, pattern)
    specs = _table(f"tensor specs matching {pattern!r}: {len(tensors)}")
    for column in ("stage", "tensor", "spec"):
        specs.add_column(column, justify="right" if column == "stage" else "left")
    for tensor in tensors:
        specs.add_row(str(tensor.stage), tensor.tensor, tensor.spec)
    console.print(specs)


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        min_width=len(title),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),
    )


def _count(number: int) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if number >= factor:
            return f"{number / factor:.3g} {suffix}"
    return str(number)


def _layers(stage: Stage) -> str:
    if not stage.layers:
        return "-"
    first, last = stage.layers[0], stage.layers[-1]
    if len(stage.layers) == 1:
        return first
    shared = len(os.path.commonprefix([first, last]).rpartition(".")[0])  # noqa: RUF071
    return f"{first}..{last[shared + 1 :] if shared else last}"


def number_ranges(numbers: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) as '0-2,5'."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)
