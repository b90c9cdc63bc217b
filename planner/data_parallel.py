"""The data-parallel plan: one stage on every device, every op split on its batch dimension.

Per device and microbatch of b = B / N samples (N devices):

    forward_s   = sum over ops of roofline(op FLOPs, op bytes) on the local (batch-split) shapes
    backward_s  = sum over ops of ratio(op) x forward time of the op (2 contractions, 1 others)
    grad sync   = all-reduce of every parameter gradient over both mesh axes, once per iteration
    iteration   = microbatches x (forward_s + backward_s) + grad sync

Memory per device: full weights, gradients and optimizer state (`cost_models.memory`) plus the
activations kept for backward (training) or the peak of live activations (inference).

This is the walking skeleton's planner and stays as a baseline and as a reference that the
intra-op ILP must never do worse than.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from cost_models.cluster import Cluster
from cost_models.collectives import all_reduce_over_s
from cost_models.compute import (
    BACKWARD_RATIO_CONTRACTION,
    BACKWARD_RATIO_MEMORY_BOUND,
    roofline_s,
)
from cost_models.memory import parameter_state
from cost_models.mesh import logical_mesh
from planner.graph import VIEW_OPS, Graph, Op, Tensor, TensorKind, op_traffic_bytes
from planner.op_flops import op_flops
from planner.options import PlanOptions
from planner.sharding import ShardingSpec
from plans.errors import InfeasibleError
from plans.plan import Stage, StageMemory, StageTime, frozen_map

CONTRACTION_OPS = frozenset({"MatMul", "Gemm", "Einsum", "Conv", "ConvTranspose"})


def backward_ratio(op: Op) -> float:
    return (
        BACKWARD_RATIO_CONTRACTION if op.op_type in CONTRACTION_OPS else BACKWARD_RATIO_MEMORY_BOUND
    )


def batch_split_tensors(graph: Graph, ways: int) -> dict[str, Tensor]:
    """Every tensor as one device holds it when the batch is split `ways` ways."""
    local: dict[str, Tensor] = {}
    for name, tensor in graph.tensors.items():
        if tensor.batch_dim is None:
            local[name] = tensor
            continue
        shape = list(tensor.shape)
        shape[tensor.batch_dim] //= ways
        local[name] = replace(tensor, shape=tuple(shape))
    return local


def op_forward_s(op: Op, tensors: Mapping[str, Tensor], cluster: Cluster, dtype: str) -> float:
    read, written = op_traffic_bytes(op, tensors)
    return roofline_s(op_flops(op, tensors), read + written, cluster.gpu, dtype)


def saved_activation_bytes(graph: Graph, tensors: Mapping[str, Tensor]) -> int:
    """Bytes kept from forward to backward: data inputs and every op output but views'
    (a view aliases its input)."""
    total = sum(tensors[name].size_bytes for name in graph.inputs)
    for op in graph.ops:
        if op.op_type in VIEW_OPS:
            continue
        total += sum(
            tensors[name].size_bytes
            for name in op.outputs
            if name and tensors[name].kind is TensorKind.ACTIVATION
        )
    return total


def live_activation_peak_bytes(graph: Graph, tensors: Mapping[str, Tensor]) -> int:
    """Peak bytes of activations alive at once in a forward pass in topological order.

    A buffer lives from the op that writes it to the last use of it or of any view of it
    (reshape and friends alias their input and add nothing).
    """
    root: dict[str, str] = {}
    for op in graph.ops:
        if op.op_type in VIEW_OPS and op.present_inputs:
            base = root.get(op.present_inputs[0], op.present_inputs[0])
            for name in op.outputs:
                root[name] = base
    last_use: dict[str, int] = {}
    for index, op in enumerate(graph.ops):
        for name in op.present_inputs:
            last_use[root.get(name, name)] = index
    for name in graph.outputs:
        last_use[root.get(name, name)] = len(graph.ops)
    live = sum(tensors[name].size_bytes for name in graph.inputs)
    peak = live
    freed: set[str] = set()
    for index, op in enumerate(graph.ops):
        if op.op_type not in VIEW_OPS:
            live += sum(tensors[name].size_bytes for name in op.outputs if name)
        peak = max(peak, live)
        for name in op.present_inputs:
            owner = root.get(name, name)
            if owner in freed or last_use.get(owner) != index:
                continue
            if tensors[owner].kind in (TensorKind.ACTIVATION, TensorKind.INPUT):
                live -= tensors[owner].size_bytes
                freed.add(owner)
    return peak


def data_parallel_stage(graph: Graph, cluster: Cluster, options: PlanOptions) -> Stage:
    """The whole graph as one stage on the cluster's (hosts, GPUs per host) mesh."""
    devices = cluster.num_devices
    microbatch = graph.batch_size // options.microbatches
    if graph.batch_size % options.microbatches or microbatch % devices:
        raise InfeasibleError(
            f"data parallelism needs a microbatch divisible by the {devices} devices; "
            f"batch {graph.batch_size} in {options.microbatches} microbatches gives {microbatch} "
            "(pick a batch size that divides evenly)"
        )
    mesh = logical_mesh(
        cluster, (cluster.hosts, cluster.gpus_per_host), (cluster.hosts, cluster.gpus_per_host)
    )
    typed = graph.cast_floats(options.dtype)
    # The graph was imported at the global batch; one device sees batch / (microbatches x N).
    local = batch_split_tensors(typed, options.microbatches * devices)

    forward_s = 0.0
    backward_s = 0.0
    for op in typed.ops:
        op_s = op_forward_s(op, local, cluster, options.dtype)
        forward_s += op_s
        backward_s += backward_ratio(op) * op_s if options.training else 0.0

    state = parameter_state(options.dtype, options.optimizer, options.training)
    parameters = typed.parameter_count
    gradient_bytes = parameters * state.gradients
    gradient_sync_s = all_reduce_over_s(gradient_bytes, mesh.axes) if options.training else 0.0
    if options.training:
        activations = saved_activation_bytes(typed, local)
    else:
        activations = live_activation_peak_bytes(typed, local)
    memory = StageMemory(
        parameters_bytes=parameters * state.weights,
        gradients_bytes=gradient_bytes,
        optimizer_bytes=parameters * state.optimizer,
        activations_bytes=activations,
        peak_bytes=parameters * state.total + activations,
    )
    split = _batch_axes_spec(mesh.shape)
    shardings = {
        name: str(_batch_spec(tensor, split))
        for name, tensor in typed.tensors.items()
        if tensor.kind is not TensorKind.CONSTANT
    }
    strategies = {
        op.name: "batch-split" if _touches_batch(op, typed) else "replicated" for op in typed.ops
    }
    return Stage(
        index=0,
        layers=(),
        ops=tuple(op.name for op in typed.ops),
        devices=tuple(
            (host, gpu) for host in range(cluster.hosts) for gpu in range(cluster.gpus_per_host)
        ),
        logical_mesh=mesh.shape,
        strategies=frozen_map(strategies),  # type: ignore[arg-type]
        shardings=frozen_map(shardings),  # type: ignore[arg-type]
        time=StageTime(
            forward_s=forward_s,
            backward_s=backward_s,
            communication_s=0.0,
            gradient_sync_s=gradient_sync_s,
            total_s=forward_s + backward_s,
        ),
        memory=memory,
    )


