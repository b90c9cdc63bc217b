"""The inter-op pass's cost table: what every run of layers costs on every submesh.

Alpa solves the intra-op problem for every (layer range, submesh, logical mesh). Here the range
is composed from single layers, which makes the table affordable (one ILP per distinct layer,
logical mesh and memory level, instead of one per range):

1. each distinct layer (by its structural fingerprint: repeated transformer blocks share one)
   is solved by the intra-op ILP on each logical mesh, first without a memory limit, then
   under budgets between that plan's memory and the least the layer can reach
   (`LEVEL_FRACTIONS`), giving plans that trade time for memory;
2. a range i..j at level q costs the sum of its layers' level-q plans, plus the resharding of
   every tensor that one layer of the range sends to a later one (the single-layer ILPs see
   their inputs as free; composing charges what they assumed away), plus the transfer of what
   crosses the cut before it (point-to-point over the link of that cut, `planner/placement.py`:
   a candidate that may start at a host's start or inside a host is priced once for each,
   forward and, when training, the gradient back);
3. its memory per device is the sum of the layers' parameter state plus `in_flight` times
   their kept activations (with full recomputation: only each layer's inputs, plus one layer's
   activations rebuilt during the backward; with selective: what the layers keep, plus the
   largest one layer's backward rebuilds); the most microbatches it can hold decides how many
   stages may follow it (1F1B: stage k of S holds min(S - k, B)).

Approximations, stated: ranges use one memory level for all their layers; the transfer is
spread over the receiving stage's devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from cost_models.cluster import Cluster
from cost_models.collectives import transfer_s
from cost_models.mesh import LogicalMesh, logical_mesh
from planner.graph import DTYPE_SIZE_BYTES, Op, Subgraph, TensorKind
from planner.inter_op import Candidate
from planner.intra_op import IntraOpSettings, StageSharding, owned_parameters, prepare_stage
from planner.intra_op_ilp import MemoryInfeasible
from planner.layers import LayerSlice
from planner.mesh_shapes import logical_shapes
from planner.placement import Start, start_link
from planner.reshard import reshard_s
from planner.strategies import Strategy
from planner.workers import run_tasks
from plans.plan import RECOMPUTE_FULL, RECOMPUTE_NONE
from plans.specs import ShardingSpec

# Memory levels per layer and mesh after the unlimited plan: budgets at these fractions of the
# way from the least memory the layer can reach to what the unlimited plan uses.
LEVEL_FRACTIONS = (0.25, 0.0)
# A logical shape this many times slower than the best shape of its submesh (for the whole
# model, without a memory limit) is not refined into tighter memory levels.
SHAPE_PRUNE_FACTOR = 2.0
# More microbatches in flight than this count as "any number" (the pipeline never needs more).
UNLIMITED_IN_FLIGHT = 1 << 20


def solve_layer_on_submesh(
    layer: Subgraph,
    cluster: Cluster,
    settings: IntraOpSettings,
    submesh: tuple[int, int],
    refine: frozenset[tuple[int, int]] = frozenset(),
    shapes: tuple[tuple[int, int], ...] | None = None,
) -> dict[tuple[int, int], list[LayerPlan]]:
    """One layer on one submesh: for each logical shape (`shapes`, by default every one of the
    submesh), its unlimited-memory plan, followed for the shapes in `refine` by plans under
    tighter budgets (`LEVEL_FRACTIONS`)."""
    unlimited = replace(settings, memory_budget_bytes=math.inf, in_flight=1)
    result: dict[tuple[int, int], list[LayerPlan]] = {}
    for shape in shapes if shapes is not None else logical_shapes(submesh, cluster.gpus_per_host):
        mesh = logical_mesh(cluster, submesh, shape)
        prepared = prepare_stage(layer, mesh, cluster.gpu, unlimited)
        try:
            first = prepared.solve()
        except MemoryInfeasible:  # only forbidden reshardings can cause this
            continue
        plans = [LayerPlan(tuple(first.strategies[op.name] for op in layer.ops), first)]
        if shape in refine:
            least = prepared.minimum_memory_bytes
            for fraction in LEVEL_FRACTIONS:
                budget = least + (first.peak_bytes - least) * fraction
                try:
                    tighter = prepared.solve(memory_budget_bytes=budget * (1 + 1e-9))
                except MemoryInfeasible:
                    continue
                if tighter.peak_bytes < plans[-1].sharding.peak_bytes:
                    plans.append(
                        LayerPlan(tuple(tighter.strategies[op.name] for op in layer.ops), tighter)
                    )
        result[shape] = plans
    return result


@dataclass(frozen=True)
class LayerPlan:
    """One layer solved on one logical mesh at one memory level."""

    strategies: tuple[Strategy, ...]  # by op position in the layer
    sharding: StageSharding


@dataclass(frozen=True)
class RangePlan:
    """A candidate stage: layers first..last on a logical mesh at a memory level."""

    first: int
    last: int
    submesh: tuple[int, int]
    mesh: LogicalMesh
    level: int
    time_s: float  # one microbatch, with in-range resharding and incoming transfers
    forward_s: float  # compute of one microbatch
    backward_s: float
    communication_s: float  # in-stage collectives and the resharding between layers
    gradient_sync_s: float  # once per iteration
    optimizer_step_s: float  # once per iteration
    state_bytes: int
    kept_bytes: int  # activations held per microbatch in flight
    transient_bytes: int  # held once, whatever the microbatches (recomputation: one layer's)
    resharding_s: float  # part of time_s: between layers of the range
    transfer_s: float  # part of time_s: receiving from the stage before
    start: Start = Start.ANYWHERE  # where the stage starts (the link it receives over)
    # Parameter, gradient and optimizer bytes the layers' own plans count more than once (a
    # parameter shared by layers of the range), already left out of state_bytes.
    repeated_state: tuple[int, int, int] = (0, 0, 0)
    recompute: str = RECOMPUTE_NONE  # how its layers rebuild activations in the backward

    @property
    def iteration_s(self) -> float:
        """Once per iteration: gradient sync and optimizer step."""
        return self.gradient_sync_s + self.optimizer_step_s

    @property
    def block_s(self) -> float:
        """The stage's own work on one microbatch: forward, backward, in-stage collectives
        (`time_s` without receiving from the stage before)."""
        return self.forward_s + self.backward_s + self.communication_s

    def activation_bytes(self, in_flight: int) -> int:
        return in_flight * self.kept_bytes + self.transient_bytes

    def max_in_flight(self, budget_bytes: float) -> int:
        spare = budget_bytes - self.state_bytes - self.transient_bytes
        if spare < self.kept_bytes:
            return 0
        if self.kept_bytes == 0:
            return UNLIMITED_IN_FLIGHT
        return int(spare // self.kept_bytes)


@dataclass(frozen=True)
class _LevelTable:
    """Every layer's plan at one memory level on one logical mesh."""

    mesh: LogicalMesh
    layers: list[StageSharding]  # by layer index
    pair_s: dict[tuple[int, int], float]  # resharding, layer a -> later layer b, per microbatch
    # A parameter used by several layers (a tied embedding) is owned by an op in each layer's
    # own ILP; per parameter, those owners' (layer, strategy), in layer order.
    shared: dict[str, list[tuple[int, Strategy]]]


