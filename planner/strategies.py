"""The sharding strategies of one op on one logical mesh, with their costs.

A strategy assigns each mesh axis (of size > 1) to at most one splittable label of the op's
index notation (`planner/notation.py`), or to none; both axes on one label split it over the
whole mesh (S01). Every combination whose split labels divide evenly is a strategy: one generic
rule for every op. Costs per device follow from the label classes:

- compute: roofline of the op on its local (sharded) shapes; backward = 2x forward for
  contractions, 1x otherwise; an op that recomputation reruns (`planner/recompute.py`: every op
  under full recomputation, the attention cores under selective) adds its forward to its
  backward, its forward collectives included (and the resharding into it, `planner/reshard.py`);
- forward: a split contracted label leaves partial sums: all-reduce of the output over its axes,
  or (a variant per free output dim those axes divide) reduce-scatter onto that dim, whose
  backward all-gathers the output's gradient: Megatron-LM's sequence parallelism (Korthikanti
  et al. 2022, section 4.2.2), where the row-parallel matmul's output is scattered on the
  sequence, the LayerNorm, dropout and residual regions run split on it, and the all-gather
  before the next column-parallel matmul is the resharding that split implies;
  a split statistics label (softmax axis, layer-norm features): all-reduce of two per-row
  statistics, forward and backward;
- backward, gradient of an activation input X: split labels that X lacks are summed over:
  all-reduce of dX over their axes (per microbatch);
- backward, gradient of a parameter W: the same rule gives the axes over which dW is summed;
  that all-reduce runs once per iteration, gradients accumulating locally in between;
- memory: parameters, gradients and optimizer state of the local piece of each parameter
  (`cost_models.memory`), plus the op's outputs kept for backward (`planner/saved_tensors.py`;
  under selective recomputation, those it keeps and, apart, those the backward rebuilds).

ZeRO variants (training, ops that own parameters replicated over some mesh axes R):

- zero1: optimizer state sharded over R (Megatron-LM's distributed optimizer): the gradients
  accumulate whole over the microbatches, then one reduce-scatter, the update of the local
  shard, and an all-gather of the updated weights over R, once per iteration;
- zero2: gradients sharded over R too: a sharded gradient cannot accumulate a whole
  microbatch's gradient, so the reduce-scatter runs in every microbatch's backward (as
  DeepSpeed's ZeRO-2 does under gradient accumulation), the all-gather once per iteration;
- zero3: weights sharded over R as well, all-gathered for every forward and backward pass.

A parameter used by several ops (tied embeddings) is owned, and its state paid, by its first
consumer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cost_models.cluster import Gpu
from cost_models.collectives import (
    all_gather_over_s,
    all_reduce_over_s,
    reduce_scatter_over_s,
)
from cost_models.compute import ComputeModel, Roofline, backward_ratio
from cost_models.memory import parameter_state
from cost_models.mesh import LogicalMesh, MeshAxis
from planner.graph import Op, Tensor, TensorKind
from planner.notation import Notation
from planner.ops import cost_class_of, op_flops, op_traffic_bytes
from planner.saved_tensors import charged_to
from plans.plan import ZeroStage
from plans.specs import ShardingSpec, split_ways, strategy_name

ZERO_MODES = ("auto", "on", "off", "zero1", "zero2", "zero3")


@dataclass(frozen=True)
class StrategyOptions:
    """Switches in the spirit of Alpa's AutoShardingOption."""

    # "auto": the ILP may pick ZeRO variants; "on": always one of them; "off": never;
    # "zero1" / "zero2" / "zero3": always that variant (the baselines, `evaluate --zero`).
    zero: str = "auto"
    force_data_parallel: bool = False  # split only the batch, over every axis
    # The batch goes on this mesh axis, for every op whose batch divides it (an op whose
    # batch cannot go there keeps all its strategies).
    force_batch_dim_to_mesh_dim: int | None = None
    # The token sequence (`Tensor.sequence_dim`, `planner/sequence_dims.py`) goes on this mesh
    # axis, for every op whose sequence divides it: context parallelism. A dim that merges the
    # batch and the sequence ([b s] of a projection) goes on both axes, batch major.
    force_sequence_dim_to_mesh_dim: int | None = None
    # A contraction's partial sums may be reduce-scattered onto a free dim of its output
    # instead of all-reduced (Megatron-LM's sequence parallelism; `_scattered`).
    scatter_partial_sums: bool = True

    def __post_init__(self) -> None:
        if self.zero not in ZERO_MODES:
            raise ValueError(f"zero must be one of {ZERO_MODES}, not {self.zero!r}")
        for axis in (self.force_batch_dim_to_mesh_dim, self.force_sequence_dim_to_mesh_dim):
            if axis not in (None, 0, 1):
                raise ValueError("a forced mesh axis must be 0, 1 or None")
        if (
            self.force_batch_dim_to_mesh_dim is not None
            and self.force_batch_dim_to_mesh_dim == self.force_sequence_dim_to_mesh_dim
        ):
            raise ValueError("the batch and the sequence cannot be forced onto the same axis")


