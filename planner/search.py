"""The planner's entry point: `plan(graph, cluster, options) -> Plan`.

Pure: reads no file, prints nothing (progress goes through an optional callback). The CLI
loads the inputs and writes the result.

Two searches:
- "pipeshard" (the default, Alpa's PipeshardParallel): layers cut into pipeline stages on
  submeshes by the inter-op DP, each stage sharded by the intra-op ILP (`planner/pipeshard.py`);
- "intra-only" (Alpa's ShardParallel): the whole model as one stage on the whole cluster,
  viewed as each logical mesh shape of the search's space (`planner/mesh_shapes.py`), each
  solved by the intra-op ILP; the cheapest shape wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cost_models.cluster import Cluster
from cost_models.mesh import logical_mesh
from planner import __version__
from planner.graph import Graph, Tensor, split_batch
from planner.intra_op import IntraOpSettings, StageSharding, solve_stage
from planner.intra_op_ilp import CutoffExceeded, MemoryInfeasible
from planner.layers import cluster_layers
from planner.liveness import live_activation_peak_bytes
from planner.mesh_shapes import logical_shapes, submesh_shapes, whole_cluster
from planner.notation import notation_of
from planner.options import PlanOptions
from planner.pipeshard import (
    Progress,
    build_stages,
    build_transfers,
    layer_records,
    pack_devices,
    polish_stages,
    search_pipelines,
    stage_from_sharding,
)
from plans.errors import InfeasibleError, InputError
from plans.plan import (
    ClusterInfo,
    Estimate,
    GpuInfo,
    JsonValue,
    Layer,
    ModelInfo,
    Plan,
    PlannerInfo,
    Settings,
    Stage,
    Transfer,
    frozen_map,
)

# Training FLOPs per forward FLOP: forward + backward (twice the forward for contractions).
# The usual convention for model FLOP utilisation (Narayanan et al., SC'21, "Efficient
# Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", appendix).
TRAINING_FLOPS_PER_FORWARD_FLOP = 3.0


@dataclass(frozen=True)
class MeshAttempt:
    """One logical mesh the search tried, for the plan's `search` section."""

    shape: tuple[int, int]
    sharding: StageSharding | None  # None when nothing fits or nothing beats the best
    minimum_memory_bytes: float = 0.0
    pruned: bool = False  # cannot beat a mesh solved before it

    def record(self, chosen: bool) -> dict[str, JsonValue]:
        if self.pruned:
            return {"logical_mesh": self.shape, "status": "pruned: cannot beat the best mesh"}
        if self.sharding is None:
            return {
                "logical_mesh": self.shape,
                "status": "infeasible",
                "minimum_memory_bytes": int(self.minimum_memory_bytes),
            }
        solution = self.sharding.solution
        return {
            "logical_mesh": self.shape,
            "status": solution.status,
            "objective_s": solution.objective_s,
            "mip_gap": solution.mip_gap,
            "variables": solution.num_variables,
            "constraints": solution.num_constraints,
            "chosen": chosen,
        }


def intra_op_settings(
    options: PlanOptions, cluster: Cluster, in_flight: int = 1
) -> IntraOpSettings:
    return IntraOpSettings(
        dtype=options.dtype,
        optimizer=options.optimizer,
        training=options.training,
        microbatches=options.microbatches or 1,
        in_flight=in_flight,
        memory_budget_bytes=cluster.gpu.memory_bytes * options.memory_fraction,
        time_limit_s=options.ilp_time_limit_s,
        relative_gap=options.ilp_relative_gap,
        strategy_options=options.strategy,
        reshard_rules=options.reshard,
        compute=options.compute,
        remat=options.remat,
    )


def plan(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    progress: Progress | None = None,
    jobs: int = 1,
) -> Plan:
    """The best plan the chosen search finds for `graph` on `cluster`.

    `progress(what, done, total)` hears of the work as it goes; `jobs` processes solve layer
    ILPs at once (the plan does not depend on it). Worker processes start from a fork server,
    so a script that calls this with jobs > 1 needs the usual `if __name__ == "__main__":`
    guard."""
    if options.microbatches is not None and graph.batch_size % options.microbatches:
        raise InfeasibleError(
            f"the batch of {graph.batch_size} does not split into {options.microbatches} "
            "equal microbatches"
        )
    if options.search == "intra-only" and options.remat:
        raise InputError(
            "--remat", "", "the full search (rematerialisation works per layer)", "--intra-only"
        )
    if options.search == "intra-only":
        return plan_intra_only(
            graph, cluster, replace(options, microbatches=options.microbatches or 1)
        )
    return plan_pipeshard(graph, cluster, options, progress, jobs)