class StageCostTable:
    """Solves layers lazily and composes ranges; one instance per (graph, microbatches).

    `shapes`, where given, restricts the logical meshes of a submesh (a fixed configuration,
    `planner/configuration.py`); by default every logical shape of `logical_shapes`."""

    def __init__(
        self,
        model: Subgraph,
        layers: Sequence[LayerSlice],
        cluster: Cluster,
        settings: IntraOpSettings,
        shapes: Mapping[tuple[int, int], tuple[tuple[int, int], ...]] | None = None,
    ) -> None:
        self._shapes = dict(shapes or {})
        self.model = model
        self.ops = ops = model.ops
        self.tensors = model.tensors
        self.layers = layers
        self.cluster = cluster
        self.settings = settings
        self.fingerprints = [self.layer(k).fingerprint for k in range(len(layers))]
        # (fingerprint, submesh) -> logical shape -> plans by memory level
        self._solved: dict[tuple[str, tuple[int, int]], dict[tuple[int, int], list[LayerPlan]]] = {}
        self._layer_of = {
            op.name: index for index, layer in enumerate(layers)
            for op in ops[layer.start : layer.stop]
        }  # fmt: skip
        self._position = {op.name: p for layer in layers
                          for p, op in enumerate(ops[layer.start : layer.stop])}  # fmt: skip
        self._cross = self._cross_layer_edges()
        self._shared_owners = self._shared_parameter_owners()
        self._crossing: dict[int, tuple[str, ...]] = {}
        self.solves = 0  # single-layer ILPs solved so far
        self.timeouts = 0  # of which stopped at the time limit (best incumbent kept)
        # The submeshes on which some candidate plan could not hold every microbatch
        # (`candidates`): memory binds a choice there, so recomputation may pay.
        self.memory_limited: set[tuple[int, int]] = set()
        self._tables: dict[tuple[tuple[int, int], tuple[int, int]], list[_LevelTable]] = {}

    # --- single layers -------------------------------------------------------------------

    def shapes_of(self, submesh: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        """The logical shapes this table solves `submesh` on."""
        if submesh in self._shapes:
            return self._shapes[submesh]
        return logical_shapes(submesh, self.cluster.gpus_per_host)

    def layer(self, index: int) -> Subgraph:
        """Layer `index` as a subgraph of the model."""
        return self.model.slice(self.layers[index].start, self.layers[index].stop)

    def solve_layers(
        self,
        submeshes: Sequence[tuple[int, int]],
        jobs: int = 1,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Solve every distinct layer on every submesh, `jobs` at a time: first without a
        memory limit; then, on the logical meshes where the whole model with every microbatch
        in flight would not fit and that are within `SHAPE_PRUNE_FACTOR` of the fastest,
        under tighter budgets too."""
        distinct = [i for i, f in enumerate(self.fingerprints) if self.fingerprints.index(f) == i]
        todo = [
            (index, submesh)
            for index in distinct
            for submesh in submeshes
            if (self.fingerprints[index], submesh) not in self._solved
        ]
        self._run(todo, {}, jobs, progress)
        refine: dict[tuple[int, tuple[int, int]], frozenset[tuple[int, int]]] = {}
        for submesh in {submesh for _, submesh in todo}:
            shapes = self._shapes_to_refine(submesh)
            if shapes:
                for index in distinct:
                    refine[(index, submesh)] = shapes
        self._run(list(refine), refine, jobs, progress)

    def _run(
        self,
        todo: list[tuple[int, tuple[int, int]]],
        refine: Mapping[tuple[int, tuple[int, int]], frozenset[tuple[int, int]]],
        jobs: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        # One task per (layer, submesh, logical shape): a model of one repeated layer still
        # spreads over the workers.
        tasks, owners = [], []
        for index, submesh in todo:
            refined = refine.get((index, submesh))
            for shape in self.shapes_of(submesh):
                if refined is not None and shape not in refined:
                    continue
                args = (
                    self.layer(index), self.cluster, self.settings, submesh,
                    frozenset({shape}) if refined else frozenset(), (shape,),
                )  # fmt: skip
                tasks.append((solve_layer_on_submesh, args))
                owners.append((index, submesh))
        solved: dict[tuple[int, tuple[int, int]], dict[tuple[int, int], list[LayerPlan]]] = {}
        for owner, found in zip(owners, run_tasks(tasks, jobs, progress), strict=True):
            solved.setdefault(owner, {}).update(found)
        for index, submesh in todo:
            fresh = solved.get((index, submesh), {})
            self.solves += sum(len(levels) for levels in fresh.values())
            self.timeouts += sum(
                plan.sharding.solution.status == "time limit"
                for levels in fresh.values()
                for plan in levels
            )
            plans = fresh
            if (index, submesh) in refine:  # the shapes not refined keep their first plans
                plans = {**self._solved[(self.fingerprints[index], submesh)], **fresh}
                plans = {shape: plans[shape] for shape in self.shapes_of(submesh) if shape in plans}
            self._solved[(self.fingerprints[index], submesh)] = plans

    def _shapes_to_refine(self, submesh: tuple[int, int]) -> frozenset[tuple[int, int]]:
        """The logical shapes of `submesh` worth tighter memory levels."""
        fastest = math.inf
        needs: dict[tuple[int, int], tuple[float, float]] = {}
        for shape in self.shapes_of(submesh):
            firsts = [self.layer_plans(k, submesh, shape)[:1] for k in range(len(self.layers))]
            if not all(firsts):
                continue
            shardings = [plans[0].sharding for plans in firsts]
            time_s = sum(s.microbatch_s for s in shardings)
            memory = (
                sum(s.parameter_bytes + s.gradient_bytes + s.optimizer_bytes for s in shardings)
                + self.settings.microbatches * self._kept_bytes(shardings)
                + self._transient_bytes(shardings)
            )
            fastest = min(fastest, time_s)
            needs[shape] = (time_s, memory)
        return frozenset(
            shape
            for shape, (time_s, memory) in needs.items()
            if memory > self.settings.memory_budget_bytes and time_s <= SHAPE_PRUNE_FACTOR * fastest
        )

    def layer_plans(
        self, index: int, submesh: tuple[int, int], shape: tuple[int, int]
    ) -> list[LayerPlan]:
        """The memory levels of layer `index` on a logical mesh; empty when the shape was
        pruned (see `solve_layer_on_submesh`)."""
        key = (self.fingerprints[index], submesh)
        if key not in self._solved:
            self.solve_layers([submesh])
        return self._solved[key].get(shape, [])

    # --- ranges ----------------------------------------------------------------------------

    def _shared_parameter_owners(self) -> dict[str, list[tuple[int, Op]]]:
        """Parameters that ops of several layers read, with the op that owns (pays for) each
        in each layer's own ILP; only owners that own that parameter alone, so that their
        strategy's state is exactly the parameter's."""
        owners: dict[str, list[tuple[int, Op]]] = {}
        for k in range(len(self.layers)):
            layer = self.layer(k)
            for op_name, names in owned_parameters(layer).items():
                if len(names) == 1:
                    (name,) = names
                    op = layer.ops[layer.position[op_name]]
                    owners.setdefault(name, []).append((k, op))
        return {name: found for name, found in owners.items() if len(found) > 1}

    def _cross_layer_edges(self) -> dict[tuple[int, int], list[tuple[str, Op, int, Op, int]]]:
        """(producer layer, consumer layer) -> tensors: (name, producer, output position,
        consumer, input position)."""
        producer = self.model.producer
        edges: dict[tuple[int, int], list[tuple[str, Op, int, Op, int]]] = {}
        for op in self.ops:
            for position, name in enumerate(op.inputs):
                if not name or name not in producer:
                    continue
                if self.tensors[name].kind is not TensorKind.ACTIVATION:
                    continue
                source = producer[name]
                a, b = self._layer_of[source.name], self._layer_of[op.name]
                if a != b:
                    edges.setdefault((a, b), []).append(
                        (name, source, source.outputs.index(name), op, position)
                    )
        return edges

    def _strategy(self, op: Op, plans: Mapping[int, LayerPlan]) -> Strategy:
        return plans[self._layer_of[op.name]].strategies[self._position[op.name]]

    def _reshard(
        self, name: str, source: ShardingSpec | None, target: ShardingSpec | None, mesh: LogicalMesh
    ) -> float:
        if source is None or target is None or source == target:
            return 0.0
        tensor = self.tensors[name]
        return reshard_s(
            tensor.shape, DTYPE_SIZE_BYTES[tensor.dtype], source, target, mesh,
            self.settings.training, self.settings.reshard_rules,
        )  # fmt: skip

    def _level_tables(self, submesh: tuple[int, int], shape: tuple[int, int]) -> list[_LevelTable]:
        """Per memory level: every layer's plan on this logical mesh, as sums over ranges."""
        key = (submesh, shape)
        if key in self._tables:
            return self._tables[key]
        per_layer = [self.layer_plans(k, submesh, shape) for k in range(len(self.layers))]
        tables = []
        if all(per_layer):
            for level in range(min(len(plans) for plans in per_layer)):
                chosen = {k: plans[level] for k, plans in enumerate(per_layer)}
                mesh = chosen[0].sharding.mesh
                pair_s = {
                    pair: sum(
                        self._reshard(
                            name,
                            self._strategy(source, chosen).output_specs[out_position],
                            self._strategy(consumer, chosen).input_specs[in_position],
                            mesh,
                        )
                        for name, source, out_position, consumer, in_position in tensors
                    )
                    for pair, tensors in self._cross.items()
                }
                shared = {
                    name: [(k, self._strategy(op, chosen)) for k, op in owners]
                    for name, owners in self._shared_owners.items()
                }
                tables.append(
                    _LevelTable(mesh, [chosen[k].sharding for k in sorted(chosen)], pair_s, shared)
                )
        self._tables[key] = tables
        return tables

    def crossing(self, first: int) -> tuple[str, ...]:
        """The activations that cross the cut before layer `first`: made in layers before it,
        read in it or after it (`planner/placement.py`), in name order."""
        if first not in self._crossing:
            self._crossing[first] = tuple(
                sorted(
                    {
                        edge[0]
                        for (a, b), edges in self._cross.items()
                        if a < first <= b
                        for edge in edges
                    }
                )
            )
        return self._crossing[first]

    def range_plans(
        self, first: int, last: int, submesh: tuple[int, int], start: Start = Start.ANYWHERE
    ) -> list[RangePlan]:
        """Every (logical mesh, level) plan of layers first..last on `submesh`, receiving what
        crosses the cut before it over the link a stage that starts as `start` receives over."""
        transfer = self._transfer_s(self.crossing(first), submesh, start)
        found = []
        for shape in self.shapes_of(submesh):
            for level, table in enumerate(self._level_tables(submesh, shape)):
                layers = table.layers[first : last + 1]
                resharding = sum(
                    cost for (a, b), cost in table.pair_s.items() if first <= a and b <= last
                )
                # A parameter shared by layers of the range is held and synchronised once.
                repeats = [
                    strategy
                    for owners in table.shared.values()
                    for strategy in [s for k, s in owners if first <= k <= last][1:]
                ]
                found.append(
                    RangePlan(
                        first=first,
                        last=last,
                        submesh=submesh,
                        mesh=table.mesh,
                        level=level,
                        time_s=sum(s.microbatch_s for s in layers) + resharding + transfer,
                        forward_s=sum(s.forward_s for s in layers),
                        backward_s=sum(s.backward_s for s in layers),
                        communication_s=sum(s.communication_s for s in layers) + resharding,
                        gradient_sync_s=sum(s.gradient_sync_s for s in layers)
                        - sum(s.gradient_sync_s for s in repeats),
                        optimizer_step_s=sum(s.optimizer_step_s for s in layers)
                        - sum(s.optimizer_step_s for s in repeats),
                        state_bytes=sum(s.state_bytes for s in layers)
                        - sum(s.state_bytes for s in repeats),
                        repeated_state=(
                            sum(s.parameter_bytes for s in repeats),
                            sum(s.gradient_bytes for s in repeats),
                            sum(s.optimizer_bytes for s in repeats),
                        ),
                        kept_bytes=self._kept_bytes(layers),
                        transient_bytes=self._transient_bytes(layers),
                        resharding_s=resharding,
                        transfer_s=transfer,
                        start=start,
                        recompute=self.recompute,
                    )
                )
        return found

    def layer_sharding(
        self, index: int, submesh: tuple[int, int], shape: tuple[int, int], level: int
    ) -> tuple[StageSharding, tuple[Strategy, ...]]:
        """The chosen plan of layer `index`: its sharding (of the representative layer with the
        same fingerprint) and its strategies by op position."""
        plan = self.layer_plans(index, submesh, shape)[level]
        return plan.sharding, plan.strategies

    @property
    def recompute(self) -> str:
        """The recomputation of every range this table composes (RECOMPUTE_NONE inference)."""
        return self.settings.recompute if self.settings.recomputes else RECOMPUTE_NONE

    def _kept_bytes(self, layers: Sequence[StageSharding]) -> int:
        """Activations a range holds per microbatch in flight: every tensor its layers keep,
        or with full recomputation only each layer's inputs."""
        if self.recompute == RECOMPUTE_FULL:
            return sum(s.boundary_bytes for s in layers)
        return sum(s.activation_bytes for s in layers)

    def _transient_bytes(self, layers: Sequence[StageSharding]) -> int:
        """With recomputation, the backward rebuilds one layer's activations at a time: all
        it saves (full), or what its recomputed ops would have kept (selective)."""
        if self.recompute == RECOMPUTE_FULL:
            return max((s.activation_bytes for s in layers), default=0)
        return max((s.rebuilt_bytes for s in layers), default=0)

    def _transfer_s(self, names: Sequence[str], submesh: tuple[int, int], start: Start) -> float:
        """Receiving the tensors `names` from the stage before, one message each, spread over
        this stage's devices (and, when training, sending their gradients back)."""
        link = start_link(self.cluster, start)
        devices = submesh[0] * submesh[1]
        return sum(
            transfer_s(self.tensors[name].size_bytes, devices, link, self.settings.training)
            for name in names
        )

    def starts(self, first: int, submesh: tuple[int, int]) -> tuple[Start, ...]:
        """The ways a stage of layers from `first` on `submesh` may start, each with its own
        receiving link: anywhere when it receives nothing or the cluster is one host, at a
        host's start for whole hosts, at a host's start or inside a host otherwise."""
        if not self.crossing(first) or self.cluster.hosts == 1:
            return (Start.ANYWHERE,)
        if submesh[1] == self.cluster.gpus_per_host:
            return (Start.HOST_START,)
        return (Start.HOST_START, Start.INSIDE_HOST)

    def candidates(
        self,
        submeshes: Sequence[tuple[int, int]],
        microbatches: int,
        schedule: str,
    ) -> tuple[list[Candidate], list[RangePlan]]:
        """Every usable (range, submesh) candidate for the DP, with its RangePlan by `key`.

        Per (range, submesh) only the plans that are best for some number of following stages
        are kept (Pareto in time, once-per-iteration time and memory)."""
        budget = self.settings.memory_budget_bytes
        candidates: list[Candidate] = []
        plans: list[RangePlan] = []
        for first in range(len(self.layers)):
            for last in range(first, len(self.layers)):
                for index, submesh in enumerate(submeshes):
                    for start in self.starts(first, submesh):
                        self._add_candidates(
                            first, last, index, submesh, start, microbatches, schedule, budget,
                            candidates, plans,
                        )  # fmt: skip
        return candidates, plans

    def _add_candidates(
        self,
        first: int,
        last: int,
        index: int,
        submesh: tuple[int, int],
        start: Start,
        microbatches: int,
        schedule: str,
        budget: float,
        candidates: list[Candidate],
        plans: list[RangePlan],
    ) -> None:
        options = []
        for plan in self.range_plans(first, last, submesh, start):
            holds = plan.max_in_flight(budget)
            if holds < microbatches:
                self.memory_limited.add(submesh)
            if schedule == "gpipe":
                following = UNLIMITED_IN_FLIGHT if holds >= microbatches else -1
            else:
                following = UNLIMITED_IN_FLIGHT if holds >= microbatches else holds - 1
            if following >= 0:
                options.append((plan, following))
        for plan, following in _pareto(options):
            candidates.append(
                Candidate(
                    first=first,
                    last=last,
                    devices=submesh[0] * submesh[1],
                    submesh=index,
                    time_s=plan.time_s,
                    iteration_s=plan.iteration_s,
                    max_following=following,
                    key=len(plans),
                    start=start,
                    whole_hosts=submesh[1] == self.cluster.gpus_per_host,
                )
            )
            plans.append(plan)


def _pareto(options: list[tuple[RangePlan, int]]) -> list[tuple[RangePlan, int]]:
    """Drop plans that another beats or equals in time, per-iteration time and memory."""
    kept: list[tuple[RangePlan, int]] = []
    for plan, following in options:
        dominated = any(
            other.time_s <= plan.time_s
            and other.iteration_s <= plan.iteration_s
            and more >= following
            and (other.time_s, other.iteration_s, -more)
            != (plan.time_s, plan.iteration_s, -following)
            for other, more in options
        )
        duplicate = any(
            (other.time_s, other.iteration_s, more) == (plan.time_s, plan.iteration_s, following)
            for other, more in kept
        )
        if not dominated and not duplicate:
            kept.append((plan, following))
    return kept