@dataclass(frozen=True)
class CostContext:
    mesh: LogicalMesh
    gpu: Gpu
    dtype: str
    optimizer: str
    training: bool
    options: StrategyOptions = field(default_factory=StrategyOptions)
    compute: ComputeModel | None = None  # None: the GPU's roofline
    remat: bool = False  # this op's forward reruns in the backward (`planner/recompute.py`)

    @property
    def compute_model(self) -> ComputeModel:
        return self.compute if self.compute is not None else Roofline(self.gpu)


class CostTotals:
    """What a strategy, and a stage of them, costs in total: the sums every reader wants."""

    forward_s: float
    backward_s: float
    communication_s: float
    gradient_sync_s: float
    optimizer_step_s: float
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int

    @property
    def microbatch_s(self) -> float:
        """One microbatch: forward, backward and collectives."""
        return self.forward_s + self.backward_s + self.communication_s

    @property
    def iteration_s(self) -> float:
        """Once per iteration: gradient sync and optimizer step."""
        return self.gradient_sync_s + self.optimizer_step_s

    @property
    def state_bytes(self) -> int:
        """Training state: parameters, gradients and optimizer state."""
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes


@dataclass(frozen=True)
class Strategy(CostTotals):
    name: str  # the specs, "OUT = IN0 x IN1" (`plans.specs.strategy_name`)
    input_specs: tuple[ShardingSpec | None, ...]
    output_specs: tuple[ShardingSpec | None, ...]
    forward_s: float  # compute of one microbatch
    backward_s: float
    communication_s: float  # collectives of one microbatch, forward and backward
    gradient_sync_s: float  # once per iteration: parameter-gradient reduction (+ ZeRO gather)
    optimizer_step_s: float  # once per iteration: the optimizer step on the local shards
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # outputs kept for backward, one microbatch
    zero: ZeroStage = ZeroStage.NONE  # how the parameters the op owns hold their state
    # Selective recomputation: the saved tensors charged to this op that the backward rebuilds
    # instead of keeping (`planner/saved_tensors.py`: kept_and_rebuilt), one microbatch.
    rebuilt_bytes: int = 0


def _assignments(
    notation: Notation,
    extents: Mapping[str, tuple[int, ...]],
    mesh_shape: tuple[int, int],
) -> list[dict[str, tuple[int, ...]]]:
    """Every valid map label -> mesh axes: each axis of size > 1 on one label or none, the
    split labels dividing evenly in every tensor that has them."""
    splittable = [
        label
        for label in notation.labels
        if label not in notation.unsplittable and min(extents[label]) > 1
    ]
    live_axes = [axis for axis in (0, 1) if mesh_shape[axis] > 1]
    found: list[dict[str, tuple[int, ...]]] = []
    for choice in itertools.product([None, *splittable], repeat=len(live_axes)):
        assignment: dict[str, tuple[int, ...]] = {}
        for axis, label in zip(live_axes, choice, strict=True):
            if label is not None:
                assignment[label] = (*assignment.get(label, ()), axis)
        if all(
            extent % split_ways(axes, mesh_shape) == 0
            for label, axes in assignment.items()
            for extent in extents[label]
        ):
            found.append(assignment)
    return found


