"""One parallel configuration as people set it in Megatron-LM, priced by the search's cost model.

A `ParallelConfig` fixes what the search would otherwise choose (Megatron-LM's flags in
brackets):

- pp device groups (`--pipeline-model-parallel-size`) of dp x tp GPUs each, placed in order,
  every group on the logical mesh (dp, tp): the batch on axis 0 (data parallel), tensor
  parallelism on axis 1 (`--tensor-model-parallel-size`; the ILP chooses only the column/row
  splits inside it);
- the model's layers (its transformer blocks, `planner/layers.py`) cut into pp x vp chunks of
  as equal layer counts as they can be, larger first; chunk k runs on group k mod pp
  (interleaved 1F1B for vp > 1, `--num-layers-per-virtual-pipeline-stage`);
- B = batch / (dp x microbatch size) microbatches (`--micro-batch-size`, `--global-batch-size`);
- context parallelism (`--context-parallel-size`): the token sequence split cp ways inside
  each device group, on the axis of whichever of dp and tp is 1 (`config_mesh`);
- recomputation in every stage or in none (`--recompute-granularity full` or `selective`,
  `planner/recompute.py`); sequence parallelism (`--sequence-parallel`: the row-parallel
  matmuls may reduce-scatter their partial sums, `planner/strategies.py`); and ZeRO over the
  data-parallel axis (0: none; 1, Megatron-LM's distributed optimizer, 2 and 3 as
  `planner/strategies.py` prices them).

Each chunk is priced as the search prices a candidate stage: the sum of its layers' ILP plans on
(dp, tp) from a `StageCostTable`, the resharding between them and the transfer it receives over
the link its group starts on; each group takes the fastest memory level at which its devices
hold what the schedule keeps in flight (else the level that needs the least memory, and the
plan does not fit). The estimate is the makespan of the schedule the plan prescribes
(`plans/timeline.py`), as for every plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from cost_models.cluster import Cluster
from planner.graph import Graph, split_batch
from planner.interleaving import group_peak_bytes
from planner.layers import LayerSlice, cluster_layers, scoped_units
from planner.ops import cast_floats
from planner.options import PlanOptions, Recompute
from planner.pipeline_time import in_flight
from planner.placement import Start, place_stages
from planner.plan_assembly import assemble_plan, build_stages, build_transfers, layer_records
from planner.sequence_dims import with_sequence_dims
from planner.stage_costs import RangePlan, StageCostTable
from planner.strategies import StrategyOptions
from plans.errors import InputError
from plans.plan import RECOMPUTE_FULL, JsonValue, Plan, SearchReport, frozen_map
from plans.schedules import schedule_problem

# ZeRO stage -> the strategy switch that prices it (`planner/strategies.py`).
ZERO_STRATEGIES = {0: "off", 1: "zero1", 2: "zero2", 3: "zero3"}
# Recomputation a fixed configuration may set, in every stage (Megatron-LM's
# `--recompute-granularity full` or `selective`), or none.
FIXED_RECOMPUTES = (Recompute.NONE, Recompute.SELECTIVE, Recompute.FULL)


@dataclass(frozen=True)
class ParallelConfig:
    """A Megatron-style configuration (module docstring)."""

    dp: int
    tp: int
    pp: int
    microbatch_size: int  # samples per microbatch on each data-parallel replica
    vp: int = 1
    recompute: Recompute = Recompute.NONE
    zero: int = 0
    # Megatron-LM's `--sequence-parallel`: the ILP may reduce-scatter the row-parallel
    # matmuls' partial sums onto a dim of their output (`planner/strategies.py: _scattered`).
    sequence_parallel: bool = False
    # Megatron-LM's `--context-parallel-size`: the token sequence split cp ways inside each
    # device group (`config_mesh`).
    cp: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "recompute", Recompute(self.recompute))

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    def record(self) -> dict[str, JsonValue]:
        return {
            "dp": self.dp,
            "tp": self.tp,
            "pp": self.pp,
            "vp": self.vp,
            "microbatch_size": self.microbatch_size,
            "recompute": str(self.recompute),
            "zero": self.zero,
            "sequence_parallel": self.sequence_parallel,
            "cp": self.cp,
        }


@dataclass(frozen=True)
class Evaluation:
    """A configuration's plan, with the FLOPs its GPUs run (recomputation counted)."""

    config: ParallelConfig
    plan: Plan
    model_flops_per_iteration: float  # 3 forward-equivalents (training), 1 (inference)
    hardware_flops_per_iteration: float  # plus the forwards that recomputation reruns
    budget_bytes: float  # what a plan may hold per GPU

    @property
    def fits(self) -> bool:
        return self.plan.estimate.peak_memory_bytes <= self.budget_bytes

    @property
    def hardware_tflops_per_gpu(self) -> float:
        seconds = self.plan.estimate.iteration_time_s
        if seconds <= 0:
            return 0.0
        devices = self.plan.cluster.hosts * self.plan.cluster.gpus_per_host
        return self.hardware_flops_per_iteration / seconds / devices / 1e12


