"""Stages solved whole: correcting what the cost table's composition over-charges.

The cost table (`planner/stage_costs.py`) prices a run of layers by composing single-layer
ILPs, each free to take its inputs in the layout it likes best, and then charging the
resharding between layers: an upper bound on the run's exact cost, which can be far above it
(a convolution stack whose layers disagree on a layout one ILP would keep; a tied weight's
layout; memory spent where it saves most). The same composition without that resharding is a
lower bound (every layer at its own optimum): `composed_lower_bound_s`.

- `exact_one_stage`: the whole model as one stage on the whole cluster (Alpa's ShardParallel),
  solved as one ILP on each logical shape whose lower bound beats the DP's objective, with that
  objective as the ILP's cutoff;
- `polish_stages`: each chosen stage of a pipeline re-solved as one ILP over its layers, under
  the memory its in-flight microbatches leave, on each logical shape of its submesh (the chosen
  one first), kept where the pipeline gets faster.

Neither runs with recomputation (nor polishes a recomputing stage), whose memory (the inputs
full recomputation keeps, the transient of what a backward rebuilds) the stage ILP does not
model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from cost_models.cluster import Cluster
from cost_models.mesh import LogicalMesh
from planner.graph import Subgraph
from planner.intra_op import IntraOpSettings, StageSharding, solve_stage
from planner.intra_op_ilp import CutoffExceeded, MemoryInfeasible
from planner.mesh_shapes import whole_cluster
from planner.options import Schedule
from planner.pipeline_search import PipelineObjective
from planner.pipeline_time import in_flight
from planner.stage_costs import RangePlan, StageCostTable
from plans.plan import RECOMPUTE_NONE


def composed_lower_bound_s(plans: Sequence[RangePlan], weight: float) -> float:
    """A lower bound on the ILP objective (`weight` t + u) of the range of `plans` (its composed
    plans on one logical mesh) solved as one ILP: each layer's own optimum, without the
    resharding between layers that composing charges (the single-layer ILPs relax the whole
    one), at the fastest memory level."""
    return min(weight * (plan.block_s - plan.resharding_s) + plan.iteration_s for plan in plans)


# Polishing keeps a stage's exact plan only when its ILP objective is this fraction below the
# stage's current one (ten times the ILP's relative gap): nearer, HiGHS spends its time proving
# a tie, and the lower bound (`composed_lower_bound_s`) skips ranges with little resharding.
POLISH_MARGIN = 1e-3

# A stage ILP: its first and last layer, submesh, logical mesh shape, microbatches held.
_Key = tuple[int, int, tuple[int, int], tuple[int, int], int]


class StageSolves:
    """The stage ILPs solved for one microbatch count, by range, mesh and microbatches held,
    with the cutoff each was solved under: a solution is the range's optimum on that mesh, so
    it answers any later cutoff it is within; a cutoff that was exceeded answers any lower one.
    `exact_one_stage` and `polish_stages` ask the same questions of the same stage."""

    def __init__(self) -> None:
        self._solved: dict[_Key, tuple[float, StageSharding | None]] = {}

    def solve(
        self,
        key: _Key,
        stage: Subgraph,
        mesh: LogicalMesh,
        cluster: Cluster,
        settings: IntraOpSettings,
        cutoff_s: float,
    ) -> StageSharding | None:
        """The stage's best sharding on `mesh` if one fits and its ILP objective is at most
        `cutoff_s`; else None."""
        known = self._solved.get(key)
        if known is not None:
            known_cutoff, known_sharding = known
            if known_sharding is not None:
                within = _ilp_objective_s(known_sharding, settings) <= cutoff_s
                return known_sharding if within else None
            if cutoff_s <= known_cutoff:
                return None
        sharding: StageSharding | None
        try:
            sharding = solve_stage(stage, mesh, cluster.gpu, settings, cutoff_s)
        except (MemoryInfeasible, CutoffExceeded):
            sharding = None
        self._solved[key] = (cutoff_s, sharding)
        return sharding


def _ilp_objective_s(sharding: StageSharding, settings: IntraOpSettings) -> float:
    """The stage ILP's objective of `sharding`: B t + u (in inference u = 0)."""
    return settings.microbatches * sharding.microbatch_s + sharding.iteration_s


def with_sharding(plan: RangePlan, sharding: StageSharding) -> RangePlan:
    """The cost-table plan `plan` with the times of its range solved as one ILP."""
    return replace(
        plan,
        time_s=sharding.microbatch_s + plan.transfer_s,
        forward_s=sharding.forward_s,
        backward_s=sharding.backward_s,
        communication_s=sharding.communication_s,
        gradient_sync_s=sharding.gradient_sync_s,
        optimizer_step_s=sharding.optimizer_step_s,
        resharding_s=0.0,
    )