def _spec(labels: Sequence[str], assignment: Mapping[str, tuple[int, ...]]) -> ShardingSpec:
    return ShardingSpec(tuple(assignment.get(label, ()) for label in labels))


def _axes(mesh: LogicalMesh, axes: Iterable[int]) -> list[MeshAxis]:
    return [mesh.axes[axis] for axis in sorted(set(axes))]


def _labels_of_dims(
    op: Op, notation: Notation, tensors: Mapping[str, Tensor], dim: Callable[[Tensor], int | None]
) -> set[str]:
    """The labels of the dims `dim` picks in the op's tensors (their batch, their sequence)."""
    found: set[str] = set()
    for names, groups in ((op.inputs, notation.inputs), (op.outputs, notation.outputs)):
        for name, labels in zip(names, groups, strict=False):
            position = dim(tensors[name]) if name else None
            if labels is not None and position is not None:
                found.add(labels[position])
    return found


def _filter_by_options(
    assignments: list[dict[str, tuple[int, ...]]],
    batch: set[str],
    sequence: set[str],
    mesh_shape: tuple[int, int],
    options: StrategyOptions,
) -> list[dict[str, tuple[int, ...]]]:
    kept = assignments
    if options.force_data_parallel:
        whole = tuple(axis for axis in (0, 1) if mesh_shape[axis] > 1)
        kept = [
            a for a in kept if all(label in batch and axes == whole for label, axes in a.items())
        ]
        best = [a for a in kept if a]  # prefer splitting the batch when it divides
        kept = best or [a for a in kept if not a]
    batch_axis = options.force_batch_dim_to_mesh_dim
    sequence_axis = options.force_sequence_dim_to_mesh_dim
    if sequence_axis is not None and batch_axis is not None and mesh_shape[batch_axis] == 1:
        batch_axis = None  # splits nothing, and demanding it would block the sequence's demand

    def required(label: str) -> tuple[int, ...]:
        """The axes a forced label goes on: the batch's, then (inner) the sequence's."""
        axes = (
            batch_axis if label in batch else None,
            sequence_axis if label in sequence else None,
        )
        return tuple(axis for axis in axes if axis is not None)

    demands = [
        labels
        for labels, axis in ((batch, batch_axis), (sequence, sequence_axis))
        if labels and axis is not None
    ]
    # Both demands, else the batch's alone, else the sequence's alone, else none.
    for subset in (demands, demands[:1], demands[1:]):
        forced = [
            a for a in kept
            if all(any(a.get(label) == required(label) for label in labels) for labels in subset)
        ]  # fmt: skip
        if subset and forced:
            kept = forced
            break
    return kept or [{}]


def op_strategies(
    op: Op,
    notation: Notation,
    tensors: Mapping[str, Tensor],
    context: CostContext,
    owned_parameters: frozenset[str],
    saved: frozenset[str] = frozenset(),
    rebuilt: frozenset[str] = frozenset(),
) -> tuple[Strategy, ...]:
    """The op's strategies, deduplicated, in a deterministic order (replicated first)."""
    mesh = context.mesh
    extents: dict[str, list[int]] = {}
    for names, groups in ((op.inputs, notation.inputs), (op.outputs, notation.outputs)):
        for name, labels in zip(names, groups, strict=False):
            if not name or labels is None:
                continue
            for label, extent in zip(labels, tensors[name].shape, strict=True):
                extents.setdefault(label, []).append(extent)
    frozen_extents = {label: tuple(values) for label, values in extents.items()}
    assignments = _assignments(notation, frozen_extents, mesh.shape)
    assignments = _filter_by_options(
        assignments,
        _labels_of_dims(op, notation, tensors, lambda tensor: tensor.batch_dim),
        _labels_of_dims(op, notation, tensors, lambda tensor: tensor.sequence_dim),
        mesh.shape,
        context.options,
    )
    strategies: list[Strategy] = []
    seen: set[tuple[object, ...]] = set()
    for assignment in assignments:
        priced = _priced(
            op, notation, tensors, frozen_extents, context, owned_parameters, saved, rebuilt,
            assignment,
        )  # fmt: skip
        for strategy in priced:
            key = (strategy.input_specs, strategy.output_specs, strategy.zero)
            if key not in seen:
                seen.add(key)
                strategies.append(strategy)
    return tuple(strategies)


