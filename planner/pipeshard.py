"""The full search (Alpa's PipeshardParallel): layers, stage/submesh DP, intra-op per stage.

1. cluster the ops into layers (`planner/layers.py`);
2. for each microbatch count (the one given, or a few divisors of the batch), build the cost
   table of every layer range on every submesh (`planner/stage_costs.py`) and run the DP
   (`planner/inter_op.py`);
3. keep the fastest pipeline, pack its stages onto concrete (host, GPU) ids (whole hosts first,
   then the in-host submeshes largest first), and write the plan: stages with their ops,
   devices, logical mesh, strategies and specs; the tensors sent between stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cost_models.cluster import Cluster
from cost_models.collectives import point_to_point_s
from cost_models.memory import parameter_state
from planner.graph import Graph, Op, Subgraph, Tensor, TensorKind, split_batch
from planner.inter_op import best_pipeline
from planner.intra_op import IntraOpSettings, StageSharding, solve_stage
from planner.intra_op_ilp import CutoffExceeded, MemoryInfeasible
from planner.layers import LayerSlice
from planner.mesh_shapes import logical_shapes, submesh_shapes
from planner.options import PlanOptions
from planner.saved_tensors import charged_to, saved_for_backward
from planner.stage_costs import RangePlan, StageCostTable
from planner.strategies import Strategy
from plans.errors import InfeasibleError
from plans.plan import JsonValue, Layer, Stage, StageMemory, StageTime, Transfer, frozen_map
from plans.specs import ShardingSpec

# When --microbatches is not given, the counts searched are the divisors of the batch, each a
# full cost table, coarse to fine (`microbatch_search`): first the powers of four that divide
# the batch and the batch itself, then, around the best so far, the divisor geometrically
# halfway to each evaluated neighbour, until no untried divisor lies between the best and its
# neighbours. Exact when the iteration time is unimodal in the count (pipeline bubbles shrink,
# per-microbatch costs grow); `search.microbatches` in the plan lists what was tried.
# Weight on the slowest stage for inference: "throughput" ranks plans by their slowest stage
# first, "latency" by the sum of the stages.
_THROUGHPUT_WEIGHT = 1e6

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PipelineChoice:
    microbatches: int
    stages: tuple[RangePlan, ...]
    iteration_s: float
    table: StageCostTable
    # Stages already solved as one ILP over their whole range (`exact_one_stage`), by index.
    exact: Mapping[int, StageSharding] = field(default_factory=dict)


def divisors(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(1, n + 1) if n % d == 0)


def microbatch_counts(batch_size: int, given: int | None) -> tuple[int, ...]:
    """The counts tried first: the given one, or the coarse set of the search."""
    if given is not None:
        return (given,)
    coarse = {d for d in divisors(batch_size) if d & (d - 1) == 0 and (d.bit_length() - 1) % 2 == 0}
    return tuple(sorted(coarse | {batch_size}))


def refined_counts(batch_size: int, objective_s: Mapping[int, float]) -> tuple[int, ...]:
    """The next counts to try, given the objective of each count tried (inf: infeasible): the
    divisor geometrically halfway between the best and each neighbour tried, when one lies
    strictly between; () when the search is done."""
    feasible = [count for count, value in objective_s.items() if math.isfinite(value)]
    if not feasible:
        return ()
    best = min(feasible, key=lambda count: (objective_s[count], count))
    tried = sorted(objective_s)
    below = [count for count in tried if count < best]
    above = [count for count in tried if count > best]
    intervals = ([(below[-1], best)] if below else []) + ([(best, above[0])] if above else [])
    found = []
    for low, high in intervals:
        between = [d for d in divisors(batch_size) if low < d < high]
        if between:
            middle = math.sqrt(low * high)
            found.append(min(between, key=lambda d: (abs(math.log(d / middle)), d)))
    return tuple(found)


def search_pipelines(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    layers: Sequence[LayerSlice],
    settings_for: Callable[[int], IntraOpSettings],
    progress: Progress | None = None,
    jobs: int = 1,
) -> tuple[PipelineChoice | None, list[dict[str, JsonValue]]]:
    """The fastest pipeline over the microbatch counts; and a record of each count tried."""
    submeshes = submesh_shapes(cluster, options.submesh_space)
    best: PipelineChoice | None = None
    tried: list[dict[str, JsonValue]] = []
    objective_s: dict[int, float] = {}
    pending = list(microbatch_counts(graph.batch_size, options.microbatches))
    while pending:
        microbatches = pending.pop(0)
        settings = settings_for(microbatches)
        tensors = split_batch(graph.tensors, microbatches)
        found: PipelineChoice | None = None
        bound = memory_lower_bound_bytes(graph.ops, tensors, layers, settings)
        if bound > cluster.num_devices * settings.memory_budget_bytes:
            record: dict[str, JsonValue] = {
                "microbatches": microbatches,
                "status": "infeasible",
                "memory_lower_bound_bytes": bound,
            }
        else:
            found, record = _search_count(
                graph, tensors, cluster, options, layers, settings, submeshes, best, progress, jobs
            )
        tried.append(record)
        objective_s[microbatches] = found.iteration_s if found else math.inf
        if found is not None and (best is None or found.iteration_s < best.iteration_s):
            best = found
        if not pending and options.microbatches is None:
            refined = refined_counts(graph.batch_size, objective_s)
            pending = [count for count in refined if count not in objective_s]
    return best, tried


def _search_count(
    graph: Graph,
    tensors: Mapping[str, Tensor],
    cluster: Cluster,
    options: PlanOptions,
    layers: Sequence[LayerSlice],
    settings: IntraOpSettings,
    submeshes: Sequence[tuple[int, int]],
    best: PipelineChoice | None,
    progress: Progress | None,
    jobs: int,
) -> tuple[PipelineChoice | None, dict[str, JsonValue]]:
    """The fastest pipeline at one microbatch count (the DP over the cost table, or the whole
    model as one exact stage), and the record of the count."""
    microbatches = settings.microbatches
    table = StageCostTable(graph.subgraph(tensors=tensors), layers, cluster, settings)

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(f"layer ILPs, {microbatches} microbatches", done, total)

    table.solve_layers(submeshes, jobs, report)
    candidates, plans = table.candidates(submeshes, microbatches, options.schedule)
    weight = _max_weight(options, microbatches)
    solution = best_pipeline(candidates, len(layers), cluster.num_devices, weight + 1)
    found: PipelineChoice | None = None
    if solution is not None:
        stages = tuple(plans[c.key] for c in solution.stages)
        found = PipelineChoice(microbatches, stages, solution.iteration_s, table)
    limit_s = min(found.iteration_s if found else math.inf, best.iteration_s if best else math.inf)
    whole = exact_one_stage(
        graph, tensors, table, cluster, settings, options.schedule, weight, limit_s
    )
    if whole is not None:
        found = whole
    if found is None:
        return None, {"microbatches": microbatches, "status": "infeasible"}
    return found, {
        "microbatches": microbatches,
        "status": "ok",
        "objective_s": found.iteration_s,
        "stages": len(found.stages),
        "candidates": len(candidates),
        "one_stage_solved_whole": whole is not None,
    }


def memory_lower_bound_bytes(
    ops: Sequence[Op],
    tensors: Mapping[str, Tensor],
    layers: Sequence[LayerSlice],
    settings: IntraOpSettings,
) -> int:
    """Bytes that all devices together hold at least, whatever the plan, at this microbatch
    size (`tensors`): every parameter's state once (sharding spreads it, replication adds to
    it), and when training without rematerialisation one microbatch of the activations each
    layer keeps for the backward (every stage holds at least one in flight), charged as the
    strategies charge them (`planner/strategies.py`: an op's saved outputs and saved data
    inputs, saved as `planner/saved_tensors.py` says within its layer).

    A count whose bound exceeds the devices' budgets together fits no pipeline, so the search
    skips its cost table."""
    state = parameter_state(settings.dtype, settings.optimizer, settings.training)
    parameters = {
        name
        for op in ops
        for name in op.present_inputs
        if tensors[name].kind is TensorKind.PARAMETER
    }
    total = state.total * sum(tensors[name].num_elements for name in parameters)
    if not settings.training or settings.remat:
        return total
    for layer in layers:
        layer_ops = ops[layer.start : layer.stop]
        saved = saved_for_backward(Subgraph(tuple(layer_ops), tensors))
        kept = {name for op in layer_ops for name in charged_to(op, saved, tensors)}
        total += sum(tensors[name].size_bytes for name in kept)
    return total


def composed_lower_bound_s(plans: Sequence[RangePlan], weight: float) -> float:
    """A lower bound on `weight` t + u for the range of `plans` (its composed plans on one
    logical mesh) solved as one ILP: each layer's own optimum, without the resharding between
    layers that composing charges (the single-layer ILPs relax the whole one), at the fastest
    memory level."""
    return min(
        weight * (plan.time_s - plan.resharding_s - plan.transfer_s) + plan.iteration_s
        for plan in plans
    )


def exact_one_stage(
    graph: Graph,
    tensors: Mapping[str, Tensor],
    table: StageCostTable,
    cluster: Cluster,
    settings: IntraOpSettings,
    schedule: str,
    weight: int,
    limit_s: float,
) -> PipelineChoice | None:
    """The whole model as one stage on the whole cluster, solved as one ILP on each logical
    shape (Alpa's ShardParallel), when that beats `limit_s` (the DP's objective); else None.

    The table composes a range from single-layer ILPs that each take their inputs in the layout
    they like best, and then charges the resharding between layers: an upper bound on the
    range's exact cost, which can be far above it (a convolution stack whose layers disagree
    on a layout the whole ILP would keep). The same plans without that resharding are a lower
    bound (every layer at its own optimum), so a shape is solved only when its lower bound
    beats the limit, with the limit as the ILP's cutoff. Not with rematerialisation, whose
    memory the stage ILP does not model."""
    if settings.remat:
        return None
    whole = (cluster.hosts, cluster.gpus_per_host)
    last = len(table.layers) - 1
    microbatches = settings.microbatches
    stage_settings = replace(settings, in_flight=in_flight(0, 1, microbatches, schedule))
    ops = graph.ops[table.layers[0].start : table.layers[last].stop]
    best: PipelineChoice | None = None
    composed = table.range_plans(0, last, whole)
    for shape in logical_shapes(whole, cluster.gpus_per_host):
        plans = [plan for plan in composed if plan.mesh.shape == shape]
        if not plans:
            continue
        limit = min(limit_s, best.iteration_s if best else math.inf)
        if composed_lower_bound_s(plans, 1 + weight) >= limit:
            continue
        # The ILP's objective is B t + u, the DP's (1 + weight) t + u: equal when training;
        # in inference u = 0.
        cutoff_s = limit if settings.training else microbatches * limit / (1 + weight)
        try:
            sharding = solve_stage(
                Subgraph(ops, tensors), plans[0].mesh, cluster.gpu, stage_settings, cutoff_s
            )
        except (MemoryInfeasible, CutoffExceeded):
            continue
        objective = (1 + weight) * sharding.microbatch_s + sharding.iteration_s
        if objective < limit:
            best = PipelineChoice(microbatches, (plans[0],), objective, table, {0: sharding})
    return best


def _max_weight(options: PlanOptions, microbatches: int) -> int:
    """The weight of the slowest stage in the DP's objective, minus one (B - 1 in training)."""
    if options.training:
        return microbatches - 1
    if options.objective == "latency":
        return 0
    return int(_THROUGHPUT_WEIGHT)


