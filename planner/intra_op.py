"""Intra-operator pass: the best sharding of one stage (a set of ops) on one logical mesh.

1. every op gets its index notation and strategies on the mesh (`planner/strategies.py`);
2. shrink (Alpa's follow merging): an op whose only activation input comes from an op whose every
   strategy leaves it exactly one matching strategy of its own (elementwise ops, views) joins that
   op's group: the group chooses once for all its members;
3. build the `StrategyProblem` (nodes = groups, edges = tensors between groups, priced by
   resharding) and solve it with the ILP (`planner/intra_op_ilp.py`);
4. read back every op's strategy and every tensor's spec, with the stage's time and memory.

Costs per iteration: microbatches x (forward + backward + collectives + resharding of one
microbatch) + once-per-iteration gradient sync and optimizer step. Memory per device: parameter
state + `in_flight` microbatches of kept activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cost_models.cluster import Gpu
from cost_models.compute import ComputeModel
from cost_models.mesh import LogicalMesh
from planner.graph import DTYPE_SIZE_BYTES, Op, Subgraph, TensorKind
from planner.intra_op_ilp import (
    Edge,
    Node,
    StrategyProblem,
    StrategySolution,
    minimum_memory,
    solve,
    solve_least_memory,
)
from planner.ops import notation_of
from planner.recompute import recomputed_ops
from planner.reshard import ReshardRules, reshard_s
from planner.saved_tensors import kept_and_rebuilt
from planner.strategies import CostContext, CostTotals, Strategy, StrategyOptions, op_strategies
from plans.plan import RECOMPUTE_NONE, RECOMPUTE_SELECTIVE
from plans.specs import ShardingSpec


@dataclass(frozen=True)
class IntraOpSettings:
    dtype: str
    optimizer: str
    training: bool
    microbatches: int  # microbatches per iteration
    in_flight: int  # microbatches whose activations are held at once
    memory_budget_bytes: float
    time_limit_s: float = 60.0
    relative_gap: float = 1e-4
    strategy_options: StrategyOptions = field(default_factory=StrategyOptions)
    reshard_rules: ReshardRules = field(default_factory=ReshardRules)
    compute: ComputeModel | None = None  # None: the GPU's roofline
    # Activation recomputation, RECOMPUTE_NONE / _SELECTIVE / _FULL (`planner/recompute.py`:
    # which ops rerun their forward in the backward).
    recompute: str = RECOMPUTE_NONE

    @property
    def recomputes(self) -> bool:
        """Some op reruns its forward in the backward."""
        return self.training and self.recompute != RECOMPUTE_NONE


@dataclass(frozen=True)
class StageSharding(CostTotals):
    """The solved stage: a strategy per op, a spec per tensor, and what it costs."""

    mesh: LogicalMesh
    strategies: Mapping[str, Strategy]  # op name -> strategy
    specs: Mapping[str, ShardingSpec]  # tensor name -> spec (as its producer leaves it)
    forward_s: float  # one microbatch
    backward_s: float
    communication_s: float  # one microbatch: collectives inside ops and resharding between them
    gradient_sync_s: float  # once per iteration: gradient reduction (and ZeRO-2's gather)
    optimizer_step_s: float  # once per iteration: the optimizer update
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # all in-flight microbatches
    solution: StrategySolution
    # One microbatch of the activations the ops read from outside them (a layer's inputs):
    # all that rematerialisation keeps from the forward pass.
    boundary_bytes: int = 0
    # Selective recomputation: one microbatch of the saved tensors the backward rebuilds.
    rebuilt_bytes: int = 0

    @property
    def peak_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes


@dataclass(frozen=True)
class _Group:
    """Ops that choose together: member strategy index per group strategy index."""

    members: tuple[tuple[Op, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return len(self.members[0][1])


def owned_parameters(stage: Subgraph) -> dict[str, frozenset[str]]:
    """Which parameters each op pays for: a parameter belongs to its first consumer."""
    seen: set[str] = set()
    owned: dict[str, frozenset[str]] = {}
    for op in stage.ops:
        mine = [
            name
            for name in dict.fromkeys(op.present_inputs)
            if stage.tensors[name].kind is TensorKind.PARAMETER and name not in seen
        ]
        seen.update(mine)
        owned[op.name] = frozenset(mine)
    return owned


def enumerate_strategies(
    stage: Subgraph,
    mesh: LogicalMesh,
    gpu: Gpu,
    settings: IntraOpSettings,
    rerun: frozenset[str] | None = None,
) -> dict[str, tuple[Strategy, ...]]:
    """Every op's strategies; `rerun`, the ops recomputation reruns, when already known
    (default: `rerun_ops`)."""
    context = CostContext(
        mesh=mesh,
        gpu=gpu,
        dtype=settings.dtype,
        optimizer=settings.optimizer,
        training=settings.training,
        options=settings.strategy_options,
        compute=settings.compute,
    )
    owned = owned_parameters(stage)
    rerun = rerun_ops(stage, settings) if rerun is None else rerun
    saved, rebuilt = frozenset[str](), frozenset[str]()
    if settings.training:  # full recomputation keeps layer inputs (`planner/stage_costs.py`)
        selective = settings.recompute == RECOMPUTE_SELECTIVE
        saved, rebuilt = kept_and_rebuilt(stage, rerun if selective else frozenset())
    tensors = stage.tensors
    found = {}
    for op in stage.ops:
        found[op.name] = op_strategies(
            op, notation_of(op, tensors), tensors, replace(context, remat=op.name in rerun),
            owned[op.name], saved, rebuilt,
        )  # fmt: skip
    return found


def rerun_ops(stage: Subgraph, settings: IntraOpSettings) -> frozenset[str]:
    """The ops of `stage` whose forward reruns in the backward (`planner/recompute.py`)."""
    return recomputed_ops(stage, settings.recompute) if settings.training else frozenset()


def _group_ops(
    stage: Subgraph, strategies: Mapping[str, tuple[Strategy, ...]]
) -> tuple[list[_Group], dict[str, tuple[int, int]]]:
    """Merge followers into their producer's group.

    Returns the groups and, per op, (group index, position among the group's members).
    """
    producer = stage.producer
    groups: list[list[tuple[Op, tuple[int, ...]]]] = []
    where: dict[str, tuple[int, int]] = {}
    for op in stage.ops:
        activations = {
            name
            for name in op.present_inputs
            if name in producer and stage.tensors[name].kind is TensorKind.ACTIVATION
        }
        follow = _follow(op, activations, producer, groups, where, strategies)
        if follow is None:
            groups.append([(op, tuple(range(len(strategies[op.name]))))])
            where[op.name] = (len(groups) - 1, 0)
        else:
            group_index, mapping = follow
            groups[group_index].append((op, mapping))
            where[op.name] = (group_index, len(groups[group_index]) - 1)
    return [_Group(tuple(members)) for members in groups], where


def _follow(
    op: Op,
    activations: set[str],
    producer: Mapping[str, Op],
    groups: list[list[tuple[Op, tuple[int, ...]]]],
    where: Mapping[str, tuple[int, int]],
    strategies: Mapping[str, tuple[Strategy, ...]],
) -> tuple[int, tuple[int, ...]] | None:
    """(group, mapping) when `op`'s strategy is forced by its only activation input."""
    if len(activations) != 1:
        return None
    (tensor,) = activations
    source = producer[tensor]
    group_index, member_index = where[source.name]
    source_mapping = groups[group_index][member_index][1]
    output_position = source.outputs.index(tensor)
    positions = [i for i, name in enumerate(op.inputs) if name == tensor]
    mine = strategies[op.name]
    by_spec: dict[ShardingSpec | None, list[int]] = {}
    for index, strategy in enumerate(mine):
        specs = {strategy.input_specs[p] for p in positions}
        if len(specs) == 1:
            by_spec.setdefault(specs.pop(), []).append(index)
    mapping = []
    for source_choice in source_mapping:
        spec = strategies[source.name][source_choice].output_specs[output_position]
        matches = by_spec.get(spec, [])
        if len(matches) != 1:
            return None
        mapping.append(matches[0])
    return group_index, tuple(mapping)


def prepare_stage(
    stage: Subgraph, mesh: LogicalMesh, gpu: Gpu, settings: IntraOpSettings
) -> PreparedStage:
    """Strategies, groups and the ILP of `stage` (tensors at microbatch size) on `mesh`."""
    rerun = rerun_ops(stage, settings)
    strategies = enumerate_strategies(stage, mesh, gpu, settings, rerun)
    groups, where = _group_ops(stage, strategies)
    ops, tensors, producer = stage.ops, stage.tensors, stage.producer

    def reshard(
        tensor: str, source: ShardingSpec | None, target: ShardingSpec | None, reader: Op
    ) -> float:
        """Resharding `tensor` for `reader`, per iteration; again in the backward when the
        reader's forward reruns there."""
        if source is None or target is None or source == target:
            return 0.0
        t = tensors[tensor]
        seconds = reshard_s(
            t.shape, DTYPE_SIZE_BYTES[t.dtype], source, target, mesh, settings.training,
            settings.reshard_rules, remat=reader.name in rerun,
        )  # fmt: skip
        return settings.microbatches * seconds

    node_costs = [[0.0] * group.size for group in groups]
    node_memory = [[0.0] * group.size for group in groups]
    for g, group in enumerate(groups):
        for op, mapping in group.members:
            for k, choice in enumerate(mapping):
                strategy = strategies[op.name][choice]
                node_costs[g][k] += settings.microbatches * strategy.microbatch_s
                node_costs[g][k] += strategy.iteration_s
                node_memory[g][k] += (
                    strategy.state_bytes + settings.in_flight * strategy.activation_bytes
                )

    # Edges: every activation consumed by an op of another group; inside a group, resharding
    # (between members that did not follow each other) lands on the node's own costs.
    edge_parts: dict[tuple[int, int], list[tuple[str, int, Op, int]]] = {}
    for op in ops:
        target_group, target_member = where[op.name]
        for position, name in enumerate(op.inputs):
            if not name or name not in producer or tensors[name].kind is not TensorKind.ACTIVATION:
                continue
            source = producer[name]
            source_group, source_member = where[source.name]
            out_position = source.outputs.index(name)
            if source_group == target_group:
                group = groups[source_group]
                for k in range(group.size):
                    source_spec = strategies[source.name][
                        group.members[source_member][1][k]
                    ].output_specs[out_position]
                    target_spec = strategies[op.name][
                        group.members[target_member][1][k]
                    ].input_specs[position]
                    node_costs[source_group][k] += reshard(name, source_spec, target_spec, op)
                continue
            edge_parts.setdefault((source_group, target_group), []).append(
                (name, out_position, op, position)
            )

    edges = []
    for (source_group, target_group), parts in sorted(edge_parts.items()):
        for name, out_position, op, position in parts:
            source = producer[name]
            source_member = where[source.name][1]
            target_member = where[op.name][1]
            source_specs = [
                strategies[source.name][choice].output_specs[out_position]
                for choice in groups[source_group].members[source_member][1]
            ]
            target_specs = [
                strategies[op.name][choice].input_specs[position]
                for choice in groups[target_group].members[target_member][1]
            ]
            rows = list(dict.fromkeys(source_specs))
            columns = list(dict.fromkeys(target_specs))
            edges.append(
                Edge(
                    source=source_group,
                    target=target_group,
                    source_class=tuple(rows.index(spec) for spec in source_specs),
                    target_class=tuple(columns.index(spec) for spec in target_specs),
                    costs=tuple(tuple(reshard(name, a, b, op) for b in columns) for a in rows),
                )
            )
    problem = StrategyProblem(
        nodes=tuple(Node(tuple(c), tuple(m)) for c, m in zip(node_costs, node_memory, strict=True)),
        edges=tuple(edges),
        memory_budget=settings.memory_budget_bytes,
    )
    return PreparedStage(stage, mesh, settings, strategies, groups, where, problem, reshard)


@dataclass(frozen=True)
class PreparedStage:
    """A stage's strategies and ILP, built once and solvable under several budgets."""

    stage: Subgraph
    mesh: LogicalMesh
    settings: IntraOpSettings
    strategies: Mapping[str, tuple[Strategy, ...]]
    groups: list[_Group]
    where: Mapping[str, tuple[int, int]]
    problem: StrategyProblem
    reshard: Callable[[str, ShardingSpec | None, ShardingSpec | None, Op], float]

    @property
    def minimum_memory_bytes(self) -> float:
        return minimum_memory(self.problem)

    def solve(
        self, memory_budget_bytes: float | None = None, cutoff_s: float = math.inf
    ) -> StageSharding:
        """Solve under `memory_budget_bytes` (default: the settings' budget)."""
        problem = self.problem
        if memory_budget_bytes is not None:
            problem = replace(problem, memory_budget=memory_budget_bytes)
        solution = solve(problem, self.settings.time_limit_s, self.settings.relative_gap, cutoff_s)
        return self.read_back(solution)

    def solve_least_memory(self, cutoff_s: float = math.inf) -> StageSharding:
        """The cheapest of the shardings that need the least memory, whatever the budget."""
        solution = solve_least_memory(
            self.problem, self.settings.time_limit_s, self.settings.relative_gap, cutoff_s
        )
        return self.read_back(solution)

    def read_back(self, solution: StrategySolution) -> StageSharding:
        """Every op's chosen strategy, every tensor's spec, and the stage's time and memory."""
        ops, tensors, producer = self.stage.ops, self.stage.tensors, self.stage.producer
        mesh, settings, strategies = self.mesh, self.settings, self.strategies
        groups, where, reshard = self.groups, self.where, self.reshard
        chosen: dict[str, Strategy] = {}
        for op in ops:
            group_index, member = where[op.name]
            choice = groups[group_index].members[member][1][solution.choices[group_index]]
            chosen[op.name] = strategies[op.name][choice]
        specs = tensor_specs(ops, chosen)
        resharding_s = 0.0
        for op in ops:
            for name, spec in zip(op.inputs, chosen[op.name].input_specs, strict=True):
                activation = name in producer and tensors[name].kind is TensorKind.ACTIVATION
                if activation and spec is not None:
                    source = chosen[producer[name].name]
                    source_spec = source.output_specs[producer[name].outputs.index(name)]
                    resharding_s += reshard(name, source_spec, spec, op) / settings.microbatches
        strategies_chosen = list(chosen.values())
        received = set(self.stage.boundary_inputs)
        boundary = {  # as the last op reading it wants it
            name: spec
            for op in ops
            for name, spec in zip(op.inputs, chosen[op.name].input_specs, strict=True)
            if name in received and spec is not None
        }
        boundary_bytes = sum(
            tensors[name].local(spec, mesh.shape).size_bytes for name, spec in boundary.items()
        )
        in_flight_activations = sum(s.activation_bytes for s in strategies_chosen)
        return StageSharding(
            mesh=mesh,
            strategies=chosen,
            specs=specs,
            forward_s=sum(s.forward_s for s in strategies_chosen),
            backward_s=sum(s.backward_s for s in strategies_chosen),
            communication_s=sum(s.communication_s for s in strategies_chosen) + resharding_s,
            gradient_sync_s=sum(s.gradient_sync_s for s in strategies_chosen),
            optimizer_step_s=sum(s.optimizer_step_s for s in strategies_chosen),
            parameter_bytes=sum(s.parameter_bytes for s in strategies_chosen),
            gradient_bytes=sum(s.gradient_bytes for s in strategies_chosen),
            optimizer_bytes=sum(s.optimizer_bytes for s in strategies_chosen),
            activation_bytes=settings.in_flight * in_flight_activations,
            solution=solution,
            boundary_bytes=boundary_bytes,
            rebuilt_bytes=sum(s.rebuilt_bytes for s in strategies_chosen),
        )


def tensor_specs(ops: Sequence[Op], strategies: Mapping[str, Strategy]) -> dict[str, ShardingSpec]:
    """Every labelled tensor of `ops` under `strategies`: as its producer leaves it, else as its
    first reader wants it (parameters, data inputs, tensors from earlier stages)."""
    specs: dict[str, ShardingSpec] = {}
    for op in ops:
        for name, spec in zip(op.outputs, strategies[op.name].output_specs, strict=True):
            if name and spec is not None:
                specs[name] = spec
    for op in ops:
        for name, spec in zip(op.inputs, strategies[op.name].input_specs, strict=True):
            if name and spec is not None:
                specs.setdefault(name, spec)
    return specs


def solve_stage(
    stage: Subgraph,
    mesh: LogicalMesh,
    gpu: Gpu,
    settings: IntraOpSettings,
    cutoff_s: float = math.inf,
) -> StageSharding:
    """The cheapest sharding of `stage` (tensors at microbatch size) on `mesh`.

    Raises `intra_op_ilp.MemoryInfeasible` when no sharding fits the memory budget, and
    `intra_op_ilp.CutoffExceeded` when none costs at most `cutoff_s` per iteration.
    """
    return prepare_stage(stage, mesh, gpu, settings).solve(cutoff_s=cutoff_s)