def _priced(
    op: Op,
    notation: Notation,
    tensors: Mapping[str, Tensor],
    frozen_extents: Mapping[str, tuple[int, ...]],
    context: CostContext,
    owned_parameters: frozenset[str],
    saved: frozenset[str],
    rebuilt: frozenset[str],
    assignment: Mapping[str, tuple[int, ...]],
) -> list[Strategy]:
    mesh = context.mesh
    shape = mesh.shape
    input_specs = tuple(
        None if labels is None or not name else _spec(labels, assignment)
        for name, labels in zip(op.inputs, notation.inputs, strict=False)
    )
    input_specs += (None,) * (len(op.inputs) - len(input_specs))
    output_specs = tuple(
        None if labels is None or not name else _spec(labels, assignment)
        for name, labels in zip(op.outputs, notation.outputs, strict=False)
    )
    output_specs += (None,) * (len(op.outputs) - len(output_specs))

    local: dict[str, Tensor] = dict(tensors)  # unlabelled tensors (shape operands) stay whole
    for name, spec in (
        *zip(op.inputs, input_specs, strict=True),
        *zip(op.outputs, output_specs, strict=True),
    ):
        if name and spec is not None:
            local[name] = tensors[name].local(spec, shape)

    read, written = op_traffic_bytes(op, local)
    cost = cost_class_of(op)
    flops = op_flops(op, local)
    forward_s = context.compute_model.op_time_s(cost, flops, read + written, context.dtype)
    backward_s = backward_ratio(cost) * forward_s if context.training else 0.0
    if context.training and context.remat:
        backward_s += forward_s  # rematerialisation: the forward runs again in the backward

    # Forward: partial sums of split contracted labels.
    contracted_axes = [axis for label in notation.contracted for axis in assignment.get(label, ())]
    output_bytes = sum(local[name].size_bytes for name in op.outputs if name)
    forward_communication_s = all_reduce_over_s(output_bytes, _axes(mesh, contracted_axes))
    backward_communication_s = 0.0
    # Normalisation statistics over split labels: two numbers per row, forward and backward.
    for label in sorted(notation.statistics):
        axes = assignment.get(label, ())
        if axes:
            local_extent = frozen_extents[label][0] // split_ways(axes, shape)
            statistics_bytes = 2 * output_bytes / max(local_extent, 1)
            statistics_s = all_reduce_over_s(statistics_bytes, _axes(mesh, axes))
            forward_communication_s += statistics_s
            if context.training:
                backward_communication_s += statistics_s
    communication_s = forward_communication_s + backward_communication_s
    if context.training and context.remat:
        communication_s += forward_communication_s  # the recomputed forward's collectives

    state = parameter_state(context.dtype, context.optimizer, context.training)
    parameters: list[_ParameterPiece] = []
    for name, labels in zip(op.inputs, notation.inputs, strict=False):
        if not name or labels is None:
            continue
        tensor = tensors[name]
        # Split labels this input lacks: its gradient is summed over their axes.
        summed = {
            axis for label, axes in assignment.items() if label not in labels for axis in axes
        }
        if tensor.kind is TensorKind.PARAMETER:
            if name in owned_parameters:
                held = {axis for label in labels for axis in assignment.get(label, ())}
                replicated = {axis for axis in (0, 1) if shape[axis] > 1 and axis not in held}
                parameters.append(
                    _ParameterPiece(
                        local[name].num_elements, frozenset(summed), frozenset(replicated)
                    )
                )
        elif context.training and tensor.kind is TensorKind.ACTIVATION and tensor.is_float:
            communication_s += all_reduce_over_s(local[name].size_bytes, _axes(mesh, summed))
    activation_bytes = rebuilt_bytes = 0
    if context.training:
        # Kept for backward (`planner/saved_tensors.py`): the op's saved outputs, and the saved
        # data inputs it reads, at their local size; likewise what the backward rebuilds.
        activation_bytes = sum(local[name].size_bytes for name in charged_to(op, saved, tensors))
        rebuilt_bytes = sum(local[name].size_bytes for name in charged_to(op, rebuilt, tensors))
    elements = sum(piece.elements for piece in parameters)
    plain = Strategy(
        name=strategy_name(input_specs, output_specs),
        input_specs=input_specs,
        output_specs=output_specs,
        forward_s=forward_s,
        backward_s=backward_s,
        communication_s=communication_s,
        gradient_sync_s=0.0,
        optimizer_step_s=0.0,
        parameter_bytes=elements * state.weights,
        gradient_bytes=elements * state.gradients,
        optimizer_bytes=elements * state.optimizer,
        activation_bytes=activation_bytes,
        rebuilt_bytes=rebuilt_bytes,
    )
    bases = [plain]
    if contracted_axes and context.options.scatter_partial_sums:
        bases += _scattered(plain, op, notation, tensors, frozen_extents, assignment, context,
                            saved, rebuilt, sorted(set(contracted_axes)))  # fmt: skip
    if not parameters or not context.training:
        return bases
    return [v for base in bases for v in _with_parameter_state(base, context, parameters)]