def plan_pipeshard(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    progress: Progress | None = None,
    jobs: int = 1,
) -> Plan:
    """Alpa's PipeshardParallel: the inter-op DP over layer ranges and submeshes."""
    typed = graph.cast_floats(options.dtype)
    layers = cluster_layers(typed, options.layers)

    def settings_for(microbatches: int) -> IntraOpSettings:
        return intra_op_settings(replace(options, microbatches=microbatches), cluster)

    choice, tried = search_pipelines(typed, cluster, options, layers, settings_for, progress, jobs)
    budget = cluster.gpu.memory_bytes * options.memory_fraction
    if choice is None:
        raise InfeasibleError(
            f"no pipeline of the model's {len(layers)} layers fits: every stage candidate "
            f"needs more than the budget of {_gib(budget)} per GPU "
            f"({options.memory_fraction:.0%} of {_gib(cluster.gpu.memory_bytes)}) for the "
            "microbatches it must hold; add GPUs or microbatches"
        )
    chosen = replace(options, microbatches=choice.microbatches)
    devices = pack_devices([s.submesh for s in choice.stages], cluster.hosts, cluster.gpus_per_host)
    exact = polish_stages(
        typed, choice, layers, cluster, settings_for(choice.microbatches), options.schedule
    )
    stages = build_stages(typed, choice, devices, layers, options.schedule, cluster, exact)
    tensors = split_batch(typed.tensors, choice.microbatches)
    transfers = build_transfers(typed, stages, cluster, tensors, options.training)
    search: dict[str, JsonValue] = {
        "algorithm": "inter-op DP + intra-op ILP (PipeshardParallel)",
        "layers": len(layers),
        "submeshes": submesh_shapes(cluster, options.submesh_space),
        "microbatches": tuple(tried),
        "layer_ilps": choice.table.solves,
        "layer_ilps_at_time_limit": choice.table.timeouts,
        "stages_solved_whole": tuple(sorted(exact)),
        "replicated_fallback": fallback_op_types(typed),
    }
    return assemble_plan(
        graph, cluster, chosen, stages, search, layer_records(graph, layers, typed), transfers
    )


def plan_intra_only(graph: Graph, cluster: Cluster, options: PlanOptions) -> Plan:
    """The best one-stage plan of `graph` on `cluster` (Alpa's ShardParallel)."""
    assert options.microbatches is not None
    typed = graph.cast_floats(options.dtype)
    tensors = split_batch(typed.tensors, options.microbatches)
    settings = intra_op_settings(options, cluster)
    attempts: list[MeshAttempt] = []
    best_s = math.inf
    whole = whole_cluster(cluster)
    for shape in logical_shapes(whole, cluster.gpus_per_host):
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
    search: dict[str, JsonValue] = {
        "algorithm": "intra-op (ShardParallel)",
        "meshes": tuple(a.record(a is best) for a in attempts),
        "replicated_fallback": fallback_op_types(typed),
    }
    return assemble_plan(graph, cluster, options, (stage,), search)


def fallback_op_types(graph: Graph) -> tuple[str, ...]:
    """Op types with no sharding rule: they run replicated (and the plan says so)."""
    return tuple(
        sorted({op.op_type for op in graph.ops if not notation_of(op, graph.tensors).known})
    )


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


def assemble_plan(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    stages: tuple[Stage, ...],
    search: Mapping[str, JsonValue],
    layers: tuple[Layer, ...] = (),
    transfers: tuple[Transfer, ...] = (),
) -> Plan:
    """A `Plan` around `stages`, with the iteration estimate: the pipeline formula of
    `planner/inter_op.py`, T = sum t + (B - 1) max t + sum u (one stage: B t + u)."""
    microbatches = options.microbatches or 1
    per_microbatch = [stage.time.total_s for stage in stages]
    iteration_s = (
        sum(per_microbatch)
        + (microbatches - 1) * max(per_microbatch)
        + sum(stage.time.gradient_sync_s for stage in stages)
    )
    flops_per_iteration = graph.flops * (
        TRAINING_FLOPS_PER_FORWARD_FLOP if options.training else 1.0
    )
    return Plan(
        planner=PlannerInfo(version=__version__, options=frozen_map(options.record())),  # type: ignore[arg-type]
        model=ModelInfo(
            name=graph.name,
            fingerprint=graph.fingerprint,
            parameters=graph.parameter_count,
            flops_per_sample=graph.flops / graph.batch_size,
        ),
        cluster=ClusterInfo(
            name=cluster.name,
            hosts=cluster.hosts,
            gpus_per_host=cluster.gpus_per_host,
            gpu=GpuInfo(
                name=cluster.gpu.name,
                memory_bytes=cluster.gpu.memory_bytes,
                peak_flops=frozen_map(dict(cluster.gpu.peak_flops_by_dtype)),  # type: ignore[arg-type]
                memory_bandwidth_bytes_per_s=cluster.gpu.memory_bandwidth_bytes_per_s,
            ),
        ),
        settings=Settings(
            mode=options.mode,
            batch_size=graph.batch_size,
            microbatches=microbatches,
            schedule=options.schedule,
            dtype=options.dtype,
            optimizer=options.optimizer,
        ),
        layers=layers,
        stages=stages,
        transfers=transfers,
        estimate=Estimate(
            iteration_time_s=iteration_s,
            samples_per_s=graph.batch_size / iteration_s,
            tflops_per_gpu=flops_per_iteration / iteration_s / cluster.num_devices / 1e12,
            peak_memory_bytes=max(stage.memory.peak_bytes for stage in stages),
        ),
        search=frozen_map(search),  # type: ignore[arg-type]
    )


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"