def pack_devices(
    submeshes: Sequence[tuple[int, int]], hosts: int, gpus_per_host: int
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Concrete (host, GPU) ids per stage: whole-host submeshes take whole hosts in stage order,
    then in-host submeshes go largest first into the first host with room (sizes are powers
    of two, or divisors of the host size, so they pack exactly)."""
    free = {host: list(range(gpus_per_host)) for host in range(hosts)}
    placed: dict[int, tuple[tuple[int, int], ...]] = {}
    next_host = 0
    for index, (h, g) in enumerate(submeshes):
        if g == gpus_per_host:
            span = range(next_host, next_host + h)
            placed[index] = tuple((host, gpu) for host in span for gpu in range(g))
            for host in span:
                free[host] = []
            next_host += h
    order = sorted(
        (i for i, (h, g) in enumerate(submeshes) if g != gpus_per_host),
        key=lambda i: (-submeshes[i][1], i),
    )
    for index in order:
        size = submeshes[index][1]
        room = [h for h in range(hosts) if len(free[h]) >= size]
        if not room:
            raise InfeasibleError(
                f"cannot place the stages' submeshes {list(submeshes)} on {hosts} hosts of "
                f"{gpus_per_host} GPUs"
            )
        host = room[0]
        taken, free[host] = free[host][:size], free[host][size:]
        placed[index] = tuple((host, gpu) for gpu in taken)
    return tuple(placed[i] for i in range(len(submeshes)))


def in_flight(stage_index: int, num_stages: int, microbatches: int, schedule: str) -> int:
    """Microbatches whose activations a stage holds at once: 1F1B min(S - k, B); GPipe B."""
    if schedule == "gpipe":
        return microbatches
    return min(num_stages - stage_index, microbatches)


def polish_stages(
    graph: Graph,
    choice: PipelineChoice,
    layers: Sequence[LayerSlice],
    cluster: Cluster,
    settings: IntraOpSettings,
    schedule: str,
) -> dict[int, StageSharding]:
    """Re-solve each chosen stage as one ILP over its whole range of layers, under the memory
    its in-flight microbatches leave, with its composed cost as the cutoff: the composition's
    single-layer ILPs cannot trade across layers (a tied weight's layout, memory spent where
    it saves most). Each logical shape of the stage's submesh is tried, the chosen one first
    (the composition may rank two shapes in the wrong order when they are close). A stage
    keeps an exact plan only where the pipeline gets faster.

    Not with rematerialisation, whose memory the stage ILP does not model."""
    if settings.remat:
        return dict(choice.exact)
    tensors = split_batch(graph.tensors, choice.microbatches)
    microbatches = choice.microbatches
    times = [plan.time_s for plan in choice.stages]
    syncs = [plan.iteration_s for plan in choice.stages]
    exact: dict[int, StageSharding] = dict(choice.exact)
    for index, plan in enumerate(choice.stages):
        if index in exact:
            continue
        ops = graph.ops[layers[plan.first].start : layers[plan.last].stop]
        holds = in_flight(index, len(choice.stages), microbatches, schedule)
        stage_settings = replace(settings, in_flight=holds)
        composed = choice.table.range_plans(plan.first, plan.last, plan.submesh)
        shapes = logical_shapes(plan.submesh, cluster.gpus_per_host)
        for shape in (plan.mesh.shape, *(s for s in shapes if s != plan.mesh.shape)):
            cutoff = microbatches * (times[index] - plan.transfer_s) + syncs[index]
            mesh = plan.mesh
            if shape != plan.mesh.shape:
                same = [p for p in composed if p.mesh.shape == shape]
                if not same or composed_lower_bound_s(same, microbatches) >= cutoff:
                    continue
                mesh = same[0].mesh
            try:
                sharding = solve_stage(
                    Subgraph(ops, tensors), mesh, cluster.gpu, stage_settings, cutoff
                )
            except (MemoryInfeasible, CutoffExceeded):
                continue
            new_times = [
                *times[:index],
                sharding.microbatch_s + plan.transfer_s,
                *times[index + 1 :],
            ]
            new_syncs = [*syncs[:index], sharding.iteration_s, *syncs[index + 1 :]]
            if _pipeline_s(new_times, new_syncs, microbatches) < _pipeline_s(
                times, syncs, microbatches
            ):
                exact[index] = sharding
                times, syncs = new_times, new_syncs
    return exact


def _pipeline_s(times: Sequence[float], syncs: Sequence[float], microbatches: int) -> float:
    return sum(times) + (microbatches - 1) * max(times) + sum(syncs)


def build_stages(
    graph: Graph,
    choice: PipelineChoice,
    devices: Sequence[tuple[tuple[int, int], ...]],
    layers: Sequence[LayerSlice],
    schedule: str,
    cluster: Cluster,
    exact: Mapping[int, StageSharding] | None = None,
) -> tuple[Stage, ...]:
    """The plan's stages: composed from the layers' plans, or from `exact` (see
    `polish_stages`) where given."""
    table = choice.table
    stages = []
    for index, plan in enumerate(choice.stages):
        if exact and index in exact:
            stage_ops = graph.ops[layers[plan.first].start : layers[plan.last].stop]
            stages.append(
                stage_from_sharding(
                    index,
                    graph,
                    exact[index],
                    cluster,
                    tuple(op.name for op in stage_ops),
                    tuple(layers[k].name for k in range(plan.first, plan.last + 1)),
                    devices[index],
                    plan.transfer_s,
                )
            )
            continue
        shardings = []
        strategies: dict[str, Strategy] = {}
        for k in range(plan.first, plan.last + 1):
            sharding, by_position = table.layer_sharding(
                k, plan.submesh, plan.mesh.shape, plan.level
            )
            shardings.append(sharding)
            layer_ops = graph.ops[layers[k].start : layers[k].stop]
            strategies.update({op.name: s for op, s in zip(layer_ops, by_position, strict=True)})
        stage_ops = graph.ops[layers[plan.first].start : layers[plan.last].stop]
        holds = in_flight(index, len(choice.stages), choice.microbatches, schedule)
        repeated_parameters, repeated_gradients, repeated_optimizer = plan.repeated_state
        parameters = sum(s.parameter_bytes for s in shardings) - repeated_parameters
        gradients = sum(s.gradient_bytes for s in shardings) - repeated_gradients
        optimizer = sum(s.optimizer_bytes for s in shardings) - repeated_optimizer
        activations = plan.activation_bytes(holds)
        stages.append(
            Stage(
                index=index,
                layers=tuple(layers[k].name for k in range(plan.first, plan.last + 1)),
                ops=tuple(op.name for op in stage_ops),
                devices=devices[index],
                logical_mesh=plan.mesh.shape,
                strategies=frozen_map({op.name: strategies[op.name].name for op in stage_ops}),  # type: ignore[arg-type]
                shardings=frozen_map(_tensor_specs(graph, stage_ops, strategies)),  # type: ignore[arg-type]
                time=StageTime(
                    forward_s=sum(s.forward_s for s in shardings),
                    backward_s=sum(s.backward_s for s in shardings),
                    communication_s=sum(s.communication_s for s in shardings)
                    + plan.resharding_s
                    + plan.transfer_s,
                    gradient_sync_s=plan.iteration_s,
                    total_s=plan.time_s,
                ),
                memory=StageMemory(
                    parameters_bytes=parameters,
                    gradients_bytes=gradients,
                    optimizer_bytes=optimizer,
                    activations_bytes=activations,
                    peak_bytes=parameters + gradients + optimizer + activations,
                ),
            )
        )
    return tuple(stages)


def stage_from_sharding(
    index: int,
    graph: Graph,
    sharding: StageSharding,
    cluster: Cluster,
    op_names: tuple[str, ...],
    layers: tuple[str, ...] = (),
    devices: tuple[tuple[int, int], ...] | None = None,
    transfer_s: float = 0.0,
) -> Stage:
    """A plan stage from one ILP's sharding of its ops; `transfer_s` is what receiving from
    earlier stages adds to each microbatch (communication)."""
    shardings = {
        name: str(spec)
        for name, spec in sharding.specs.items()
        if graph.tensors[name].kind is not TensorKind.CONSTANT
    }
    return Stage(
        index=index,
        layers=layers,
        ops=op_names,
        devices=devices
        if devices is not None
        else tuple(
            (host, gpu) for host in range(cluster.hosts) for gpu in range(cluster.gpus_per_host)
        ),
        logical_mesh=sharding.mesh.shape,
        strategies=frozen_map({name: s.name for name, s in sharding.strategies.items()}),  # type: ignore[arg-type]
        shardings=frozen_map(shardings),  # type: ignore[arg-type]
        time=StageTime(
            forward_s=sharding.forward_s,
            backward_s=sharding.backward_s,
            communication_s=sharding.communication_s + transfer_s,
            gradient_sync_s=sharding.iteration_s,
            total_s=sharding.microbatch_s + transfer_s,
        ),
        memory=StageMemory(
            parameters_bytes=sharding.parameter_bytes,
            gradients_bytes=sharding.gradient_bytes,
            optimizer_bytes=sharding.optimizer_bytes,
            activations_bytes=sharding.activation_bytes,
            peak_bytes=sharding.peak_bytes,
        ),
    )


def _tensor_specs(
    graph: Graph, ops: Sequence[Op], strategies: dict[str, Strategy]
) -> dict[str, str]:
    """Every non-constant tensor of the stage: as its producer leaves it, else as its first
    consumer in the stage reads it (parameters, data inputs, tensors from earlier stages)."""
    specs: dict[str, ShardingSpec] = {}
    for op in ops:
        strategy = strategies[op.name]
        for name, spec in zip(op.outputs, strategy.output_specs, strict=True):
            if name and spec is not None:
                specs[name] = spec
    for op in ops:
        strategy = strategies[op.name]
        for name, spec in zip(op.inputs, strategy.input_specs, strict=True):
            if name and spec is not None:
                specs.setdefault(name, spec)
    return {
        name: str(spec)
        for name, spec in specs.items()
        if graph.tensors[name].kind is not TensorKind.CONSTANT
    }


def build_transfers(
    graph: Graph,
    stages: Sequence[Stage],
    cluster: Cluster,
    microbatch_tensors: Mapping[str, Tensor],
    training: bool,
) -> tuple[Transfer, ...]:
    """Every activation a stage reads from an earlier one: specs on both sides, bytes of one
    microbatch, and the time to send it (and its gradient back, when training) over the link
    that joins the two submeshes."""
    stage_of = {name: stage.index for stage in stages for name in stage.ops}
    producer = graph.producer
    found: dict[tuple[str, int], Transfer] = {}
    for stage in stages:
        for name in stage.ops:
            op = graph.op_by_name[name]
            for tensor_name in op.present_inputs:
                source_op = producer.get(tensor_name)
                if (
                    source_op is None
                    or graph.tensors[tensor_name].kind is not TensorKind.ACTIVATION
                ):
                    continue
                source = stages[stage_of[source_op.name]]
                if source.index == stage.index or (tensor_name, stage.index) in found:
                    continue
                tensor = microbatch_tensors[tensor_name]
                crosses = {h for h, _ in source.devices} != {h for h, _ in stage.devices}
                link = cluster.inter_host if crosses else cluster.intra_host
                per_device = tensor.size_bytes / len(stage.devices)
                seconds = point_to_point_s(
                    per_device, link.latency_s, 1.0 / link.bandwidth_bytes_per_s
                ) * (2 if training else 1)
                found[(tensor_name, stage.index)] = Transfer(
                    tensor=tensor_name,
                    source_stage=source.index,
                    destination_stage=stage.index,
                    source_spec=source.shardings.get(tensor_name, ""),
                    destination_spec=stage.shardings.get(tensor_name, ""),
                    size_bytes=tensor.size_bytes,
                    time_s=seconds,
                )
    return tuple(found[key] for key in sorted(found, key=lambda k: (k[1], k[0])))


def layer_records(
    graph: Graph, layers: Sequence[LayerSlice], dtype_graph: Graph
) -> tuple[Layer, ...]:
    records = []
    for layer in layers:
        ops = dtype_graph.ops[layer.start : layer.stop]
        parameters = {
            name
            for op in ops
            for name in op.present_inputs
            if dtype_graph.tensors[name].kind is TensorKind.PARAMETER
        }
        records.append(
            Layer(
                name=layer.name,
                ops=tuple(op.name for op in ops),
                flops=sum(op.flops for op in graph.ops[layer.start : layer.stop]),
                parameter_bytes=sum(dtype_graph.tensors[name].size_bytes for name in parameters),
            )
        )
    return tuple(records)
