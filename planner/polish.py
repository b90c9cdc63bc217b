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

Neither runs with rematerialisation, whose memory the stage ILP does not model.
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
from planner.mesh_shapes import logical_shapes, whole_cluster
from planner.options import Schedule
from planner.pipeline_time import in_flight, pipeline_iteration_s
from planner.stage_costs import RangePlan, StageCostTable


def composed_lower_bound_s(plans: Sequence[RangePlan], weight: float) -> float:
    """A lower bound on `weight` t + u for the range of `plans` (its composed plans on one
    logical mesh) solved as one ILP: each layer's own optimum, without the resharding between
    layers that composing charges (the single-layer ILPs relax the whole one), at the fastest
    memory level."""
    return min(
        weight * (plan.time_s - plan.resharding_s - plan.transfer_s) + plan.iteration_s
        for plan in plans
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
    weight: int,
    limit_s: float,
) -> WholeStage | None:
    """The whole model as one stage on the whole cluster when that beats `limit_s` (the DP's
    objective, `weight` t + u with `weight` = B in training), else None."""
    if settings.remat:
        return None
    whole = whole_cluster(cluster)
    last = len(table.layers) - 1
    microbatches = settings.microbatches
    stage_settings = replace(settings, in_flight=in_flight(0, 1, microbatches, schedule))
    model = table.model.slice(table.layers[0].start, table.layers[last].stop)
    best: WholeStage | None = None
    composed = table.range_plans(0, last, whole)
    for shape in logical_shapes(whole, cluster.gpus_per_host):
        plans = [plan for plan in composed if plan.mesh.shape == shape]
        if not plans:
            continue
        limit = min(limit_s, best.objective_s if best else math.inf)
        if composed_lower_bound_s(plans, weight) >= limit:
            continue
        # The ILP's objective is B t + u, the DP's weight t + u: equal when training; in
        # inference u = 0.
        cutoff_s = limit if settings.training else microbatches * limit / weight
        sharding = _solve_within(model, plans[0].mesh, cluster, stage_settings, cutoff_s)
        if sharding is None:
            continue
        objective = weight * sharding.microbatch_s + sharding.iteration_s
        if objective < limit:
            best = WholeStage(plans[0], sharding, objective)
    return best


def polish_stages(
    stages: Sequence[RangePlan],
    microbatches: int,
    table: StageCostTable,
    cluster: Cluster,
    settings: IntraOpSettings,
    schedule: Schedule,
    exact: Mapping[int, StageSharding],
) -> dict[int, StageSharding]:
    """The stages of the pipeline `stages` (by index) worth an exact plan, with it; `exact`
    holds those solved whole already."""
    if settings.remat:
        return dict(exact)
    times = [plan.time_s for plan in stages]
    syncs = [plan.iteration_s for plan in stages]
    polished: dict[int, StageSharding] = dict(exact)
    for index, plan in enumerate(stages):
        if index in polished:
            continue
        layers = table.layers
        ops = table.model.slice(layers[plan.first].start, layers[plan.last].stop)
        holds = in_flight(index, len(stages), microbatches, schedule)
        stage_settings = replace(settings, in_flight=holds)
        composed = table.range_plans(plan.first, plan.last, plan.submesh)
        shapes = logical_shapes(plan.submesh, cluster.gpus_per_host)
        for shape in (plan.mesh.shape, *(s for s in shapes if s != plan.mesh.shape)):
            cutoff = microbatches * (times[index] - plan.transfer_s) + syncs[index]
            mesh = plan.mesh
            if shape != plan.mesh.shape:
                same = [p for p in composed if p.mesh.shape == shape]
                if not same or composed_lower_bound_s(same, microbatches) >= cutoff:
                    continue
                mesh = same[0].mesh
            sharding = _solve_within(ops, mesh, cluster, stage_settings, cutoff)
            if sharding is None:
                continue
            new_time = sharding.microbatch_s + plan.transfer_s
            new_times = [*times[:index], new_time, *times[index + 1 :]]
            new_syncs = [*syncs[:index], sharding.iteration_s, *syncs[index + 1 :]]
            if pipeline_iteration_s(new_times, new_syncs, microbatches) < pipeline_iteration_s(
                times, syncs, microbatches
            ):
                polished[index] = sharding
                times, syncs = new_times, new_syncs
    return polished


def _solve_within(
    stage: Subgraph,
    mesh: LogicalMesh,
    cluster: Cluster,
    settings: IntraOpSettings,
    cutoff_s: float,
) -> StageSharding | None:
    """The stage's best sharding on `mesh` if one fits and costs at most `cutoff_s`."""
    try:
        return solve_stage(stage, mesh, cluster.gpu, settings, cutoff_s)
    except (MemoryInfeasible, CutoffExceeded):
        return None
