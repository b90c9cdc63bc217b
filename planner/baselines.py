"""The plans people write by hand, built explicitly and priced by the search's own cost model.

Every baseline is a `Plan` of the same type the search returns: stages that are runs of the
model's layers (`planner/layers.py`) on concrete submeshes, each sharded by the intra-op ILP
(`planner.intra_op.solve_stage`) under *restricted* strategy options, assembled by
`planner.search.assemble_plan`. Only the freedom differs, so comparing iteration times compares
parallelisation strategies, not cost models.

- data parallel: one stage on every GPU, only the batch split (`force_data_parallel`), no ZeRO;
  the logical mesh (1, N), and (hosts, GPUs per host) on several hosts (hierarchical
  all-reduce), whichever is faster;
- ZeRO-2 / ZeRO-3: the same, with optimizer state and gradients (ZeRO-2) or also the weights
  (ZeRO-3) sharded over the data-parallel axes;
- Megatron-LM 3D parallelism: pp device groups of dp x tp GPUs with the logical mesh (dp, tp),
  tp inside a host, the batch on axis 0 and the ILP free on axis 1 (where it finds Megatron's
  column-then-row splits), the layers in pp x vp chunks of equal counts, recomputation (full or
  selective) in every stage or none, with or without the distributed optimizer (ZeRO-1), each
  priced as `alpa-plan evaluate` prices it (`planner/configuration.py`), with and without
  sequence parallelism where tp > 1; the best (dp, tp, pp, vp, recompute, distributed
  optimizer, sequence parallelism, B);
- DeepSpeed: one stage, mesh (dp, tp) with tp inside a host, batch on axis 0, ZeRO stage 1, 2
  or 3 for every parameter, recomputation in every layer or none, priced as `alpa-plan
  evaluate` prices it; the best (tp, ZeRO stage, recompute, B);
- intra-op only: Alpa's ShardParallel (`planner.search.plan_intra_only`), the best B;
- inter-op only: the full pipeline search with every stage data parallel.

Microbatch counts: the search's own policy (`planner/microbatches.py`), for each configuration
of each baseline: the given count, or coarse to fine over the divisors of the batch.

A baseline that fits nowhere is still returned, `fits=False`, with the plan that needs the least
memory (its peak memory tells by how much it misses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cost_models.cluster import Cluster
from cost_models.mesh import logical_mesh
from planner.configuration import (
    ConfigTables,
    ParallelConfig,
    config_problem,
    evaluate_config,
)
from planner.graph import Graph, Op, Subgraph, split_batch
from planner.intra_op import PreparedStage, StageSharding, prepare_stage
from planner.intra_op_ilp import CutoffExceeded, MemoryInfeasible
from planner.layers import LayerSlice, cluster_layers, scoped_units
from planner.microbatches import search_counts
from planner.ops import cast_floats
from planner.options import PlanOptions, Recompute, Search
from planner.pipeline_time import in_flight
from planner.placement import place_stages
from planner.plan_assembly import (
    assemble_plan,
    build_transfers,
    layer_records,
    stage_from_sharding,
)
from planner.progress import Progress
from planner.search import plan
from planner.shard_parallel import plan_intra_only
from planner.strategies import StrategyOptions
from plans.errors import InfeasibleError
from plans.plan import JsonValue, Plan, SearchReport, Stage, frozen_map

BASELINES = (
    "data-parallel",
    "zero2",
    "zero3",
    "megatron",
    "deepspeed",
    "intra-only",
    "inter-only",
)


@dataclass(frozen=True)
class Baseline:
    """One hand-written plan: its name, the parameters that define it, and the plan itself.

    `plan` is None only when no plan could be built at all (`note` says why)."""

    name: str
    parameters: Mapping[str, JsonValue]
    plan: Plan | None
    fits: bool
    note: str = ""

    @property
    def iteration_time_s(self) -> float:
        return self.plan.estimate.iteration_time_s if self.plan is not None else math.inf

    @property
    def peak_memory_bytes(self) -> int | None:
        return self.plan.estimate.peak_memory_bytes if self.plan is not None else None


@dataclass(frozen=True)
class StageSpec:
    """A stage of an explicit plan: layers first..last on a submesh, viewed as `mesh_shape`."""

    first: int
    last: int
    submesh: tuple[int, int]  # (hosts, GPUs per host)
    mesh_shape: tuple[int, int]


@dataclass
class BaselineContext:
    """What every baseline of one model and cluster shares: the typed graph, its layers, and
    the solved stages (by structural fingerprint, so equal pipeline stages solve once)."""

    graph: Graph
    cluster: Cluster
    options: PlanOptions
    typed: Graph = field(init=False)
    layers: tuple[LayerSlice, ...] = field(init=False)
    _prepared: dict[tuple[object, ...], PreparedStage] = field(default_factory=dict)
    _solved: dict[tuple[object, ...], StageSharding | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.typed = cast_floats(self.graph, self.options.dtype)
        units = scoped_units(self.typed)
        # Every scoped layer (a transformer block) on its own, as Megatron splits them.
        self.layers = cluster_layers(self.typed, len(units) or self.options.layers)

    @property
    def budget_bytes(self) -> float:
        return self.options.memory_budget_bytes(self.cluster)

    def ops(self, spec: StageSpec) -> tuple[Op, ...]:
        return tuple(self.typed.ops[self.layers[spec.first].start : self.layers[spec.last].stop])

    def solve(
        self,
        spec: StageSpec,
        microbatches: int,
        holds: int,
        strategy: StrategyOptions,
        cutoff_s: float = math.inf,
    ) -> StageSharding:
        """The stage sharded under the budget; over the budget, its least-memory sharding.
        Raises `CutoffExceeded` when it costs more than `cutoff_s` per iteration."""
        ops = self.ops(spec)
        tensors = split_batch(self.typed.tensors, microbatches)
        fingerprint = Subgraph(ops, tensors).fingerprint
        key = (fingerprint, spec.submesh, spec.mesh_shape, microbatches, holds, strategy)
        cached = self._solved.get(key)
        if isinstance(cached, float):  # exceeded that cutoff before: any lower one too
            if cached >= cutoff_s:
                raise CutoffExceeded()
            cached = None
        if cached is not None:
            if microbatches * cached.microbatch_s + cached.iteration_s > cutoff_s:
                raise CutoffExceeded()
            return _renamed(cached, self._source_ops(key, ops), ops)
        prepared = self._prepare(key, ops, spec, microbatches, holds, strategy)
        try:
            try:
                sharding = prepared.solve(cutoff_s=cutoff_s)
            except MemoryInfeasible:
                sharding = prepared.solve_least_memory(cutoff_s)
        except CutoffExceeded:
            self._solved[key] = cutoff_s
            raise
        self._solved[key] = sharding
        return sharding

    def _prepare(
        self,
        key: tuple[object, ...],
        ops: tuple[Op, ...],
        spec: StageSpec,
        microbatches: int,
        holds: int,
        strategy: StrategyOptions,
    ) -> PreparedStage:
        if key not in self._prepared:
            options = replace(self.options, microbatches=microbatches, strategy=strategy)
            settings = options.intra_op_settings(self.cluster, in_flight=holds)
            mesh = logical_mesh(self.cluster, spec.submesh, spec.mesh_shape)
            stage = Subgraph(ops, split_batch(self.typed.tensors, microbatches))
            self._prepared[key] = prepare_stage(stage, mesh, self.cluster.gpu, settings)
        return self._prepared[key]

    def _source_ops(self, key: tuple[object, ...], ops: tuple[Op, ...]) -> Sequence[Op]:
        prepared = self._prepared.get(key)
        return prepared.stage.ops if prepared is not None else ops


def _renamed(
    sharding: StageSharding, source_ops: Sequence[Op], target_ops: Sequence[Op]
) -> StageSharding:
    """A sharding solved for `source_ops` applied to the structurally equal `target_ops`."""
    if [op.name for op in source_ops] == [op.name for op in target_ops]:
        return sharding
    op_names = {a.name: b.name for a, b in zip(source_ops, target_ops, strict=True)}
    tensor_names: dict[str, str] = {}
    for a, b in zip(source_ops, target_ops, strict=True):
        for x, y in zip((*a.inputs, *a.outputs), (*b.inputs, *b.outputs), strict=True):
            if x and y:
                tensor_names.setdefault(x, y)
    return replace(
        sharding,
        strategies={op_names[name]: s for name, s in sharding.strategies.items()},
        specs={tensor_names.get(name, name): spec for name, spec in sharding.specs.items()},
    )


def explicit_plan(
    context: BaselineContext,
    specs: Sequence[StageSpec],
    microbatches: int,
    strategy: StrategyOptions,
    search: SearchReport,
    cutoff_s: float = math.inf,
) -> Plan:
    """The plan of `specs` at `microbatches`, each stage sharded under `strategy`: stages on
    packed devices, activations times the microbatches each stage holds (1F1B or GPipe), the
    tensors sent between stages charged to the receiving stage as the search does."""
    options = replace(context.options, microbatches=microbatches, strategy=strategy)
    devices = place_stages(
        [spec.submesh for spec in specs], context.cluster.hosts, context.cluster.gpus_per_host
    )
    stages: list[Stage] = []
    for index, spec in enumerate(specs):
        holds = in_flight(index, len(specs), microbatches, options.schedule)
        sharding = context.solve(spec, microbatches, holds, strategy, cutoff_s)
        stages.append(
            stage_from_sharding(
                index,
                context.typed,
                sharding,
                context.cluster,
                tuple(op.name for op in context.ops(spec)),
                tuple(context.layers[k].name for k in range(spec.first, spec.last + 1)),
                devices[index],
            )
        )
    tensors = split_batch(context.typed.tensors, microbatches)
    transfers = build_transfers(context.typed, stages, context.cluster, tensors, options.training)
    records = layer_records(context.graph, context.layers, context.typed)
    return assemble_plan(
        context.graph, context.cluster, options, tuple(stages), search, records, transfers
    )


def _fits(plan_: Plan, context: BaselineContext) -> bool:
    return plan_.estimate.peak_memory_bytes <= context.budget_bytes


@dataclass
class _Best:
    """The fastest fitting plan so far, else the least-memory one."""

    budget_bytes: float
    plan: Plan | None = None
    parameters: Mapping[str, JsonValue] = field(default_factory=dict)
    tried: int = 0

    @property
    def fits(self) -> bool:
        return self.plan is not None and self.plan.estimate.peak_memory_bytes <= self.budget_bytes

    @property
    def cutoff_s(self) -> float:
        return self.plan.estimate.iteration_time_s if self.fits and self.plan else math.inf

    def offer(self, candidate: Plan, parameters: Mapping[str, JsonValue]) -> bool:
        """Keep `candidate` if it beats the best; True when it fits and was kept."""
        self.tried += 1
        fits = candidate.estimate.peak_memory_bytes <= self.budget_bytes
        if self.plan is None:
            better = True
        elif fits != self.fits:
            better = fits
        elif fits:
            better = candidate.estimate.iteration_time_s < self.plan.estimate.iteration_time_s
        else:
            better = candidate.estimate.peak_memory_bytes < self.plan.estimate.peak_memory_bytes
        if better:
            self.plan, self.parameters = candidate, dict(parameters)
        return better and fits

    def result(self, name: str, note: str = "") -> Baseline:
        parameters = {**self.parameters, "configurations_tried": self.tried}
        if self.plan is None:
            return Baseline(name, parameters, None, False, note or "no configuration applies")
        return Baseline(name, parameters, self.plan, self.fits, note)


def _one_stage(
    context: BaselineContext,
    name: str,
    meshes: Sequence[tuple[int, int]],
    strategy: StrategyOptions,
    extra: Callable[[tuple[int, int]], Mapping[str, JsonValue]] | None = None,
) -> Baseline:
    """A one-stage baseline on the whole cluster: the best logical mesh of `meshes` and
    microbatch count."""
    cluster = context.cluster
    best = _Best(context.budget_bytes)
    whole = (cluster.hosts, cluster.gpus_per_host)
    for shape in meshes:
        offer = _offering(
            context,
            best,
            name,
            [StageSpec(0, len(context.layers) - 1, whole, shape)],
            strategy,
            _batch_ways(strategy, shape),
            {"logical_mesh": shape, **(extra(shape) if extra else {})},
        )
        search_counts(context.graph.batch_size, context.options.microbatches, offer)
    return best.result(name)


def _offering(
    context: BaselineContext,
    best: _Best,
    name: str,
    specs: Sequence[StageSpec],
    strategy: StrategyOptions,
    batch_ways: int,
    parameters: Mapping[str, JsonValue],
) -> Callable[[int], float]:
    """The objective of one configuration for the microbatch search: build its plan at a count
    and offer it to `best`; its iteration time, inf when it does not fit, cannot beat the best,
    or the batch does not split `batch_ways` ways per microbatch."""

    def objective_s(microbatches: int) -> float:
        if not _batch_divides(context, microbatches, batch_ways):
            return math.inf
        recorded: dict[str, JsonValue] = {**parameters, "microbatches": microbatches}
        search = SearchReport(f"baseline: {name}", parameters=frozen_map(recorded))  # type: ignore[arg-type]
        try:
            candidate = explicit_plan(context, specs, microbatches, strategy, search, best.cutoff_s)
        except CutoffExceeded:
            return math.inf
        best.offer(candidate, recorded)
        if not _fits(candidate, context):
            return math.inf
        return candidate.estimate.iteration_time_s

    return objective_s


def _batch_ways(strategy: StrategyOptions, shape: tuple[int, int]) -> int:
    """How many ways a one-stage baseline splits each microbatch's batch."""
    if strategy.force_data_parallel:
        return shape[0] * shape[1]
    return shape[0] if strategy.force_batch_dim_to_mesh_dim == 0 else 1


