"""The full search (Alpa's PipeshardParallel): layers cut into stages on submeshes, each sharded.

1. cluster the ops into layers (`planner/layers.py`);
2. for each microbatch count the policy tries (`planner/microbatches.py`) whose memory lower
   bound fits the cluster (`planner/memory_bound.py`): build the cost table of every layer
   range on every submesh (`planner/stage_costs.py`), run the DP over it (`planner/inter_op.py`)
   and, when a lower bound says it could win, solve the whole model as one stage
   (`planner/polish.py`);
3. keep the fastest pipeline, bind its stages to devices (`planner/placement.py`), re-solve each
   chosen stage whole where that is faster (`planner/polish.py`) and write the plan
   (`planner/plan_assembly.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cost_models.cluster import Cluster
from planner.graph import Graph, Subgraph, split_batch
from planner.inter_op import Candidate, PipelineSolution, dp_pipelines
from planner.interleaving import ClusterShape, search_interleaved
from planner.intra_op import IntraOpSettings, StageSharding
from planner.layers import LayerSlice, cluster_layers
from planner.memory_bound import memory_lower_bound_bytes
from planner.mesh_shapes import submesh_shapes
from planner.microbatches import search_counts
from planner.ops import cast_floats, unknown_op_types
from planner.options import Objective, PlanOptions, Recompute, Schedule
from planner.pins import pin_problem
from planner.pipeline_search import PipelineObjective, search_pipeline
from planner.placement import Start, place_stages
from planner.plan_assembly import assemble_plan, build_stages, build_transfers, layer_records
from planner.polish import StageSolves, exact_one_stage, polish_stages
from planner.progress import Progress
from planner.stage_costs import RangePlan, StageCostTable
from plans.errors import InfeasibleError
from plans.plan import RECOMPUTE_FULL, RECOMPUTE_SELECTIVE, CountRecord, Plan, SearchReport

# Weight on the slowest stage for inference: "throughput" ranks plans by their slowest stage
# first, "latency" by the sum of the stages.
_THROUGHPUT_WEIGHT = 1e6

# 1F1B warm-ups searched: extra forwards before the first backward (memory for latency).
WARMUP_EXTRAS = (0, 1, 2, 4)


@dataclass(frozen=True)
class PipelineChoice:
    """The fastest pipeline at one microbatch count: its stages as the cost table priced them,
    the DP's objective and the table."""

    microbatches: int
    stages: tuple[RangePlan, ...]
    objective_s: float
    table: StageCostTable
    # Stages already solved as one ILP over their whole range (`exact_one_stage`), by index.
    exact: Mapping[int, StageSharding] = field(default_factory=dict)
    solves: StageSolves = field(default_factory=StageSolves)  # the stage ILPs solved so far
    warmup_extra: int = 0  # 1F1B's extra warm-up forwards (plans/schedules.py)
    virtual_stages: int = 1  # interleaved 1F1B: stages per device group
    # The cost tables of recomputing stages (by recompute mode), where the search priced them
    # besides `table`.
    recompute_tables: Mapping[str, StageCostTable] = field(default_factory=dict)

    @property
    def layer_ilps(self) -> tuple[int, int]:
        """Single-layer ILPs solved, and of those stopped at the time limit."""
        tables = [self.table, *self.recompute_tables.values()]
        return sum(t.solves for t in tables), sum(t.timeouts for t in tables)


