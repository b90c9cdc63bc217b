"""`profile`: measure op and collective costs on the local device, write a calibration file.

The executor (and jax) is imported only when `profile` runs; without the `executor` extra it says
which extra to install (exit 2). The executor times; `cost_models.calibration` fits; the YAML
goes through `cost_models.cluster_yaml`. `alpa-plan MODEL CLUSTER --calibration FILE` (or a
`calibration:` key in the cluster YAML) then plans with the measured curves.
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import TYPE_CHECKING

import click

from cli import exit_codes
from cli.extras import missing_executor_extra
from cli.render import error_console, progress_bar
from cost_models.calibration import Calibration, CollectiveSample, calibration_from_timings
from cost_models.cluster_yaml import calibration_to_yaml
from cost_models.units import format_bandwidth, format_flops_rate, format_seconds
from planner import __version__
from plans.errors import InputError
from plans.io import check_output_path, write_text_atomically

if TYPE_CHECKING:
    from executor.profile import Profile

DTYPE_CHOICES = ("float32", "float16", "bfloat16")


def calibration_from_profile(profile: Profile, date: str) -> Calibration:
    """The executor's timings fitted by `cost_models.calibration.calibration_from_timings`."""
    return calibration_from_timings(
        device=profile.device,
        date=date,
        software=(*profile.software, ("alpa-plan", __version__)),
        ops=profile.ops,
        collectives=[
            CollectiveSample(t.collective, t.group_size, t.num_bytes, t.seconds)
            for t in profile.collectives
        ],
    )


def _header(profile: Profile, quick: bool, note: str | None) -> str:
    lines = [
        f"Calibration measured by `alpa-plan profile{' --quick' if quick else ''}` on "
        f"{profile.device}, {profile.device_count} device(s) visible, host {platform.node()!r}.",
        "Timings: one jitted op per call, median of repeats after warm-up (includes dispatch).",
    ]
    if note:
        lines += note.splitlines()
    return "\n".join(lines)


@click.command("profile", epilog=exit_codes.EPILOG)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="calibration.yaml",
    show_default=True,
    help="Where to write the calibration ('-' for stdout).",
)
@click.option(
    "--dtypes",
    default="float32,float16,bfloat16",
    show_default=True,
    help=f"Comma-separated matmul dtypes to measure, from {', '.join(DTYPE_CHOICES)}.",
)
@click.option("--quick", is_flag=True, help="A tiny grid (seconds): for tests and a first look.")
@click.option(
    "--note",
    help="A line for the file's header comment (say what machine this is, why it was made).",
)
def profile_command(out: str, dtypes: str, quick: bool, note: str | None) -> int:
    """Measure matmul, memory and collective costs on this machine's devices and write a
    calibration file for `alpa-plan MODEL CLUSTER --calibration FILE`."""
    wanted = _parse_dtypes(dtypes)
    if out != "-":
        check_output_path(out)  # before measuring, which takes minutes
    try:
        from executor import profile as profiler
    except ModuleNotFoundError as error:
        raise missing_executor_extra("profile", error) from None
    grid = profiler.quick_grid() if quick else profiler.full_grid()
    _, _, device_count = profiler.device_summary()
    total = profiler.timing_count(grid, wanted, device_count)
    done = 0
    with progress_bar() as progress:
        progress("profiling", 0, total)

        def step(what: str) -> None:
            nonlocal done
            del what
            progress("profiling", done, total)
            done += 1

        measured = profiler.measure(grid, wanted, step)
        progress("profiling", total, total)
    today = datetime.date.today().isoformat()
    calibration = calibration_from_profile(measured, today)
    text = calibration_to_yaml(calibration, _header(measured, quick, note))
    if out == "-":
        click.echo(text, nl=False)
    else:
        write_text_atomically(text, out)
    _print_summary(calibration, None if out == "-" else out)
    return exit_codes.OK


def _parse_dtypes(text: str) -> list[str]:
    wanted = [item.strip() for item in text.split(",") if item.strip()]
    for dtype in wanted:
        if dtype not in DTYPE_CHOICES:
            raise InputError(
                "--dtypes", "", f"a comma-separated list from {', '.join(DTYPE_CHOICES)}", dtype
            )
    if not wanted:
        raise InputError("--dtypes", "", "at least one dtype", repr(text))
    return list(dict.fromkeys(wanted))


def _print_summary(calibration: Calibration, written_to: str | None) -> None:
    console = error_console()
    console.print(f"profiled {calibration.device}", highlight=False)
    for dtype, curve in calibration.matmul:
        console.print(
            f"  matmul {dtype}: best {format_flops_rate(curve.best_rate)}, "
            f"floor {format_seconds(curve.floor_s)}",
            highlight=False,
        )
    for name, curve in (
        ("elementwise", calibration.elementwise),
        ("reduction", calibration.reduction),
        *calibration.op_classes,
    ):
        console.print(
            f"  {name}: best {format_bandwidth(curve.best_rate)}, "
            f"floor {format_seconds(curve.floor_s)}",
            highlight=False,
        )
    for kind, fit in calibration.links:
        console.print(
            f"  {kind} link: {format_bandwidth(fit.link.bandwidth_bytes_per_s)}, "
            f"latency {format_seconds(fit.link.latency_s)}",
            highlight=False,
        )
    if written_to:
        console.print(f"wrote {os.path.normpath(written_to)}", highlight=False)


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    group.add_command(profile_command)