def _scattered(
    plain: Strategy,
    op: Op,
    notation: Notation,
    tensors: Mapping[str, Tensor],
    frozen_extents: Mapping[str, tuple[int, ...]],
    assignment: Mapping[str, tuple[int, ...]],
    context: CostContext,
    saved: frozenset[str],
    rebuilt: frozenset[str],
    axes: Sequence[int],
) -> list[Strategy]:
    """`plain` (whose output holds partial sums over `axes`) with the partial sums
    reduce-scattered onto one free dim of the output instead of all-reduced: one variant per
    such dim that the axes divide (Megatron-LM's sequence parallelism: the row-parallel
    matmul's output scattered on the sequence). The backward all-gathers the output's gradient
    over the same axes; a forward that reruns (recomputation) scatters again."""
    named = [(position, name) for position, name in enumerate(op.outputs) if name]
    if len(named) != 1 or notation.outputs[named[0][0]] is None:
        return []
    position, name = named[0]
    labels = notation.outputs[position]
    assert labels is not None
    mesh = context.mesh
    ways = split_ways(tuple(axes), mesh.shape)
    partial = tensors[name].local(plain.output_specs[position], mesh.shape)  # type: ignore[arg-type]
    over = _axes(mesh, axes)
    forward_delta_s = reduce_scatter_over_s(partial.size_bytes, over) - all_reduce_over_s(
        partial.size_bytes, over
    )
    runs = 2 if context.training and context.remat else 1
    gradient_s = all_gather_over_s(partial.size_bytes, over) if context.training else 0.0
    charged = set(charged_to(op, saved, tensors)) if context.training else set()
    charged_rebuilt = set(charged_to(op, rebuilt, tensors)) if context.training else set()
    variants = []
    for label in labels:
        if label in assignment or label in notation.unsplittable:
            continue
        if any(extent % ways for extent in frozen_extents[label]):
            continue
        spec = _spec(labels, {**assignment, label: tuple(axes)})
        output_specs = tuple(spec if k == position else s for k, s in enumerate(plain.output_specs))
        shrink = partial.size_bytes - tensors[name].local(spec, mesh.shape).size_bytes
        variants.append(
            replace(
                plain,
                name=strategy_name(plain.input_specs, output_specs),
                output_specs=output_specs,
                communication_s=plain.communication_s + runs * forward_delta_s + gradient_s,
                activation_bytes=plain.activation_bytes - (shrink if name in charged else 0),
                rebuilt_bytes=plain.rebuilt_bytes - (shrink if name in charged_rebuilt else 0),
            )
        )
    return variants