def plan_pipeshard(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    progress: Progress | None = None,
    jobs: int = 1,
) -> Plan:
    """Alpa's PipeshardParallel (module docstring)."""
    typed = cast_floats(graph, options.dtype)
    layers = cluster_layers(typed, options.layers)
    problem = pin_problem(options.pins, len(layers), cluster.num_devices, cluster.gpus_per_host)
    if problem is not None:
        raise problem
    choice, tried = search_pipelines(typed, cluster, options, layers, progress, jobs)
    budget = options.memory_budget_bytes(cluster)
    if choice is None and options.pins.given:
        raise InfeasibleError(
            f"no pipeline of the model's {len(layers)} layers under {options.pins.describe()} "
            f"fits the budget of {_gib(budget)} per GPU "
            f"({options.memory_fraction:.0%} of {_gib(cluster.gpu.memory_bytes)}); "
            "drop or change a pin"
        )
    if choice is None:
        raise InfeasibleError(
            f"no pipeline of the model's {len(layers)} layers fits: every stage candidate "
            f"needs more than the budget of {_gib(budget)} per GPU "
            f"({options.memory_fraction:.0%} of {_gib(cluster.gpu.memory_bytes)}) for the "
            "microbatches it must hold; add GPUs or microbatches"
        )
    chosen = replace(options, microbatches=choice.microbatches)
    settings = chosen.intra_op_settings(cluster)
    groups = len(choice.stages) // choice.virtual_stages
    group_devices = place_stages(
        [s.submesh for s in choice.stages[:groups]], cluster.hosts, cluster.gpus_per_host
    )
    devices = tuple(group_devices[k % groups] for k in range(len(choice.stages)))
    # Polishing re-solves a stage alone on its devices: an interleaved stage shares them.
    exact = dict(choice.exact)
    if choice.virtual_stages == 1:
        exact = polish_stages(
            choice.stages, choice.table, cluster, settings, options.schedule,
            _objective(options, cluster, choice.microbatches, choice.warmup_extra), choice.exact,
            choice.solves,
        )  # fmt: skip
    stages = build_stages(
        typed, choice.stages, choice.microbatches, choice.table, devices, options.schedule,
        cluster, exact, choice.warmup_extra, choice.virtual_stages, choice.recompute_tables,
    )  # fmt: skip
    tensors = split_batch(typed.tensors, choice.microbatches)
    transfers = build_transfers(typed, stages, cluster, tensors, options.training)
    search = SearchReport(
        algorithm="inter-op DP + intra-op ILP (PipeshardParallel)",
        layers=len(layers),
        submeshes=submesh_shapes(cluster, options.submesh_space),
        microbatches=tuple(tried),
        layer_ilps=choice.layer_ilps[0],
        layer_ilps_at_time_limit=choice.layer_ilps[1],
        stages_solved_whole=tuple(sorted(exact)),
        replicated_fallback=unknown_op_types(typed),
    )
    return assemble_plan(
        graph, cluster, chosen, stages, search, layer_records(graph, layers, typed), transfers,
        choice.warmup_extra, choice.virtual_stages,
    )  # fmt: skip


def search_pipelines(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    layers: tuple[LayerSlice, ...],
    progress: Progress | None = None,
    jobs: int = 1,
) -> tuple[PipelineChoice | None, list[CountRecord]]:
    """The fastest pipeline over the microbatch counts; and a record of each count tried."""
    submeshes, shapes = pinned_submeshes(cluster, options)
    best: PipelineChoice | None = None
    records: list[CountRecord] = []

    def objective_s(microbatches: int) -> float:
        nonlocal best
        settings = options.intra_op_settings(cluster, microbatches)
        model = graph.subgraph(tensors=split_batch(graph.tensors, microbatches))
        # Recomputation, where the search may use it, keeps less: the bound must allow it.
        searched = options.recompute is Recompute.AUTO
        bound_settings = replace(settings, recompute=RECOMPUTE_FULL) if searched else settings
        bound = memory_lower_bound_bytes(model, layers, bound_settings)
        if bound > cluster.num_devices * settings.memory_budget_bytes:
            records.append(CountRecord(microbatches, "infeasible", memory_lower_bound_bytes=bound))
            return math.inf
        found, record = _search_count(
            model, cluster, options, layers, settings, submeshes, shapes, best, progress, jobs
        )
        records.append(record)
        if found is None:
            return math.inf
        if best is None or found.objective_s < best.objective_s:
            best = found
        return found.objective_s

    search_counts(graph.batch_size, options.microbatches, objective_s)
    return best, records


def pinned_submeshes(
    cluster: Cluster, options: PlanOptions
) -> tuple[tuple[tuple[int, int], ...], dict[tuple[int, int], tuple[tuple[int, int], ...]]]:
    """The submeshes searched and, where the pins fix the logical mesh, the logical shapes of
    each (`planner/pins.py`; a submesh with none is not searched, nor the whole cluster as one
    stage there)."""
    submeshes = submesh_shapes(cluster, options.submesh_space)  # the whole cluster among them
    if not options.pins.pins_mesh:
        return submeshes, {}
    shapes = {s: options.pins.logical_shapes(s, cluster.gpus_per_host) for s in submeshes}
    return tuple(s for s in submeshes if shapes[s]), shapes


