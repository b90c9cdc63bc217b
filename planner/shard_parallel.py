"""Alpa's ShardParallel (`--intra-only`): the whole model as one stage on the whole cluster.

Each logical shape of the whole cluster (`planner/mesh_shapes.py`, the physical shape first) is
solved by the intra-op ILP, with the best iteration time so far as the cutoff that prunes the
others; the cheapest shape that fits wins. Inference holds no activations for a backward pass:
its memory is the peak of the activations alive at once (`planner/liveness.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cost_models.cluster import Cluster
from cost_models.mesh import logical_mesh
from planner.graph import Graph, Tensor, split_batch
from planner.intra_op import StageSharding, solve_stage
from planner.intra_op_ilp import CutoffExceeded, MemoryInfeasible
from planner.liveness import live_activation_peak_bytes
from planner.mesh_shapes import logical_shapes, whole_cluster
from planner.ops import cast_floats, unknown_op_types
from planner.options import PlanOptions
from planner.plan_assembly import assemble_plan, stage_from_sharding
from plans.errors import InfeasibleError, InputError
from plans.plan import MeshRecord, Plan, SearchReport


@dataclass(frozen=True)
class MeshAttempt:
    """One logical mesh the search tried, for the plan's `search` section."""

    shape: tuple[int, int]
    sharding: StageSharding | None  # None when nothing fits or nothing beats the best
    minimum_memory_bytes: float = 0.0
    pruned: bool = False  # cannot beat a mesh solved before it

    def record(self, chosen: bool) -> MeshRecord:
        if self.pruned:
            return MeshRecord(self.shape, "pruned: cannot beat the best mesh")
        if self.sharding is None:
            return MeshRecord(
                self.shape, "infeasible", minimum_memory_bytes=int(self.minimum_memory_bytes)
            )
        solution = self.sharding.solution
        return MeshRecord(
            self.shape,
            solution.status,
            objective_s=solution.objective_s,
            mip_gap=solution.mip_gap,
            variables=solution.num_variables,
            constraints=solution.num_constraints,
            chosen=chosen,
        )


def plan_intra_only(graph: Graph, cluster: Cluster, options: PlanOptions) -> Plan:
    """The best one-stage plan of `graph` on `cluster` (Alpa's ShardParallel)."""
    assert options.microbatches is not None
    typed = cast_floats(graph, options.dtype)
    tensors = split_batch(typed.tensors, options.microbatches)
    settings = options.intra_op_settings(cluster)
    attempts: list[MeshAttempt] = []
    best_s = math.inf
    whole = whole_cluster(cluster)
    shapes = logical_shapes(whole, cluster.gpus_per_host)
    if options.pins.pins_mesh:
        shapes = options.pins.logical_shapes(whole, cluster.gpus_per_host)
        if not shapes:
            raise InputError(
                options.pins.describe(), "",
                f"a logical mesh dp x tp of the cluster's {cluster.num_devices} GPUs",
                "no such mesh",
            )  # fmt: skip
    for shape in shapes:
        mesh = logical_mesh(cluster, whole, shape)
        try:
            sharding = solve_stage(
                typed.subgraph(tensors=tensors), mesh, cluster.gpu, settings, best_s
            )
        except MemoryInfeasible as error:
            attempts.append(MeshAttempt(shape, None, error.minimum))
            continue
        except CutoffExceeded:
            attempts.append(MeshAttempt(shape, None, pruned=True))
            continue
        if not options.training:
            sharding = _with_inference_activations(sharding, typed, tensors)
        attempts.append(MeshAttempt(shape, sharding))
        if sharding.peak_bytes <= settings.memory_budget_bytes:
            best_s = min(best_s, _iteration_s(sharding, options.microbatches or 1))
    feasible = [
        a for a in attempts
        if a.sharding is not None and a.sharding.peak_bytes <= settings.memory_budget_bytes
    ]  # fmt: skip
    if not feasible:
        least = min(
            (a.minimum_memory_bytes if a.sharding is None else a.sharding.peak_bytes)
            for a in attempts
            if not a.pruned
        )
        raise InfeasibleError(
            f"no sharding of the model fits: the smallest memory per GPU any logical mesh "
            f"reaches is {_gib(least)}, the budget is {_gib(settings.memory_budget_bytes)} "
            f"({options.memory_fraction:.0%} of {_gib(cluster.gpu.memory_bytes)}); "
            "add GPUs or microbatches"
        )
    microbatches = options.microbatches or 1
    best = min(feasible, key=lambda a: _iteration_s(a.sharding, microbatches))  # type: ignore[arg-type]
    assert best.sharding is not None
    stage = stage_from_sharding(
        0, typed, best.sharding, cluster, tuple(op.name for op in typed.ops)
    )
    search = SearchReport(
        algorithm="intra-op (ShardParallel)",
        meshes=tuple(a.record(a is best) for a in attempts),
        replicated_fallback=unknown_op_types(typed),
    )
    return assemble_plan(graph, cluster, options, (stage,), search)


def _iteration_s(sharding: StageSharding, microbatches: int) -> float:
    return microbatches * sharding.microbatch_s + sharding.iteration_s


def _with_inference_activations(
    sharding: StageSharding, graph: Graph, tensors: Mapping[str, Tensor]
) -> StageSharding:
    """Inference holds no activations for a backward pass: its memory is the peak of the
    activations alive at once, with the chosen shardings."""
    local: dict[str, Tensor] = {}
    mesh_shape = sharding.mesh.shape
    for name, tensor in tensors.items():
        spec = sharding.specs.get(name)
        local[name] = tensor.local(spec, mesh_shape) if spec else tensor
    peak = live_activation_peak_bytes(graph.subgraph(tensors=local), keep=graph.outputs)
    return replace(sharding, activation_bytes=peak)


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"