def _batch_divides(context: BaselineContext, microbatches: int, ways: int) -> bool:
    batch = context.graph.batch_size
    return batch % microbatches == 0 and (batch // microbatches) % ways == 0


def data_parallel(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    zero: str = "off",
    context: BaselineContext | None = None,
) -> Baseline:
    """Data parallel on every GPU; `zero` "off", "zero2" or "zero3"."""
    context = context or BaselineContext(graph, cluster, options)
    meshes = [(1, cluster.num_devices)]
    if cluster.hosts > 1:
        meshes.append((cluster.hosts, cluster.gpus_per_host))
    name = {"off": "data-parallel", "zero2": "zero2", "zero3": "zero3"}[zero]
    strategy = StrategyOptions(zero=zero, force_data_parallel=True)
    return _one_stage(
        context, name, meshes, strategy, lambda shape: {"dp": cluster.num_devices, "zero": zero}
    )


def tensor_parallel_degrees(cluster: Cluster) -> tuple[int, ...]:
    """tp sizes inside a host: the divisors of the GPUs per host."""
    g = cluster.gpus_per_host
    return tuple(t for t in range(1, min(g, cluster.num_devices) + 1) if g % t == 0)


def deepspeed(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    tables: ConfigTables | None = None,
) -> Baseline:
    """DeepSpeed: ZeRO data parallelism (stage 1, 2 or 3 for every parameter) plus tensor
    parallelism inside a host, no pipeline, recomputation in every layer or none; each priced
    as `alpa-plan evaluate` prices it; the best (tp, ZeRO stage, recompute, B)."""
    tables = tables or ConfigTables(graph, cluster, options)
    best = _Best(options.memory_budget_bytes(cluster))
    n = cluster.num_devices
    zero_stages = (0,) if options.strategy.zero == "off" or not options.training else (1, 2, 3)
    for tp in tensor_parallel_degrees(cluster):
        if n % tp:
            continue
        for recompute in baseline_recomputes(options, (Recompute.NONE, Recompute.FULL)):
            for zero in zero_stages if n // tp > 1 else (0,):
                config = ParallelConfig(n // tp, tp, 1, 1, 1, recompute, zero)
                objective_s = _config_objective(
                    graph, cluster, options, tables, best, config, "deepspeed"
                )
                search_counts(graph.batch_size, options.microbatches, objective_s)
    return best.result("deepspeed")


def megatron_configurations(cluster: Cluster, num_layers: int) -> tuple[tuple[int, int, int], ...]:
    """Every (dp, tp, pp): tp inside a host, pp at most the layers, and each stage's dp x tp
    GPUs a submesh the packer can place (a divisor of a host, or whole hosts)."""
    n, g = cluster.num_devices, cluster.gpus_per_host
    found = []
    for tp in tensor_parallel_degrees(cluster):
        for pp in range(1, min(num_layers, n // tp) + 1):
            if n % (tp * pp):
                continue
            per_stage = n // pp
            if not (g % per_stage == 0 or per_stage % g == 0):
                continue
            found.append((per_stage // tp, tp, pp))
    return tuple(found)


MEGATRON_STRATEGY = StrategyOptions(zero="off", force_batch_dim_to_mesh_dim=0)
# Interleaving sizes the Megatron-LM baseline tries (virtual stages per device group).
MEGATRON_VIRTUAL_STAGES = (1, 2, 4)


def megatron_plan(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    dp: int,
    tp: int,
    pp: int,
    microbatches: int,
    vp: int = 1,
    recompute: Recompute = Recompute.NONE,
    tables: ConfigTables | None = None,
) -> Plan:
    """Megatron-LM's plan for one (dp, tp, pp, vp, recompute, B), priced as `alpa-plan
    evaluate` prices it (`planner/configuration.py`)."""
    config = ParallelConfig(dp, tp, pp, graph.batch_size // (dp * microbatches), vp, recompute)
    if graph.batch_size % (dp * microbatches):
        raise InfeasibleError(
            f"the batch of {graph.batch_size} does not split into {microbatches} microbatches "
            f"of {dp} data-parallel replicas"
        )
    found = evaluate_config(graph, cluster, options, config, tables=tables,
                            algorithm="baseline: megatron")  # fmt: skip
    return found.plan


def baseline_recomputes(
    options: PlanOptions, searched: tuple[Recompute, ...]
) -> tuple[Recompute, ...]:
    """The recomputation a baseline tries: `searched` when the options leave it to the search
    (auto), else the one they set; none in inference. Megatron-LM searches none, selective and
    full (`--recompute-granularity`); DeepSpeed's activation checkpointing is none or full."""
    if not options.training:
        return (Recompute.NONE,)
    if options.recompute is Recompute.AUTO:
        return searched
    return (options.recompute,)


def megatron(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    tables: ConfigTables | None = None,
) -> Baseline:
    """Megatron-LM 3D parallelism: the best (dp, tp, pp, vp, recompute, distributed optimizer,
    sequence parallelism where tp > 1, B), each priced as `alpa-plan evaluate` prices it."""
    tables = tables or ConfigTables(graph, cluster, options)
    best = _Best(options.memory_budget_bytes(cluster))
    layers = len(tables.layers)
    recomputes = baseline_recomputes(options, (Recompute.NONE, Recompute.SELECTIVE, Recompute.FULL))
    for dp, tp, pp in megatron_configurations(cluster, layers):
        for vp in MEGATRON_VIRTUAL_STAGES:
            if vp > 1 and (pp == 1 or pp * vp > layers or not options.training):
                continue
            for recompute in recomputes:
                for zero in megatron_zero_stages(options, dp):
                    for sequence_parallel in (False, True) if tp > 1 else (False,):
                        config = ParallelConfig(
                            dp, tp, pp, 1, vp, recompute, zero, sequence_parallel
                        )
                        objective_s = _config_objective(
                            graph, cluster, options, tables, best, config, "megatron"
                        )
                        search_counts(graph.batch_size, options.microbatches, objective_s)
    return best.result("megatron")


def megatron_zero_stages(options: PlanOptions, dp: int) -> tuple[int, ...]:
    """The optimizer layouts the Megatron-LM baseline tries: without and with its distributed
    optimizer (`--use-distributed-optimizer`, ZeRO-1 over the data-parallel replicas), the
    latter only where there are replicas to shard over, in training, and unless the options
    turn ZeRO off."""
    if dp == 1 or not options.training or options.strategy.zero == "off":
        return (0,)
    return (0, 1)


def _config_objective(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    tables: ConfigTables,
    best: _Best,
    shape: ParallelConfig,
    name: str,
) -> Callable[[int], float]:
    """The microbatch search's objective for one fixed configuration of baseline `name`
    (`shape`, whose microbatch size each count sets): its iteration time, inf when it cannot
    run or fit."""

    def objective_s(microbatches: int) -> float:
        if graph.batch_size % (shape.dp * microbatches):
            return math.inf
        config = replace(shape, microbatch_size=graph.batch_size // (shape.dp * microbatches))
        if config_problem(config, graph, cluster, options, len(tables.layers)) is not None:
            return math.inf
        found = evaluate_config(graph, cluster, options, config, tables=tables,
                                algorithm=f"baseline: {name}")  # fmt: skip
        recorded: dict[str, JsonValue] = {**config.record(), "microbatches": microbatches}
        del recorded["microbatch_size"]
        if name == "megatron":
            recorded["distributed_optimizer"] = config.zero == 1
            del recorded["zero"]
        else:  # one stage
            for key in ("pp", "vp"):
                del recorded[key]
            recorded["logical_mesh"] = (config.dp, config.tp)
        best.offer(found.plan, recorded)
        return found.plan.estimate.iteration_time_s if found.fits else math.inf

    return objective_s


def intra_only(graph: Graph, cluster: Cluster, options: PlanOptions) -> Baseline:
    """Alpa's ShardParallel: the whole model as one stage, the best logical mesh by the ILP,
    at the best microbatch count."""
    best = _Best(options.memory_budget_bytes(cluster))
    notes: list[str] = []

    def objective_s(microbatches: int) -> float:
        try:
            found = plan_intra_only(graph, cluster, replace(options, microbatches=microbatches))
        except InfeasibleError as error:
            notes.append(f"{microbatches} microbatches: {error}")
            return math.inf
        best.offer(found, {"microbatches": microbatches})
        return found.estimate.iteration_time_s

    search_counts(graph.batch_size, options.microbatches, objective_s)
    result = best.result("intra-only", "" if best.plan is not None else "; ".join(notes[-1:]))
    if result.plan is not None:
        mesh = result.plan.stages[0].logical_mesh
        result = replace(result, parameters={**result.parameters, "logical_mesh": mesh})
    return result


INTER_ONLY_STRATEGY = StrategyOptions(force_data_parallel=True)


def inter_only(graph: Graph, cluster: Cluster, options: PlanOptions, jobs: int = 1) -> Baseline:
    """A pipeline of data-parallel stages: the full inter-op search (its own microbatch search
    included), every stage forced to split only the batch."""
    forced = replace(options, strategy=INTER_ONLY_STRATEGY, search=Search.PIPESHARD)
    best = _Best(options.memory_budget_bytes(cluster))
    try:
        found = plan(graph, cluster, forced, jobs=jobs)
    except InfeasibleError as error:
        return best.result("inter-only", str(error))
    best.offer(found, {"microbatches": found.settings.microbatches, **pipeline_shape(found)})
    return best.result("inter-only")


def pipeline_shape(plan_: Plan) -> dict[str, JsonValue]:
    """Stages and their GPUs and logical meshes, for the record of a pipeline baseline."""
    return {
        "stages": len(plan_.stages),
        "stage_gpus": tuple(len(stage.devices) for stage in plan_.stages),
        "logical_meshes": tuple(stage.logical_mesh for stage in plan_.stages),
    }


def all_baselines(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    jobs: int = 1,
    progress: Progress | None = None,
    only: Sequence[str] = BASELINES,
) -> tuple[Baseline, ...]:
    """Every baseline of `only` (in `BASELINES` order). `options.microbatches`, when set, fixes
    the microbatch count of every baseline."""
    context = BaselineContext(graph, cluster, options)
    tables = ConfigTables(graph, cluster, options, jobs)  # shared: both price fixed configs
    builders: dict[str, Callable[[], Baseline]] = {
        "data-parallel": lambda: data_parallel(graph, cluster, options, "off", context),
        "zero2": lambda: data_parallel(graph, cluster, options, "zero2", context),
        "zero3": lambda: data_parallel(graph, cluster, options, "zero3", context),
        "megatron": lambda: megatron(graph, cluster, options, tables),
        "deepspeed": lambda: deepspeed(graph, cluster, options, tables),
        "intra-only": lambda: intra_only(graph, cluster, options),
        "inter-only": lambda: inter_only(graph, cluster, options, jobs),
    }
    chosen = [name for name in BASELINES if name in only]
    results = []
    for done, name in enumerate(chosen):
        if progress is not None:
            progress("baselines", done, len(chosen))
        results.append(builders[name]())
    if progress is not None:
        progress("baselines", len(chosen), len(chosen))
    return tuple(results)