def check_memory(stage: Stage, cluster: Cluster, options: PlanOptions) -> None:
    budget = int(cluster.gpu.memory_bytes * options.memory_fraction)
    memory = stage.memory
    if memory.peak_bytes > budget:
        raise InfeasibleError(
            f"stage {stage.index} needs {_gib(memory.peak_bytes)} per GPU "
            f"(parameters {_gib(memory.parameters_bytes)}, gradients "
            f"{_gib(memory.gradients_bytes)}, optimizer {_gib(memory.optimizer_bytes)}, "
            f"activations {_gib(memory.activations_bytes)}); the budget is {_gib(budget)} "
            f"({options.memory_fraction:.0%} of {_gib(cluster.gpu.memory_bytes)})"
        )


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


def _batch_axes_spec(mesh_shape: tuple[int, int]) -> tuple[int, ...]:
    """The mesh axes that split the batch: both, leaving out axes of size one."""
    return tuple(axis for axis in (0, 1) if mesh_shape[axis] > 1)


def _batch_spec(tensor: Tensor, axes: tuple[int, ...]) -> ShardingSpec:
    dims: list[tuple[int, ...]] = [() for _ in tensor.shape]
    if tensor.batch_dim is not None:
        dims[tensor.batch_dim] = axes
    return ShardingSpec(tuple(dims))


def _touches_batch(op: Op, graph: Graph) -> bool:
    return any(graph.tensors[name].batch_dim is not None for name in op.outputs if name)