def config_layers(graph: Graph, options: PlanOptions) -> tuple[LayerSlice, ...]:
    """The layers a configuration cuts: every scoped layer (transformer block) on its own, as
    Megatron-LM splits them; `options.layers` layers by FLOPs when the model has no scopes.
    `graph` is the dtype-cast graph."""
    units = scoped_units(graph)
    return cluster_layers(graph, len(units) or options.layers)


@dataclass(frozen=True)
class ConfigMesh:
    """A device group's logical mesh and the axes its batch and its sequence are forced on."""

    shape: tuple[int, int]
    batch_axis: int | None
    sequence_axis: int | None


def config_mesh(config: ParallelConfig) -> ConfigMesh:
    """(dp, tp), the batch on axis 0; with context parallelism the sequence takes the axis of
    whichever of dp and tp is 1: (dp, cp) with the sequence on axis 1, or (cp, tp) with the
    sequence on axis 0 (a 2-D logical mesh holds two of the three splits; `config_problem`
    refuses cp with both dp and tp above 1)."""
    if config.cp == 1:
        return ConfigMesh((config.dp, config.tp), 0, None)
    if config.tp == 1:
        return ConfigMesh((config.dp, config.cp), 0, 1)
    return ConfigMesh((config.cp, config.tp), None, 0)


