"""A plan from the search's choices: stages, transfers, layers and the estimate.

The searches decide which ops run where and how (`planner/pipeshard.py`, `planner/
shard_parallel.py`, `planner/baselines.py`); this module writes those decisions as the plan's
values: each stage's ops, devices, logical mesh, per-op strategies and per-tensor specs, its
time and memory; the tensors sent between stages; the layers; and the iteration estimate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from cost_models.cluster import Cluster
from cost_models.collectives import transfer_s
from planner import __version__
from planner.graph import Graph, Op, Tensor, TensorKind
from planner.interleaving import group_peak_bytes
from planner.intra_op import StageSharding, tensor_specs
from planner.layers import LayerSlice
from planner.options import PlanOptions, Schedule
from planner.pipeline_time import in_flight
from planner.placement import Devices, cut_link
from planner.recompute import recomputed_ops
from planner.stage_costs import RangePlan, StageCostTable
from planner.strategies import Strategy
from plans.plan import (
    RECOMPUTE_SELECTIVE,
    ClusterInfo,
    Estimate,
    GpuInfo,
    Layer,
    ModelInfo,
    Plan,
    PlannerInfo,
    SearchReport,
    Settings,
    Stage,
    StageMemory,
    StageTime,
    Transfer,
    ZeroStage,
    frozen_map,
)
from plans.specs import ShardingSpec
from plans.timeline import pipeline_timeline

# Training FLOPs per forward FLOP: forward + backward (twice the forward for contractions).
# The usual convention for model FLOP utilisation (Narayanan et al., SC'21, "Efficient
# Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", appendix).
TRAINING_FLOPS_PER_FORWARD_FLOP = 3.0


def _selectively_recomputed(table: StageCostTable, plan: RangePlan) -> tuple[str, ...]:
    """The ops of a selectively recomputing stage that rerun their forward, in stage order
    (`planner/recompute.py`, layer by layer as the table solved them)."""
    if plan.recompute != RECOMPUTE_SELECTIVE:
        return ()
    found: list[str] = []
    for k in range(plan.first, plan.last + 1):
        layer = table.layer(k)
        rerun = recomputed_ops(layer, RECOMPUTE_SELECTIVE)
        found += [op.name for op in layer.ops if op.name in rerun]
    return tuple(found)


def build_stages(
    graph: Graph,
    pipeline: Sequence[RangePlan],
    microbatches: int,
    table: StageCostTable,
    devices: Sequence[Devices],
    schedule: Schedule,
    cluster: Cluster,
    exact: Mapping[int, StageSharding] | None = None,
    warmup_extra: int = 0,
    virtual_stages: int = 1,
    recompute_tables: Mapping[str, StageCostTable] | None = None,
) -> tuple[Stage, ...]:
    """The plan's stages: composed from the layers' plans in the cost table (a recomputing
    stage's from the table of its mode in `recompute_tables`, where given), or from `exact`
    (`planner/polish.py`) where given. With virtual stages, a stage's peak memory is that of the
    devices it shares with the other stages of its group (`group_peak_bytes`)."""
    layers = table.layers
    stages = []
    for index, plan in enumerate(pipeline):
        source = (recompute_tables or {}).get(plan.recompute, table)
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
                )
            )
            continue
        shardings = []
        strategies: dict[str, Strategy] = {}
        for k in range(plan.first, plan.last + 1):
            sharding, by_position = source.layer_sharding(
                k, plan.submesh, plan.mesh.shape, plan.level
            )
            shardings.append(sharding)
            layer_ops = graph.ops[layers[k].start : layers[k].stop]
            strategies.update({op.name: s for op, s in zip(layer_ops, by_position, strict=True)})
        stage_ops = graph.ops[layers[plan.first].start : layers[plan.last].stop]
        holds = in_flight(
            index, len(pipeline), microbatches, schedule, warmup_extra, virtual_stages
        )
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
                recompute=plan.recompute,
                recomputed_ops=_selectively_recomputed(source, plan),
                strategies=frozen_map({op.name: strategies[op.name].name for op in stage_ops}),  # type: ignore[arg-type]
                shardings=_recorded_specs(graph, stage_ops, strategies),
                zero=_zero_modes(graph, stage_ops, strategies),
                time=StageTime(
                    forward_s=sum(s.forward_s for s in shardings),
                    backward_s=sum(s.backward_s for s in shardings),
                    communication_s=plan.communication_s,
                    gradient_sync_s=plan.gradient_sync_s,
                    optimizer_step_s=plan.optimizer_step_s,
                    total_s=plan.block_s,
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
    if virtual_stages == 1:
        return tuple(stages)
    peaks = group_peak_bytes(pipeline, microbatches, virtual_stages)
    groups = len(pipeline) // virtual_stages
    return tuple(
        replace(stage, memory=replace(stage.memory, peak_bytes=peaks[stage.index % groups]))
        for stage in stages
    )


def stage_from_sharding(
    index: int,
    graph: Graph,
    sharding: StageSharding,
    cluster: Cluster,
    op_names: tuple[str, ...],
    layers: tuple[str, ...] = (),
    devices: tuple[tuple[int, int], ...] | None = None,
) -> Stage:
    """A plan stage from one ILP's sharding of its ops."""
    ops = [graph.op_by_name[name] for name in op_names]
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
        shardings=_recorded_specs(graph, ops, sharding.strategies),
        zero=_zero_modes(graph, ops, sharding.strategies),
        time=StageTime(
            forward_s=sharding.forward_s,
            backward_s=sharding.backward_s,
            communication_s=sharding.communication_s,
            gradient_sync_s=sharding.gradient_sync_s,
            optimizer_step_s=sharding.optimizer_step_s,
            total_s=sharding.microbatch_s,
        ),
        memory=StageMemory(
            parameters_bytes=sharding.parameter_bytes,
            gradients_bytes=sharding.gradient_bytes,
            optimizer_bytes=sharding.optimizer_bytes,
            activations_bytes=sharding.activation_bytes,
            peak_bytes=sharding.peak_bytes,
        ),
    )