@dataclass(frozen=True)
class _ParameterPiece:
    """One owned parameter as a strategy holds it."""

    elements: int  # local elements
    summed_axes: frozenset[int]  # axes its gradient is summed over
    replicated_axes: frozenset[int]  # live axes it is not split over (ZeRO shards over these)


def _with_parameter_state(
    plain: Strategy, context: CostContext, parameters: list[_ParameterPiece]
) -> list[Strategy]:
    """The plain strategy with its once-per-iteration costs, and its ZeRO variants."""
    mesh = context.mesh
    state = parameter_state(context.dtype, context.optimizer, True)
    # Optimizer step, memory-bound: read weights, gradients and state; write weights and state.
    update_bytes = 2 * state.weights + state.gradients + 2 * state.optimizer
    seconds_per_byte = 1.0 / context.gpu.memory_bandwidth_bytes_per_s

    def sharded(piece: _ParameterPiece) -> float:
        return piece.elements / split_ways(piece.replicated_axes, mesh.shape)

    variants = []
    can_shard = any(piece.replicated_axes for piece in parameters)
    zero = context.options.zero
    if zero in ("auto", "off") or not can_shard:
        variants.append(
            replace(
                plain,
                gradient_sync_s=sum(
                    all_reduce_over_s(p.elements * state.gradients, _axes(mesh, p.summed_axes))
                    for p in parameters
                ),
                optimizer_step_s=sum(p.elements for p in parameters)
                * update_bytes
                * seconds_per_byte,
            )
        )
    if zero == "off" or not can_shard:
        return variants
    reduce_scatter = sum(
        reduce_scatter_over_s(p.elements * state.gradients, _axes(mesh, p.summed_axes))
        for p in parameters
    )
    gather = sum(
        all_gather_over_s(p.elements * state.weights, _axes(mesh, p.replicated_axes))
        for p in parameters
    )
    sharded_elements = sum(sharded(p) for p in parameters)
    update_s = sharded_elements * update_bytes * seconds_per_byte
    zero1 = replace(
        plain,
        zero=ZeroStage.ZERO1,
        gradient_sync_s=reduce_scatter + gather,
        optimizer_step_s=update_s,
        optimizer_bytes=round(sharded_elements * state.optimizer),
    )
    zero2 = replace(
        plain,
        zero=ZeroStage.ZERO2,
        communication_s=plain.communication_s + reduce_scatter,
        gradient_sync_s=gather,
        optimizer_step_s=update_s,
        gradient_bytes=round(sharded_elements * state.gradients),
        optimizer_bytes=round(sharded_elements * state.optimizer),
    )
    # The weights are gathered for the forward and again for the backward (and, with
    # rematerialisation, once more for the recomputed forward).
    passes = 3 if context.training and context.remat else 2
    zero3 = replace(
        plain,
        zero=ZeroStage.ZERO3,
        communication_s=plain.communication_s + passes * gather + reduce_scatter,
        optimizer_step_s=update_s,
        parameter_bytes=round(sharded_elements * state.weights),
        gradient_bytes=round(sharded_elements * state.gradients),
        optimizer_bytes=round(sharded_elements * state.optimizer),
    )
    chosen = {"zero1": (zero1,), "zero2": (zero2,), "zero3": (zero3,)}.get(zero)
    variants.extend(chosen if chosen is not None else (zero1, zero2, zero3))
    return variants