def _search_count(
    model: Subgraph,
    cluster: Cluster,
    options: PlanOptions,
    layers: tuple[LayerSlice, ...],
    settings: IntraOpSettings,
    submeshes: tuple[tuple[int, int], ...],
    shapes: dict[tuple[int, int], tuple[tuple[int, int], ...]],
    best: PipelineChoice | None,
    progress: Progress | None,
    jobs: int,
) -> tuple[PipelineChoice | None, CountRecord]:
    """The fastest pipeline at one microbatch count (the DP over the cost table, or the whole
    model as one exact stage), and the record of the count."""
    microbatches = settings.microbatches
    pins = options.pins
    table = StageCostTable(model, layers, cluster, settings, shapes)

    def reporter(what: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(f"layer ILPs{what}, {microbatches} microbatches", done, total)

        return report

    table.solve_layers(submeshes, jobs, reporter(""))
    candidates, plans = table.candidates(submeshes, microbatches, options.schedule)
    recompute_tables: dict[str, StageCostTable] = {}
    mode_pools: list[list[Candidate]] = []
    plain = len(candidates)  # the candidates without recomputation come first
    if options.training and options.recompute is Recompute.AUTO:
        recompute_tables, mode_pools = _add_recomputing(
            table, candidates, plans, submeshes, shapes, options, reporter, jobs
        )
    objective = _objective(options, cluster, microbatches)
    solves = StageSolves()
    # With recomputing candidates, the pipelines without them are searched first, then those
    # of each mode alone, and the best so far seeds the search over all: a search that stops at
    # its budget never ends slower than the search of one mode would.
    pools = [candidates[:plain], *mode_pools, candidates] if mode_pools else [candidates]
    solutions: list[PipelineSolution] = []
    found: PipelineChoice | None = None
    simulated, proven = 0, True
    best_stages: list[Sequence[Candidate]] = []
    incumbent_s = math.inf
    for pool in pools if pins.vp in (None, 1) else []:  # a pinned vp > 1: interleaved only
        solutions = dp_pipelines(
            pool, len(layers), cluster.num_devices, objective.weight,
            cluster.gpus_per_host, pins.plain_stages,
        )  # fmt: skip
        if not solutions or not options.training:
            continue
        starting = [*best_stages, *(s.stages for s in solutions)]
        for warmup_extra in warmup_extras(options.schedule, microbatches):
            result = search_pipeline(
                pool, plans, starting, len(layers), cluster.gpus_per_host, cluster.hosts,
                microbatches, str(options.schedule), warmup_extra, incumbent_s,
                pins.plain_stages,
            )  # fmt: skip
            if result is not None:
                simulated, proven = simulated + result.simulated, proven and result.proven
                stages = tuple(plans[c.key] for c in result.stages)
                found = PipelineChoice(
                    microbatches, stages, result.makespan_s, table, solves=solves,
                    warmup_extra=warmup_extra, recompute_tables=recompute_tables,
                )  # fmt: skip
                incumbent_s = result.makespan_s
                starting = [result.stages, *starting]
                best_stages = [result.stages]
        assert found is not None  # the DP's pipelines fit without a deeper warm-up
    if options.training and options.schedule is Schedule.ONE_F_ONE_B:
        shape = ClusterShape(
            len(layers), cluster.gpus_per_host, cluster.hosts, microbatches,
            settings.memory_budget_bytes,
        )  # fmt: skip
        incumbent = found.objective_s if found is not None else math.inf
        interleaved = search_interleaved(candidates, plans, submeshes, shape, incumbent, pins)
        if interleaved is not None:
            found = PipelineChoice(
                microbatches, interleaved.stages, interleaved.makespan_s, table, solves=solves,
                virtual_stages=interleaved.virtual_stages, recompute_tables=recompute_tables,
            )  # fmt: skip
    elif solutions:
        stages = tuple(plans[c.key] for c in solutions[0].stages)
        found = PipelineChoice(
            microbatches, stages, objective.of(stages), table, solves=solves,
            recompute_tables=recompute_tables,
        )  # fmt: skip
    limit_s = min(found.objective_s if found else math.inf, best.objective_s if best else math.inf)
    whole = None
    if pins.allows_one_stage:
        whole = exact_one_stage(
            table, cluster, settings, options.schedule, objective, limit_s, solves
        )
    if whole is not None:
        found = PipelineChoice(
            microbatches, (whole.plan,), whole.objective_s, table, {0: whole.sharding}, solves
        )
    if found is None:
        return None, CountRecord(microbatches, "infeasible")
    return found, CountRecord(
        microbatches,
        "ok",
        objective_s=found.objective_s,
        stages=len(found.stages),
        candidates=len(candidates),
        one_stage_solved_whole=whole is not None,
        pipelines_simulated=simulated if options.training else None,
        proven_optimal=proven if options.training else None,
    )


def warmup_extras(schedule: Schedule, microbatches: int) -> tuple[int, ...]:
    """The deeper warm-ups searched (1F1B only): none, then 1, 2 and 4 extra forwards, fewer
    than the microbatches."""
    if schedule is not Schedule.ONE_F_ONE_B:
        return (0,)
    return tuple(w for w in WARMUP_EXTRAS if w == 0 or w < microbatches)


def _add_recomputing(
    table: StageCostTable,
    candidates: list[Candidate],
    plans: list[RangePlan],
    submeshes: tuple[tuple[int, int], ...],
    shapes: dict[tuple[int, int], tuple[tuple[int, int], ...]],
    options: PlanOptions,
    reporter: Callable[[str], Callable[[int, int], None]],
    jobs: int,
) -> tuple[dict[str, StageCostTable], list[list[Candidate]]]:
    """Recomputing candidates added to `candidates` (their plans to `plans`), selective first,
    then full; the cost table of each mode priced, and per mode the pipelines' pool that
    recomputes in that mode wherever it was priced: its candidates, unfiltered, and elsewhere
    those without recomputation.

    Recomputation only adds time to a plan that holds what it must: a mode is priced on the
    submeshes where some plan of the modes before it cannot hold every microbatch, and a
    candidate of it is kept unless one of the modes before on the same range, submesh and start
    is as fast, as fast once per iteration, and holds as many microbatches."""
    index = {shape: k for k, shape in enumerate(submeshes)}
    plain = list(candidates)
    pools: list[list[Candidate]] = []
    kept: dict[tuple[int, int, int, Start], list[Candidate]] = {}
    for c in candidates:
        kept.setdefault(_place(c), []).append(c)
    limited = [s for s in submeshes if s in table.memory_limited]
    tables: dict[str, StageCostTable] = {}
    microbatches = table.settings.microbatches
    for mode in (RECOMPUTE_SELECTIVE, RECOMPUTE_FULL):
        if not limited:
            break
        settings = replace(table.settings, recompute=mode)
        more_table = StageCostTable(table.model, table.layers, table.cluster, settings, shapes)
        more_table.solve_layers(tuple(limited), jobs, reporter(f" ({mode} recomputation)"))
        more, more_plans = more_table.candidates(limited, microbatches, options.schedule)
        more = [replace(c, key=c.key + len(plans), submesh=index[limited[c.submesh]]) for c in more]
        priced = {index[s] for s in limited}
        pools.append([*(c for c in plain if c.submesh not in priced), *more])
        added = [c for c in more if not any(_dominates(o, c) for o in kept.get(_place(c), []))]
        for c in added:
            kept.setdefault(_place(c), []).append(c)
        candidates += added
        plans += more_plans
        tables[mode] = more_table
        limited = [s for s in limited if s in more_table.memory_limited]
    return tables, pools


def _place(c: Candidate) -> tuple[int, int, int, Start]:
    """What two candidates must share to be compared: range, submesh and start."""
    return (c.first, c.last, c.submesh, c.start)


def _dominates(a: Candidate, b: Candidate) -> bool:
    """`a` is as good a stage as `b` in every respect the pipeline search weighs."""
    return (
        a.time_s <= b.time_s
        and a.iteration_s <= b.iteration_s
        and a.max_following >= b.max_following
    )


def _objective(
    options: PlanOptions, cluster: Cluster, microbatches: int, warmup_extra: int = 0
) -> PipelineObjective:
    return PipelineObjective(
        training=options.training,
        microbatches=microbatches,
        weight=_slowest_stage_weight(options, microbatches),
        gpus_per_host=cluster.gpus_per_host,
        hosts=cluster.hosts,
        schedule=str(options.schedule),
        warmup_extra=warmup_extra,
    )


def _slowest_stage_weight(options: PlanOptions, microbatches: int) -> int:
    """The weight of the slowest stage in the DP's objective, as microbatches in the pipeline
    formula: B in training; in inference 1 for latency (the sum of the stages) and a large
    weight for throughput (the slowest stage first)."""
    if options.training:
        return microbatches
    if options.objective is Objective.LATENCY:
        return 1
    return int(_THROUGHPUT_WEIGHT) + 1


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"