def _recorded_specs(
    graph: Graph, ops: Sequence[Op], strategies: Mapping[str, Strategy]
) -> Mapping[str, str]:
    """The stage's tensor specs as the plan records them: every non-constant tensor."""
    return frozen_map(  # type: ignore[return-value]
        {
            name: str(spec)
            for name, spec in tensor_specs(ops, strategies).items()
            if graph.tensors[name].kind is not TensorKind.CONSTANT
        }
    )


def _zero_modes(
    graph: Graph, ops: Sequence[Op], strategies: Mapping[str, Strategy]
) -> Mapping[str, ZeroStage]:
    """Every parameter the stage reads, held as the strategy of the first op reading it says
    (that op owns it: `planner.intra_op.owned_parameters`)."""
    modes: dict[str, ZeroStage] = {}
    for op in ops:
        for name in op.present_inputs:
            if graph.tensors[name].kind is TensorKind.PARAMETER and name not in modes:
                modes[name] = strategies[op.name].zero
    return frozen_map(modes)  # type: ignore[return-value]


def build_transfers(
    graph: Graph,
    stages: Sequence[Stage],
    cluster: Cluster,
    microbatch_tensors: Mapping[str, Tensor],
    training: bool,
) -> tuple[Transfer, ...]:
    """What crosses each cut between stage k - 1 and stage k (`planner/placement.py`): every
    activation made before the cut and read after it, relayed stage by stage; its specs on both
    sides, its bytes of one microbatch, and the time to send it (and its gradient back, when
    training) over the cut's link, spread over the receiving stage's devices.

    A stage that only relays a tensor keeps it as it arrived where that spec divides on its
    mesh, else replicated."""
    made_in: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for stage in stages:
        for name in stage.ops:
            op = graph.op_by_name[name]
            for tensor in op.outputs:
                if tensor:
                    made_in[tensor] = stage.index
            for tensor in op.present_inputs:
                last_read[tensor] = max(last_read.get(tensor, -1), stage.index)
    # Where each stage starts: its first device (stages in order, or an interleaved stage on
    # its group's devices).
    starts = [host * cluster.gpus_per_host + gpu for host, gpu in (s.devices[0] for s in stages)]
    found = []
    for tensor, made in sorted(made_in.items()):
        if graph.tensors[tensor].kind is not TensorKind.ACTIVATION:
            continue
        local = microbatch_tensors[tensor]
        arriving = stages[made].shardings.get(tensor, "")
        for k in range(made + 1, last_read.get(tensor, made) + 1):
            receiver = stages[k]
            sent = stages[k - 1].shardings.get(tensor, arriving)
            arriving = receiver.shardings.get(tensor) or _relayed_spec(
                sent, local.shape, receiver.logical_mesh
            )
            found.append(
                Transfer(
                    tensor=tensor,
                    source_stage=k - 1,
                    destination_stage=k,
                    source_spec=sent,
                    destination_spec=arriving,
                    size_bytes=local.size_bytes,
                    time_s=transfer_s(
                        local.size_bytes,
                        len(receiver.devices),
                        cut_link(cluster, starts[k]),
                        training,
                    ),
                )
            )
    return tuple(sorted(found, key=lambda t: (t.destination_stage, t.tensor)))