@dataclass(frozen=True)
class WholeStage:
    """The model as one stage, solved as one ILP: its composed plan (for the stage's layers and
    mesh), its sharding and the DP's objective of it."""

    plan: RangePlan
    sharding: StageSharding
    objective_s: float


def exact_one_stage(
    table: StageCostTable,
    cluster: Cluster,
    settings: IntraOpSettings,
    schedule: Schedule,
    objective: PipelineObjective,
    limit_s: float,
    solves: StageSolves,
) -> WholeStage | None:
    """The whole model as one stage on the whole cluster when its objective beats `limit_s`,
    else None. The ILP's cutoff (`_cutoff_s`) admits every stage whose objective could beat
    `limit_s`; a shape is skipped when its lower bound already reaches the cutoff."""
    if settings.recomputes:
        return None
    whole = whole_cluster(cluster)
    last = len(table.layers) - 1
    stage_settings = replace(settings, in_flight=in_flight(0, 1, settings.microbatches, schedule))
    model = table.model.slice(table.layers[0].start, table.layers[last].stop)
    best: WholeStage | None = None
    composed = table.range_plans(0, last, whole)
    for shape in table.shapes_of(whole):
        plans = [plan for plan in composed if plan.mesh.shape == shape]
        if not plans:
            continue
        limit = min(limit_s, best.objective_s if best else math.inf)
        cutoff_s = _cutoff_s(limit, settings, objective)
        if composed_lower_bound_s(plans, objective.weight) >= cutoff_s:
            continue
        key = (0, last, whole, shape, stage_settings.in_flight)
        sharding = solves.solve(key, model, plans[0].mesh, cluster, stage_settings, cutoff_s)
        if sharding is None:
            continue
        value = objective.of([with_sharding(plans[0], sharding)])
        if value < limit:
            best = WholeStage(plans[0], sharding, value)
    return best


def polish_stages(
    stages: Sequence[RangePlan],
    table: StageCostTable,
    cluster: Cluster,
    settings: IntraOpSettings,
    schedule: Schedule,
    objective: PipelineObjective,
    exact: Mapping[int, StageSharding],
    solves: StageSolves,
) -> dict[int, StageSharding]:
    """The stages of the pipeline `stages` (by index) worth an exact plan, with it; `exact`
    holds those solved whole already."""
    if settings.recomputes:
        return dict(exact)
    current = [
        with_sharding(plan, exact[k]) if k in exact else plan for k, plan in enumerate(stages)
    ]
    value = objective.of(current)
    polished: dict[int, StageSharding] = dict(exact)
    microbatches = settings.microbatches
    for index, plan in enumerate(stages):
        if index in polished or plan.recompute != RECOMPUTE_NONE:
            continue
        layers = table.layers
        ops = table.model.slice(layers[plan.first].start, layers[plan.last].stop)
        holds = in_flight(index, len(stages), microbatches, schedule, objective.warmup_extra)
        stage_settings = replace(settings, in_flight=holds)
        composed = table.range_plans(plan.first, plan.last, plan.submesh, plan.start)
        shapes = table.shapes_of(plan.submesh)
        for shape in (plan.mesh.shape, *(s for s in shapes if s != plan.mesh.shape)):
            own = current[index]
            cutoff = (microbatches * own.block_s + own.iteration_s) * (1 - POLISH_MARGIN)
            same = [p for p in composed if p.mesh.shape == shape]
            if not same or composed_lower_bound_s(same, microbatches) >= cutoff:
                continue
            mesh = plan.mesh if shape == plan.mesh.shape else same[0].mesh
            key = (plan.first, plan.last, plan.submesh, shape, holds)
            sharding = solves.solve(key, ops, mesh, cluster, stage_settings, cutoff)
            if sharding is None:
                continue
            trial = [*current[:index], with_sharding(plan, sharding), *current[index + 1 :]]
            trial_value = objective.of(trial)
            if trial_value < value:
                polished[index] = sharding
                current, value = trial, trial_value
    return polished


def _cutoff_s(limit_s: float, settings: IntraOpSettings, objective: PipelineObjective) -> float:
    """The whole-stage ILP's cutoff (its objective is B t + u) for a one-stage pipeline whose
    objective must beat `limit_s`: in inference the objective is weight x t (u = 0). In
    training the objective is the makespan: one stage runs its B blocks back to back and its
    sync hides behind the last backward b but for a last bucket, so the ILP's objective, which
    charges the sync in full, exceeds the makespan by at most b, and b <= makespan / B: a stage
    whose makespan beats `limit_s` has an ILP objective below limit_s (1 + 1 / B)."""
    if not settings.training:
        return settings.microbatches * limit_s / objective.weight
    return limit_s * (1 + 1 / settings.microbatches)
