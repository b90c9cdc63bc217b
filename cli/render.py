"""Terminal rendering with rich: every message goes to stderr."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cost_models.units import format_bytes, format_seconds
from plans.plan import Plan


def error_console() -> Console:
    """A console on stderr (made per call, so it follows the current sys.stderr)."""
    return Console(stderr=True, highlight=False)


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
    for column in ("stage", "GPUs", "mesh", "forward", "backward", "comm", "grad sync", "peak mem"):
        table.add_column(column, justify="right")
    for stage in plan.stages:
        table.add_row(
            str(stage.index),
            str(len(stage.devices)),
            f"{stage.logical_mesh[0]}x{stage.logical_mesh[1]}",
            format_seconds(stage.time.forward_s),
            format_seconds(stage.time.backward_s),
            format_seconds(stage.time.communication_s),
            format_seconds(stage.time.gradient_sync_s),
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