def _relayed_spec(spec: str, shape: tuple[int, ...], mesh_shape: tuple[int, int]) -> str:
    """How a relaying stage holds a tensor that arrived as `spec`: so, where it divides on the
    stage's mesh, else replicated."""
    try:
        parsed = ShardingSpec.parse(spec)
    except ValueError:
        parsed = ShardingSpec.replicated(len(shape))
    if parsed.rank == len(shape) and parsed.divides(shape, mesh_shape):
        return str(parsed)
    return str(ShardingSpec.replicated(len(shape)))


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


def assemble_plan(
    graph: Graph,
    cluster: Cluster,
    options: PlanOptions,
    stages: tuple[Stage, ...],
    search: SearchReport,
    layers: tuple[Layer, ...] = (),
    transfers: tuple[Transfer, ...] = (),
    warmup_extra: int = 0,
    virtual_stages: int = 1,
) -> Plan:
    """A `Plan` around `stages`, whose estimate is the makespan of the schedule it prescribes
    (`plans/timeline.py`)."""
    microbatches = options.microbatches or 1
    flops_per_iteration = graph.flops * (
        TRAINING_FLOPS_PER_FORWARD_FLOP if options.training else 1.0
    )
    plan = Plan(
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
            warmup_extra=warmup_extra,
            virtual_stages=virtual_stages,
        ),
        layers=layers,
        stages=stages,
        transfers=transfers,
        estimate=Estimate(0.0, 0.0, 0.0, max(stage.memory.peak_bytes for stage in stages)),
        search=replace(search, warnings=(*search.warnings, *search_warnings(search))),
    )
    iteration_s = pipeline_timeline(plan).makespan_s
    return replace(
        plan,
        estimate=replace(
            plan.estimate,
            iteration_time_s=iteration_s,
            samples_per_s=_rate(graph.batch_size, iteration_s),
            tflops_per_gpu=_rate(flops_per_iteration, iteration_s) / cluster.num_devices / 1e12,
        ),
        search=replace(
            plan.search, warnings=(*plan.search.warnings, *_untimed_warning(iteration_s > 0))
        ),
    )


def _rate(amount: float, seconds: float) -> float:
    """`amount` per second; 0 for an iteration that takes no time (a model of views only)."""
    return amount / seconds if seconds > 0 else 0.0


def _untimed_warning(timed: bool) -> tuple[str, ...]:
    """A model of views only (a lone Flatten) moves nothing and costs no time: its rates are
    reported as 0, and the search report says why."""
    if timed:
        return ()
    return (
        "the model's ops cost no time in the cost model (views only): samples/s and TFLOP/s "
        "are reported as 0",
    )


def search_warnings(report: SearchReport) -> tuple[str, ...]:
    """What the user should know about how the plan was found."""
    warnings = []
    if report.replicated_fallback:
        warnings.append(
            "op types without a sharding rule run replicated: "
            + ", ".join(report.replicated_fallback)
        )
    for mesh in report.meshes:
        if mesh.status == "time limit":
            shape = f"{mesh.logical_mesh[0]}x{mesh.logical_mesh[1]}"
            warnings.append(
                f"the ILP for logical mesh {shape} hit --ilp-time-limit; kept its best plan "
                f"(gap {mesh.mip_gap:.2%})"
            )
    if report.layer_ilps_at_time_limit:
        warnings.append(
            f"{report.layer_ilps_at_time_limit} layer ILPs hit --ilp-time-limit; their best "
            "plans were kept"
        )
    return tuple(warnings)
