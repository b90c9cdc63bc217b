"""Arguments and loading shared by the commands that plan (`plan`, `compare`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from cost_models.calibration import Calibration
from cost_models.cluster import Cluster
from cost_models.cluster_yaml import load_calibration, load_cluster
from cost_models.compute import ComputeModel
from planner.graph import Graph
from planner.onnx_import import load_onnx
from planner.options import DTYPES, RECOMPUTES, SCHEDULES, PlanOptions, Search
from planner.pins import PIN_NAMES, Pins
from planner.reshard import ReshardRules
from planner.strategies import StrategyOptions
from plans import limits
from plans.errors import InputError

F = TypeVar("F", bound=Callable[..., object])


def parse_dims(values: Sequence[str]) -> dict[str, int]:
    """`--dim NAME=VALUE` flags as a mapping; one-line error naming the bad one."""
    dims: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        digits = number.strip()
        if not sep or not name or not (digits.isascii() and digits.isdigit()):
            raise InputError("--dim", "", "NAME=VALUE with a positive integer VALUE", repr(value))
        if len(digits.lstrip("0")) > len(str(limits.MAX_DIMENSION)) or (
            int(digits) > limits.MAX_DIMENSION
        ):
            raise InputError(f"--dim {name}", "", *limits.too_many(limits.MAX_DIMENSION, digits))
        dims[name] = int(digits)
    return dims


# The count flags of the planning commands and their bounds (`plans.limits`), checked before
# anything is loaded or allocated.
_COUNT_LIMITS = {
    "batch_size": ("--batch-size", limits.MAX_BATCH_SIZE),
    "hosts": ("--hosts", limits.MAX_HOSTS),
    "microbatches": ("--microbatches", limits.MAX_MICROBATCHES),
    "layers": ("--layers", limits.MAX_LAYERS),
    "jobs": ("--jobs", limits.MAX_JOBS),
}


def check_counts(flags: Mapping[str, Any]) -> None:
    """`InputError` for a count flag below 1 or past its bound in `plans.limits`."""
    for key, (flag, limit) in _COUNT_LIMITS.items():
        value = flags.get(key)
        if value is None:
            continue
        if value < 1:
            raise InputError(flag, "", "a positive integer", str(value))
        if value > limit:
            raise InputError(flag, "", *limits.too_many(limit, value))


_INPUT_OPTIONS: tuple[Callable[[F], F], ...] = (
    click.argument("model", type=click.Path(dir_okay=False)),
    click.argument("cluster", type=click.Path(dir_okay=False)),
    click.option("--batch-size", type=int, help="Global batch size (binds the model's batch)."),
    click.option(
        "--dim", "dims", multiple=True, metavar="NAME=VALUE", help="Bind a symbolic dimension."
    ),
    click.option("--hosts", type=int, help="Override the cluster's number of hosts."),
    click.option(
        "--dtype",
        type=click.Choice(DTYPES),
        default="float16",
        show_default=True,
        help="Training dtype; 16-bit training keeps float32 master weights.",
    ),
    click.option(
        "--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True
    ),
    click.option("--schedule", type=click.Choice(SCHEDULES), default="1f1b", show_default=True),
    click.option(
        "--memory-fraction",
        type=click.FloatRange(min=0.0, max=1.0, min_open=True),
        default=0.9,
        show_default=True,
        help="Share of GPU memory a plan may use.",
    ),
    click.option(
        "--ilp-time-limit",
        type=click.FloatRange(min=0.0, min_open=True),
        default=60.0,
        show_default=True,
        help="Seconds per ILP solve; on timeout the best plan found so far is kept.",
    ),
    click.option(
        "--jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Processes solving layer ILPs at once. Default: all cores.",
    ),
    click.option(
        "--calibration",
        type=click.Path(dir_okay=False),
        help="Measured costs (from `alpa-plan profile`) in place of the datasheet roofline. "
        "Default: the cluster YAML's `calibration:` file, if any.",
    ),
)


def input_options(function: F) -> F:
    """The model, the cluster and the options that shape every plan of them."""
    for decorator in reversed(_INPUT_OPTIONS):
        function = decorator(function)
    return function


def load_inputs(
    model: str,
    cluster: str,
    batch_size: int | None,
    dims: Sequence[str],
    hosts: int | None,
    dtype: str,
    calibration: str | None,
) -> tuple[Graph, Cluster, Calibration | None]:
    """The model, the cluster (with measured links when calibrated) and the calibration."""
    cluster_spec = load_cluster(cluster, hosts=hosts)
    calibration_path = calibration or cluster_spec.calibration_path
    measured = None if calibration_path is None else load_calibration(calibration_path)
    if measured is not None:  # measured links replace the YAML's; other dtypes scale by its peaks
        measured = measured.with_reference_gpu(cluster_spec.gpu)
        cluster_spec = measured.with_links(cluster_spec)
    if dtype not in cluster_spec.gpu.dtypes:
        raise InputError(
            cluster,
            f"gpu.flops.{dtype}",
            f"a peak FLOP/s for the training dtype {dtype} (or pick --dtype from "
            f"{', '.join(d for d in cluster_spec.gpu.dtypes if d in DTYPES)})",
            "nothing",
        )
    graph = load_onnx(model, batch_size=batch_size, dims=parse_dims(dims))
    return graph, cluster_spec, measured


def parse_pins(values: Sequence[str]) -> Pins:
    """The `--pin NAME=VALUE` flags as `Pins` (`planner/pins.py`); `InputError` naming the flag
    for an unknown name, a value that is not a positive count (or recompute mode), or a name
    pinned twice."""
    given: dict[str, int | str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in PIN_NAMES:
            raise InputError(
                "--pin", "", f"NAME=VALUE with NAME one of {', '.join(PIN_NAMES)}", repr(value[:40])
            )
        if name in given:
            raise InputError(f"--pin {name}", "", "one value", f"{given[name]} and {text[:20]}")
        if name == "recompute":
            if text not in RECOMPUTES:
                raise InputError(f"--pin {name}", "", f"one of {', '.join(RECOMPUTES)}", text)
            given[name] = text
            continue
        digits = text.lstrip("0")
        if not (text.isascii() and text.isdigit()) or not digits:
            raise InputError(f"--pin {name}", "", "a positive integer", repr(text))
        if len(digits) > len(str(limits.MAX_GPUS)) or int(digits) > limits.MAX_GPUS:
            shown = digits if len(digits) <= 20 else digits[:17] + "..."
            raise InputError(f"--pin {name}", "", *limits.too_many(limits.MAX_GPUS, shown))
        given[name] = int(digits)
    return Pins(**given)  # type: ignore[arg-type]


def plan_options(flags: Mapping[str, Any], compute: ComputeModel | None) -> PlanOptions:
    """The planner's options from a command's parsed flags (`click.Context.params`), the one
    place every planning command builds them; a flag the command lacks keeps its default."""
    zero = flags.get("zero")
    batch_axis = flags.get("force_batch_dim_to_mesh_dim")
    recompute = flags.get("recompute", "auto")
    if flags.get("remat"):
        if recompute not in ("auto", "full"):
            raise InputError("--remat", "", "no --recompute other than full", recompute)
        recompute = "full"
    return PlanOptions(
        mode=flags.get("mode", "train"),
        dtype=flags["dtype"],
        optimizer=flags["optimizer"],
        microbatches=flags.get("microbatches"),
        schedule=flags["schedule"],
        memory_fraction=flags["memory_fraction"],
        search=Search.INTRA_ONLY if flags.get("intra_only") else Search.PIPESHARD,
        layers=flags.get("layers"),
        submesh_space=flags.get("submesh_space", "power-of-two"),
        objective=flags.get("objective", "throughput"),
        recompute=recompute,
        ilp_time_limit_s=flags["ilp_time_limit"],
        strategy=StrategyOptions(
            zero="auto" if zero is None else ("on" if zero else "off"),
            force_data_parallel=bool(flags.get("force_data_parallel", False)),
            force_batch_dim_to_mesh_dim=None if batch_axis is None else int(batch_axis),
        ),
        reshard=ReshardRules(
            allow_all_to_all=not flags.get("no_all_to_all", False),
            allow_all_gather=not flags.get("no_all_gather", False),
        ),
        compute=compute,
        pins=parse_pins(flags.get("pins", ())),
    )