def group_submesh(config: ParallelConfig, cluster: Cluster) -> tuple[int, int]:
    """The (hosts, GPUs per host) submesh of one device group of dp x tp x cp GPUs."""
    size, g = config.dp * config.tp * config.cp, cluster.gpus_per_host
    if size <= g and g % size == 0:
        return (1, size)
    if size % g == 0:
        return (size // g, g)
    raise InputError(
        "--dp x --tp x --cp",
        "",
        f"a pipeline stage of GPUs that divides a host of {g} or is whole hosts",
        f"{config.dp} x {config.tp} x {config.cp} = {size}",
    )


def config_problem(
    config: ParallelConfig, graph: Graph, cluster: Cluster, options: PlanOptions, layers: int
) -> InputError | None:
    """Why `config` cannot describe a run of `graph` on `cluster` (flags named as the CLI's
    `evaluate` spells them), or None."""
    for name in ("dp", "tp", "pp", "vp", "cp", "microbatch_size"):
        value = getattr(config, name)
        if value < 1:
            flag = "--microbatch" if name == "microbatch_size" else f"--{name}"
            return InputError(flag, "", "a positive count", str(value))
    if config.gpus != cluster.num_devices:
        return InputError(
            "--dp x --tp x --pp x --cp", "", f"the cluster's {cluster.num_devices} GPUs",
            f"{config.dp} x {config.tp} x {config.pp} x {config.cp} = {config.gpus}",
        )  # fmt: skip
    if config.cp > 1 and config.dp > 1 and config.tp > 1:
        return InputError(
            "--cp", "",
            "--dp 1 or --tp 1 with --cp above 1 (a 2-D logical mesh holds two of the batch, "
            "tensor and sequence splits)",
            f"dp {config.dp}, tp {config.tp}, cp {config.cp}",
        )  # fmt: skip
    if config.zero not in ZERO_STRATEGIES:
        choices = ", ".join(map(str, ZERO_STRATEGIES))
        return InputError("--zero", "", f"one of {choices}", str(config.zero))
    if config.recompute not in FIXED_RECOMPUTES:
        return InputError("--recompute", "", "none, selective or full", str(config.recompute))
    if config.recompute is not Recompute.NONE and not options.training:
        return InputError("--recompute", "", "none in inference", str(config.recompute))
    chunks = config.pp * config.vp
    if chunks > layers:
        return InputError(
            "--pp x --vp", "", f"at most the model's {layers} layers", f"{config.pp} x {config.vp}"
        )
    per_step = config.dp * config.microbatch_size
    if graph.batch_size % per_step:
        return InputError(
            "--batch-size", "",
            f"a multiple of dp x microbatch size = {config.dp} x {config.microbatch_size}",
            str(graph.batch_size),
        )  # fmt: skip
    problem = schedule_problem(
        str(options.schedule), chunks, graph.batch_size // per_step, 0, config.vp
    )
    if problem is not None:
        flags = {"microbatches": "--batch-size / (dp x microbatch)", "schedule": "--schedule"}
        return InputError(
            flags.get(problem.field, problem.field), "", problem.expected, problem.found
        )
    return None


def config_options(options: PlanOptions, config: ParallelConfig, microbatches: int) -> PlanOptions:
    """The planner options a configuration prices under."""
    mesh = config_mesh(config)
    return replace(
        options,
        microbatches=microbatches,
        recompute=config.recompute,
        strategy=StrategyOptions(
            zero=ZERO_STRATEGIES[config.zero],
            force_batch_dim_to_mesh_dim=mesh.batch_axis,
            force_sequence_dim_to_mesh_dim=mesh.sequence_axis,
            scatter_partial_sums=config.sequence_parallel,
        ),
    )


class ConfigTables:
    """The cost tables of fixed configurations, one per (microbatches, group submesh and logical
    mesh with its forced axes, recompute, ZeRO, sequence parallelism), shared by every
    configuration that needs the same one; `jobs` processes solve each table's layers."""

    def __init__(self, graph: Graph, cluster: Cluster, options: PlanOptions, jobs: int = 1) -> None:
        self.jobs = jobs
        self.graph = graph  # the original graph (plans record its fingerprint)
        self.cluster = cluster
        self.options = options
        self.typed = cast_floats(graph, options.dtype)
        self.layers = config_layers(self.typed, options)
        self._tables: dict[tuple[object, ...], StageCostTable] = {}

    @cached_property
    def sequenced(self) -> Graph:
        """The typed graph with its sequence dims (`planner/sequence_dims.py`), which only
        context parallelism reads: found on first use."""
        return with_sequence_dims(self.typed)

    def table(self, config: ParallelConfig, microbatches: int) -> StageCostTable:
        submesh = group_submesh(config, self.cluster)
        mesh = config_mesh(config)
        shape = mesh.shape
        key = (
            microbatches, submesh, mesh, config.recompute, config.zero, config.sequence_parallel
        )  # fmt: skip
        if key not in self._tables:
            options = config_options(self.options, config, microbatches)
            settings = options.intra_op_settings(self.cluster, microbatches)
            source = self.sequenced if config.cp > 1 else self.typed
            model = source.subgraph(tensors=split_batch(source.tensors, microbatches))
            table = StageCostTable(model, self.layers, self.cluster, settings, {submesh: (shape,)})
            table.solve_layers([submesh], self.jobs)
            self._tables[key] = table
        return self._tables[key]


def evaluate_config(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    config: ParallelConfig,
    jobs: int = 1,
    tables: ConfigTables | None = None,
    algorithm: str = "fixed configuration",
) -> Evaluation:
    """The plan of `config` and its FLOPs (module docstring). Raises `InputError` when the
    configuration cannot describe a run of this model on this cluster. `jobs` solves the layers
    when no `tables` are given (given tables use their own)."""
    tables = tables or ConfigTables(graph, cluster, options, jobs)
    problem = config_problem(config, graph, cluster, options, len(tables.layers))
    if problem is not None:
        raise problem
    if config.cp > 1 and all(t.sequence_dim is None for t in tables.sequenced.tensors.values()):
        raise InputError(
            "--cp", "", "a model with a token input [batch, sequence] to split",
            f"no sequence in {graph.name}'s inputs",
        )  # fmt: skip
    microbatches = graph.batch_size // (config.dp * config.microbatch_size)
    table = tables.table(config, microbatches)
    submesh = group_submesh(config, cluster)
    chunks = _chunks(table, config, submesh, microbatches, options)
    groups = place_stages([submesh] * config.pp, cluster.hosts, cluster.gpus_per_host)
    devices = tuple(groups[k % config.pp] for k in range(len(chunks)))
    chosen = config_options(options, config, microbatches)
    stages = build_stages(
        tables.typed, chunks, microbatches, table, devices, chosen.schedule, cluster, None, 0,
        config.vp,
    )  # fmt: skip
    tensors = split_batch(tables.typed.tensors, microbatches)
    transfers = build_transfers(tables.typed, stages, cluster, tensors, options.training)
    recorded: dict[str, JsonValue] = {**config.record(), "microbatches": microbatches}
    search = SearchReport(algorithm, layers=len(tables.layers), parameters=frozen_map(recorded))  # type: ignore[arg-type]
    plan = assemble_plan(
        graph, cluster, chosen, stages, search, layer_records(graph, tables.layers, tables.typed),
        transfers, 0, config.vp,
    )  # fmt: skip
    model_flops = graph.flops * (3.0 if options.training else 1.0)
    flops = {op.name: op.flops for op in tables.typed.ops}
    recomputed = sum(
        flops[name]
        for stage in plan.stages
        for name in (stage.ops if stage.recompute == RECOMPUTE_FULL else stage.recomputed_ops)
    )
    budget = options.memory_budget_bytes(cluster)
    return Evaluation(config, plan, model_flops, model_flops + recomputed, budget)


def _chunks(
    table: StageCostTable,
    config: ParallelConfig,
    submesh: tuple[int, int],
    microbatches: int,
    options: PlanOptions,
) -> tuple[RangePlan, ...]:
    """Each chunk's plan: per device group, the fastest memory level at which the group fits
    the budget, else the level that needs the least memory."""
    cuts = even_split(len(table.layers), config.pp * config.vp)
    per_chunk = [
        table.range_plans(first, last, submesh, _start(table, first, k % config.pp, submesh))
        for k, (first, last) in enumerate(cuts)
    ]
    if not all(per_chunk):  # the ILP found no plan on (dp, tp): only forbidden reshardings
        raise InputError(
            "--tp", "", "a logical mesh on which every layer has a sharding",
            f"{config_mesh(config).shape}",
        )  # fmt: skip
    levels = min(len(plans) for plans in per_chunk)
    budget = options.memory_budget_bytes(table.cluster)
    chosen: list[RangePlan | None] = [None] * len(cuts)
    for group in range(config.pp):
        members = list(range(group, len(cuts), config.pp))
        peaks = []
        for level in range(levels):
            trial = [per_chunk[k][level] for k in range(len(cuts))]
            peaks.append(_group_peak(trial, group, microbatches, config.vp, options))
        fitting = [level for level, peak in enumerate(peaks) if peak <= budget]
        level = fitting[0] if fitting else min(range(levels), key=lambda q: (peaks[q], q))
        for k in members:
            chosen[k] = per_chunk[k][level]
    return tuple(plan for plan in chosen if plan is not None)


def _group_peak(
    pipeline: Sequence[RangePlan], group: int, microbatches: int, vp: int, options: PlanOptions
) -> float:
    """The peak memory of one device group's GPUs, as `build_stages` records it."""
    if vp > 1:
        return group_peak_bytes(pipeline, microbatches, vp)[group]
    plan = pipeline[group]
    holds = in_flight(group, len(pipeline), microbatches, options.schedule)
    return plan.state_bytes + plan.activation_bytes(holds)


def _start(table: StageCostTable, first: int, group: int, submesh: tuple[int, int]) -> Start:
    """How the chunk from layer `first` on device group `group` starts: the link it receives
    over (`planner/placement.py`)."""
    allowed = table.starts(first, submesh)
    if allowed == (Start.ANYWHERE,):
        return Start.ANYWHERE
    offset = group * submesh[0] * submesh[1]
    return Start.HOST_START if offset % table.cluster.gpus_per_host == 0 else Start.INSIDE_HOST


def even_split(num_layers: int, parts: int) -> tuple[tuple[int, int], ...]:
    """`parts` runs of consecutive layers whose sizes differ by at most one (larger first)."""
    size, extra = divmod(num_layers, parts)
    runs = []
    first = 0
    for index in range(parts):
        count = size + (1 if index < extra else 0)
        runs.append((first, first + count - 1))
        first += count
    return tuple(runs)


def best_config(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    configs: Sequence[ParallelConfig],
    jobs: int = 1,
    tables: ConfigTables | None = None,
    on_evaluated: Callable[[Evaluation], None] | None = None,
    algorithm: str = "fixed configuration",
) -> Evaluation | None:
    """The fastest configuration of `configs` that fits, else the one that needs the least
    memory; configurations that cannot describe a run are skipped. None when none can."""
    tables = tables or ConfigTables(graph, cluster, options, jobs)
    best: Evaluation | None = None
    for config in configs:
        if config_problem(config, graph, cluster, options, len(tables.layers)) is not None:
            continue
        found = evaluate_config(graph, cluster, options, config, tables=tables, algorithm=algorithm)
        if on_evaluated is not None:
            on_evaluated(found)
        if best is None or _better(found, best):
            best = found
    return best


def _better(a: Evaluation, b: Evaluation) -> bool:
    if a.fits != b.fits:
        return a.fits
    if a.fits:
        return a.plan.estimate.iteration_time_s < b.plan.estimate.iteration_time_s
    return a.plan.estimate.peak_memory_bytes < b.plan.estimate.peak_memory_bytes
