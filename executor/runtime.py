"""The plan on devices: each stage jitted on its own mesh, microbatches pipelined between them.

- Every stage's submesh is a `jax.sharding.Mesh` of its logical shape (`executor/mesh.py`).
- Inside a stage, every tensor the plan gives a spec gets it through
  `jax.lax.with_sharding_constraint`; XLA's SPMD partitioner inserts the collectives. Parameters
  are placed with their spec once; each stage is one `jax.jit` function on its mesh.
- Tensors crossing stages move with `jax.device_put`, stage by stage as the plan's transfers
  relay them (`planner/placement.py`): onto each stage's sharding for the tensor (its spec, or
  replicated when it gives none); gradients travel back the same way.
- The schedule (`executor/pipeline.py`) orders the tasks; JAX dispatches asynchronously, so
  stages on disjoint devices overlap.
- Training (`executor/train.py`): per-stage VJPs, gradients accumulated over microbatches, one
  optimizer update per iteration. A stage whose batch is split over mesh axes used for nothing
  else runs as data-parallel replicas (`executor/replicas.py`): its parameter gradients stay
  partial sums on their devices until one all-reduce (or reduce-scatter) per iteration, as the
  plan charges them. Other stages leave the sum to XLA, inside every microbatch's backward
  (same values, more communication); `PlanRuntime.gradient_sync()` says which stage does what.
- ZeRO: a parameter the plan records as `zero2` on the stage that owns it keeps its gradient
  and optimizer state sharded over the mesh axes it is replicated over (the gradient sum is a
  reduce-scatter, the updated weights are all-gathered); `zero3` stores the weights sharded
  too, and the stage gathers them where it reads them.
- Precision (`RuntimeOptions.precision`): "plan" (the default) computes in the plan's dtype:
  with float16 or bfloat16, every floating-point weight, input and constant a stage reads is
  cast to it where the stage reads it (mixed precision: weights, gradients and optimizer state
  stay in the model's float32 at rest; reductions, normalisations, exponentials and the loss
  run in float32, `graph_fn.FLOAT32_OPS`; no loss scaling, so float16 gradients can underflow
  where bfloat16 ones do not). "model" computes in the model's own
  dtypes (float32 for the exported examples), as onnxruntime does.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from executor import train
from executor.collectives import compiled_collectives, predicted_collectives
from executor.graph_fn import Analysis, analyse, evaluate, input_shapes
from executor.mesh import named, partition_spec, stage_mesh
from executor.onnx_model import Node, OnnxModel, seeded_weights
from executor.pipeline import schedule_blocks
from executor.replicas import (
    GradientSync,
    ReplicaLayout,
    batch_dims,
    replica_layout,
    zero_storage_spec,
)
from executor.stages import ModelFacts, StageProgram, bind_plan, facts_from_model
from plans.errors import InputError
from plans.plan import Plan, ZeroStage
from plans.schedules import Kind
from plans.specs import ShardingSpec

Array = Any
Tree = dict[str, Array]
# (tensor, microbatch, stage) -> the tensor's copy on that stage: where it was made, and where
# it was relayed to (`PlanRuntime._feed`).
Produced = dict[tuple[str, int, int], Array]

PRECISIONS = ("plan", "model")
# Plan dtypes that change what a float32 model computes in (float32 itself changes nothing).
_HALF_DTYPES = {"float16": jnp.float16, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True)
class RuntimeOptions:
    mode: str = "infer"  # "train" or "infer"
    seed: int = 0  # graph-only weights, random inputs and labels
    loss: str = "mean"
    learning_rate: float = 1e-3
    dims: Mapping[str, int] = field(default_factory=dict)  # other symbolic dimensions
    precision: str = "plan"  # "plan": compute in the plan's dtype; "model": the model's own


@dataclass(frozen=True)
class StageCollectives:
    stage: int
    predicted: frozenset[str]  # kinds the plan implies (forward pass)
    compiled: Mapping[str, int]  # kind -> count in the compiled forward HLO

    @property
    def agree(self) -> bool:
        return self.predicted == frozenset(self.compiled)


@dataclass(frozen=True)
class TrainingCollectives:
    stage: int
    backward: Mapping[str, int]  # kind -> count in one microbatch's compiled backward pass
    gradient_sum: Mapping[str, int] | None  # the iteration's gradient sum; None: in backward


class PlanRuntime:
    """A model bound to a plan on real devices. Mutable: it holds parameters and optimizer
    state between steps."""

    def __init__(
        self,
        plan: Plan,
        model: OnnxModel,
        options: RuntimeOptions,
        facts: ModelFacts | None = None,
        plan_source: str = "plan",
    ) -> None:
        self.plan = plan
        self.model = model
        self.options = options
        self.plan_source = plan_source
        settings = plan.settings
        if settings.batch_size % settings.microbatches:
            raise InputError(
                plan_source,
                "settings.microbatches",
                f"a divisor of the batch size {settings.batch_size}",
                str(settings.microbatches),
            )
        if options.precision not in PRECISIONS:
            raise InputError(
                "--precision", "", f"one of {', '.join(PRECISIONS)}", repr(options.precision)
            )
        self.compute_dtype = (
            _HALF_DTYPES.get(settings.dtype) if options.precision == "plan" else None
        )
        self.microbatches = settings.microbatches
        self.microbatch_size = settings.microbatch_size
        weights = dict(model.weights)
        weights.update(seeded_weights(model, options.seed))
        self.weights: Mapping[str, np.ndarray] = weights
        facts = facts or facts_from_model(model)
        self.batch_inputs = (
            facts.batch_inputs
            if facts.batch_inputs is not None
            else frozenset(value.name for value in model.inputs)
        )
        self.input_shapes = input_shapes(
            model, self.microbatch_size, options.dims, self.batch_inputs
        )
        self.analysis: Analysis = analyse(model, weights, self.input_shapes)
        self.programs = bind_plan(plan, model, self.analysis, facts, plan_source)
        self.meshes = tuple(self._mesh(program) for program in self.programs)
        self.made_in = {name: p.index for p in self.programs for name in p.outputs}
        self.readers = {
            name: tuple(p.index for p in self.programs if name in p.inputs) for name in self.made_in
        }
        self.forwards = tuple(self._forward(program) for program in self.programs)
        self.forward_jits = tuple(jax.jit(fn) for fn in self.forwards)
        self.owner: dict[str, int] = {}
        for program in self.programs:
            for name in program.parameters:
                self.owner.setdefault(name, program.index)
        self.zero = self._zero_modes() if options.mode == "train" else {}
        self.params: list[Tree] = [
            {
                name: self._place(
                    weights[name], name, p.index, self.parameter_sharding(name, p.index)
                )
                for name in p.parameters
            }
            for p in self.programs
        ]
        self._training: _Training | None = None
        self._analyses: dict[int, Analysis] = {self.microbatch_size: self.analysis}

    # --- placement ---------------------------------------------------------------------------

    def _mesh(self, program: StageProgram) -> Mesh:
        try:
            return stage_mesh(
                program.devices, program.logical_mesh, self.plan.cluster.gpus_per_host
            )
        except LookupError as error:
            raise InputError(
                self.plan_source,
                f"stages[{program.index}].devices",
                "devices that JAX can see (on a CPU, XLA_FLAGS="
                "--xla_force_host_platform_device_count=N)",
                str(error),
            ) from None

    def sharding(self, name: str, stage: int) -> NamedSharding:
        return named(self.meshes[stage], self.programs[stage].specs.get(name))

    def _zero_modes(self) -> dict[str, ZeroStage]:
        """Parameter -> its ZeRO mode on the stage that owns it (the first that reads it), as
        the plan records it, for the parameters whose state is sharded."""
        modes: dict[str, ZeroStage] = {}
        for program in self.programs:
            recorded = self.plan.stages[program.index].zero
            for name in program.parameters:
                mode = recorded.get(name, ZeroStage.NONE)
                if self.owner[name] == program.index and mode is not ZeroStage.NONE:
                    modes[name] = mode
        return modes

    def zero_sharding(self, name: str, stage: int) -> NamedSharding | None:
        """Where a ZeRO parameter's gradient and optimizer state (and, for zero3, its weights)
        live on its owning stage: None when it has no ZeRO strategy or no dimension can take
        the axes it is replicated over."""
        if name not in self.zero or self.owner[name] != stage:
            return None
        program = self.programs[stage]
        shape = tuple(self.analysis.shapes[name].shape)
        spec = program.specs.get(name) or ShardingSpec.replicated(len(shape))
        stored = zero_storage_spec(spec, shape, program.logical_mesh)
        if stored is None:
            return None
        return NamedSharding(self.meshes[stage], partition_spec(stored))

    def parameter_sharding(self, name: str, stage: int) -> NamedSharding:
        """Where a parameter's weights live between steps: its plan spec, or sharded (zero3)."""
        if self.zero.get(name) is ZeroStage.ZERO3:
            stored = self.zero_sharding(name, stage)
            if stored is not None:
                return stored
        return self.sharding(name, stage)

    def _place(
        self, value: Array, name: str, stage: int, target: NamedSharding | None = None
    ) -> Array:
        """Host data or another stage's array -> this stage, in its spec for `name` (or in
        `target`)."""
        target = target or self.sharding(name, stage)
        spec = self.programs[stage].specs.get(name)
        shape = np.shape(value)
        if spec is not None and not spec.divides(shape, self.programs[stage].logical_mesh):
            raise InputError(
                self.plan_source,
                f"stages[{stage}].shardings.{name}",
                f"a spec that divides the tensor's shape {list(shape)} on mesh "
                f"{self.programs[stage].logical_mesh}",
                repr(str(spec)),
            )
        if isinstance(value, jax.Array):
            return jax.device_put(value, target)
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    # --- the stage functions -----------------------------------------------------------------

    def _forward(
        self,
        program: StageProgram,
        specs: Mapping[str, ShardingSpec] | None = None,
        static: Mapping[str, np.ndarray] | None = None,
    ) -> Callable[[Tree, Tree], Tree]:
        """The stage as a function of its parameters and inputs, every tensor constrained to
        its spec: the plan's, or `specs` (a replica's, with `static` traced at its size)."""
        mesh = self.meshes[program.index]
        if specs is None:
            specs = program.specs
        shardings = {
            name: NamedSharding(mesh, partition_spec(spec)) for name, spec in specs.items()
        }
        static = self.analysis.static if static is None else static
        read = {name for node in program.nodes for name in node.inputs if name in static}
        compute = self.compute_dtype

        def lower(value: Array) -> Array:
            """A float32/float64 value in the compute dtype (module docstring: precision)."""
            dtype = np.dtype(value.dtype)
            if compute is None or dtype.kind != "f" or dtype.itemsize <= 2:
                return value
            return value.astype(compute)

        def lower_constant(value: np.ndarray) -> np.ndarray:
            """Constants beyond the half range (masks of float32's lowest) become its ends, as
            exporters write them for half models, not infinities."""
            if compute is None or np.dtype(value.dtype).kind != "f":
                return value
            limits = jnp.finfo(compute)
            return lower(np.clip(value, float(limits.min), float(limits.max)))

        constants = {name: lower_constant(static[name]) for name in read}
        model = self.model

        rebuilt = program.rebuilt

        def constrain(name: str, value: Array) -> Array:
            target = shardings.get(name)
            value = value if target is None else jax.lax.with_sharding_constraint(value, target)
            # Selective recomputation: named, so that the checkpoint policy leaves it unsaved.
            return checkpoint_name(value, name) if name in rebuilt else value

        def run(nodes: tuple[Node, ...], values: Tree) -> Tree:
            env: dict[str, Array] = {**constants, **values}
            evaluate(nodes, env, model.opset, model.source, constrain, compute)
            return {name: value for name, value in env.items() if name not in constants}

        def forward(params: Tree, inputs: Tree) -> Tree:
            # Parameters stored sharded (zero3) are gathered into their plan spec here.
            env = {name: constrain(name, lower(value)) for name, value in params.items()}
            env.update({name: constrain(name, lower(value)) for name, value in inputs.items()})
            if rebuilt:  # the backward reruns the recomputed ops rather than save what they write
                policy = jax.checkpoint_policies.save_anything_except_these_names(*sorted(rebuilt))
                env = jax.checkpoint(functools.partial(run, program.nodes), policy=policy)(env)
            elif not program.recompute:
                env = run(program.nodes, env)
            else:  # each layer keeps its inputs only: jax.checkpoint rebuilds the rest
                start = 0
                for end in program.layer_ends:
                    nodes = program.nodes[start:end]
                    read = {name for node in nodes for name in node.inputs if name in env}
                    made = jax.checkpoint(functools.partial(run, nodes))(
                        {name: env[name] for name in read}
                    )
                    env.update(made)
                    start = end
            return {name: env[name] for name in program.outputs}

        return forward

    def _abstract_inputs(self, stage: int) -> tuple[Tree, Tree]:
        program = self.programs[stage]

        def struct(name: str, sharding: NamedSharding) -> jax.ShapeDtypeStruct:
            shape = self.analysis.shapes[name]
            return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)

        return (
            {
                name: struct(name, self.parameter_sharding(name, stage))
                for name in program.parameters
            },
            {name: struct(name, self.sharding(name, stage)) for name in program.inputs},
        )

    def compiled_text(self, stage: int) -> str:
        """The optimized HLO of the stage's forward pass, as XLA compiled it."""
        params, inputs = self._abstract_inputs(stage)
        text = self.forward_jits[stage].lower(params, inputs).compile().as_text()
        return str(text)

    def collectives(self) -> tuple[StageCollectives, ...]:
        found = []
        for program in self.programs:
            strategies = self.plan.stages[program.index].strategies
            found.append(
                StageCollectives(
                    stage=program.index,
                    predicted=frozenset(
                        predicted_collectives(program, strategies, self._stored_sharded(program))
                    ),
                    compiled=dict(compiled_collectives(self.compiled_text(program.index))),
                )
            )
        return tuple(found)

    def _stored_sharded(self, program: StageProgram) -> frozenset[str]:
        """The stage's parameters stored sharded beyond their spec (zero3): gathered in use."""
        return frozenset(
            name
            for name in program.parameters
            if self.parameter_sharding(name, program.index) != self.sharding(name, program.index)
        )

    # --- data --------------------------------------------------------------------------------

    def random_inputs(self, seed: int) -> dict[str, np.ndarray]:
        """Seeded inputs of the global batch: token ids below the smallest vocabulary the
        model gathers from, floats N(0, 1)."""
        rng = np.random.default_rng(seed)
        made = {}
        for value in self.model.inputs:
            shape = self._global_shape(value.name)
            if value.dtype.kind in "iu":
                made[value.name] = rng.integers(0, self._id_limit(value.name), shape).astype(
                    value.dtype
                )
            elif value.dtype.kind == "b":
                made[value.name] = rng.integers(0, 2, shape).astype(bool)
            else:
                made[value.name] = rng.standard_normal(shape).astype(value.dtype)
        return made

    def _id_limit(self, name: str) -> int:
        """Ids must index every table they reach through Reshape/Gather: the smallest such."""
        limits = []
        reach = {name}
        for node in self.model.nodes:
            if node.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity") and (
                node.inputs and node.inputs[0] in reach
            ):
                reach.update(node.outputs)
            if node.op_type == "Gather" and len(node.inputs) > 1 and node.inputs[1] in reach:
                table = self.analysis.shapes.get(node.inputs[0]) or self.analysis.static.get(
                    node.inputs[0]
                )
                if table is not None:
                    axis = node.attributes.get("axis", 0)
                    limits.append(int(table.shape[axis]))
        return min(limits) if limits else 2

    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs, each named after a graph input, of its shape and dtype kind (cast to
        its dtype), finite; `InputError` naming the first array that is not."""
        checked = {}
        expected = {value.name for value in self.model.inputs}
        for name in inputs:
            if name not in expected:
                raise InputError(
                    "--inputs", name, f"only the graph inputs {', '.join(sorted(expected))}",
                    "an extra array",
                )  # fmt: skip
        for value in self.model.inputs:
            if value.name not in inputs:
                raise InputError("--inputs", value.name, "an array for every graph input", "none")
            array = np.asarray(inputs[value.name])
            wanted = self._global_shape(value.name)
            if array.shape != wanted:
                raise InputError(
                    "--inputs",
                    value.name,
                    f"an array of shape {list(wanted)}",
                    str(list(array.shape)),
                )
            if _dtype_family(array.dtype) != _dtype_family(value.dtype):
                raise InputError(
                    "--inputs", value.name, f"an array of {value.dtype}", f"dtype {array.dtype}"
                )
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise InputError("--inputs", value.name, "finite values", "NaN or infinity")
            checked[value.name] = array.astype(value.dtype, copy=False)
        return checked

    def global_shape(self, name: str) -> tuple[int, ...]:
        """Input `name`'s shape for the whole batch."""
        return self._global_shape(name)

    def _global_shape(self, name: str) -> tuple[int, ...]:
        """Input `name`'s shape for the whole batch."""
        shape = tuple(self.input_shapes[name].shape)
        if name not in self.batch_inputs:
            return shape
        return (self.plan.settings.batch_size, *shape[1:])

    def _microbatch(self, array: np.ndarray, m: int, name: str = "") -> np.ndarray:
        """Microbatch `m` of a batched array (every microbatch reads an unbatched input whole)."""
        if name and name not in self.batch_inputs:
            return array
        size = self.microbatch_size
        return array[m * size : (m + 1) * size]

    # --- inference ---------------------------------------------------------------------------

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph outputs for the whole batch (microbatches concatenated on dimension 0)."""
        data = self._check_inputs(inputs)
        produced: Produced = {}
        ticks = schedule_blocks(len(self.programs), self.microbatches, "gpipe", training=False)
        for tick in ticks:
            for task in tick:
                stage = task.stage
                program = self.programs[stage]
                feeds = {
                    name: self._feed(name, stage, task.microbatch, data, produced)
                    for name in program.inputs
                }
                outputs = self.forward_jits[stage](self.params[stage], feeds)
                for name, value in outputs.items():
                    produced[(name, task.microbatch, stage)] = value
        results = {}
        for name in self.model.outputs:
            if name in self.analysis.static:
                results[name] = np.asarray(self.analysis.static[name])
                continue
            made = self.made_in[name]
            parts = [to_host(produced[(name, m, made)]) for m in range(self.microbatches)]
            results[name] = _join(parts, self.microbatch_size)
        return results

    def _feed(
        self,
        name: str,
        stage: int,
        m: int,
        data: Mapping[str, np.ndarray],
        produced: Produced,
    ) -> Array:
        """Input `name` of microbatch `m` on `stage`: from the host for graph inputs; else
        relayed from the stage that made it through every stage between, as the plan's
        transfers say (each stage passes on what crosses the cut after it)."""
        if name in data:
            return self._place(self._microbatch(data[name], m, name), name, stage)
        for k in range(self.made_in[name] + 1, stage + 1):
            if (name, m, k) not in produced:
                produced[(name, m, k)] = self._place(produced[(name, m, k - 1)], name, k)
        return produced[(name, m, stage)]

    def relay_back(self, value: Array, name: str, stage: int) -> Array:
        """The gradient of `name` from `stage` to the stage before the one that made it, stage
        by stage (the reverse of `_feed`); the maker places it itself."""
        for k in range(stage - 1, self.made_in[name], -1):
            value = self._place(value, name, k)
        return value

    # --- training ----------------------------------------------------------------------------

    def train_step(
        self, inputs: Mapping[str, np.ndarray], labels: np.ndarray | None = None
    ) -> float:
        """One iteration: forward and backward of every microbatch in the plan's schedule,
        then one optimizer update. Returns the iteration's loss."""
        if self._training is None:
            self._training = _Training(self)
        return self._training.step(self._check_inputs(inputs), labels)

    def training_collectives(
        self, inputs: Mapping[str, np.ndarray], labels: np.ndarray | None = None
    ) -> tuple[TrainingCollectives, ...]:
        """What XLA compiled for training, per stage: the collectives of one microbatch's
        backward pass and of the once-per-iteration gradient sum."""
        if self._training is None:
            self._training = _Training(self)
        texts = self._training.compiled_texts(self._check_inputs(inputs), labels)
        return tuple(
            TrainingCollectives(
                stage=index,
                backward=dict(compiled_collectives(backward)),
                gradient_sum=None if total is None else dict(compiled_collectives(total)),
            )
            for index, (backward, total) in enumerate(texts)
        )

    def gradient_sync(self) -> tuple[GradientSync, ...]:
        """Per stage, whether its parameter gradients are summed once per iteration."""
        if self._training is None:
            self._training = _Training(self)
        return tuple(self._training.sync)

    def batch_dims(self) -> dict[str, int | None]:
        """Per traced tensor, its batch dimension (`executor/replicas.py`)."""
        doubled = self._analysis_at(2 * self.microbatch_size)
        return batch_dims(
            {name: tuple(v.shape) for name, v in self.analysis.shapes.items()},
            {name: tuple(v.shape) for name, v in doubled.shapes.items()},
        )

    def replica_analysis(self, count: int) -> Analysis:
        """The model traced at the size of one of `count` replicas of a microbatch."""
        return self._analysis_at(self.microbatch_size // count)

    def _analysis_at(self, batch: int) -> Analysis:
        if batch not in self._analyses:
            shapes = input_shapes(self.model, batch, self.options.dims, self.batch_inputs)
            self._analyses[batch] = analyse(self.model, self.weights, shapes)
        return self._analyses[batch]

    def loss_output_shape(self) -> tuple[int, ...]:
        return tuple(self.analysis.shapes[self.model.outputs[0]].shape)

    def parameters(self) -> dict[str, np.ndarray]:
        """Current parameter values, from their owning stages."""
        return {
            name: to_host(self.params[stage][name]) for name, stage in sorted(self.owner.items())
        }


class _Training:
    """Jitted per-stage forward-with-VJP, backward, accumulation and update functions."""

    def __init__(self, runtime: PlanRuntime) -> None:
        self.runtime = runtime
        model = runtime.model
        options = runtime.options
        self.loss_name = model.outputs[0]
        if self.loss_name not in runtime.made_in:
            raise InputError(
                model.source,
                f"graph.output[{self.loss_name}]",
                "an output a stage computes",
                "a constant",
            )
        self.loss_stage = runtime.made_in[self.loss_name]
        self.float_outputs: list[tuple[str, ...]] = []
        self.forward_vjp = []
        self.backward = []
        self.layouts: list[ReplicaLayout | None] = []
        self.sync: list[GradientSync] = []
        self.reduce: list[Callable[[Tree], Tree] | None] = []
        batch_dim = runtime.batch_dims()
        for program in runtime.programs:
            later_read = tuple(
                name
                for name in program.outputs
                if any(reader > program.index for reader in runtime.readers.get(name, ()))
                and train.is_float(runtime.analysis.shapes[name])
            )
            self.float_outputs.append(later_read)
            loss = (options.loss, self.loss_name) if program.index == self.loss_stage else None
            layout, reason = self._layout(program, batch_dim)
            self.layouts.append(layout)
            self.sync.append(GradientSync(program.index, layout.axes if layout else (), reason))
            if layout is None:
                fn = train.forward_with_vjp(runtime.forwards[program.index], later_read, loss)
                self.reduce.append(None)
            else:
                inner = runtime.replica_analysis(layout.count)
                forward = runtime._forward(program, layout.inner_specs, inner.static)
                mesh = runtime.meshes[program.index]
                copies = {
                    name: NamedSharding(
                        mesh,
                        partition_spec(
                            program.specs.get(name)
                            or ShardingSpec.replicated(len(runtime.analysis.shapes[name].shape)),
                            leading=layout.axes,
                        ),
                    )
                    for name in program.parameters
                }
                fn = train.replicated_forward_with_vjp(forward, layout, copies, later_read, loss)
                totals = {
                    name: runtime.zero_sharding(name, program.index)
                    or runtime.sharding(name, program.index)
                    for name in program.parameters
                }
                self.reduce.append(jax.jit(train.sum_replicas, out_shardings=totals))
            self.forward_vjp.append(jax.jit(fn))
            self.backward.append(jax.jit(train.backward))
        self.add = jax.jit(train.add_trees)
        transform = train.optimizer(runtime.plan.settings.optimizer, options.learning_rate)
        self.owned = [
            {name for name, stage in runtime.owner.items() if stage == program.index}
            for program in runtime.programs
        ]
        self.opt_state = []
        self.update = []
        for i in range(len(runtime.programs)):
            params = {name: runtime.params[i][name] for name in sorted(self.owned[i])}
            # Optimizer state lies where the gradient does: the parameter's spec, or its ZeRO
            # shard.
            state_of = {
                name: runtime.zero_sharding(name, i) or runtime.sharding(name, i) for name in params
            }
            state = jax.jit(transform.init)(params)
            state_shardings = _state_shardings(
                state, state_of, params, named(runtime.meshes[i], None)
            )
            self.opt_state.append(jax.device_put(state, state_shardings))
            # Updated parameters keep their place, and the optimizer state its sharding, so
            # every iteration runs the same compiled update.
            kept = {name: runtime.params[i][name].sharding for name in params}
            shardings = (kept, state_shardings)
            self.update.append(jax.jit(train.apply_update(transform), out_shardings=shardings))

    def _layout(
        self, program: StageProgram, batch_dim: Mapping[str, int | None]
    ) -> tuple[ReplicaLayout | None, str]:
        rt = self.runtime
        shapes = {name: tuple(value.shape) for name, value in rt.analysis.shapes.items()}
        layout, reason = replica_layout(program, shapes, batch_dim, rt.analysis.static)
        if layout is None:
            return None, reason
        if rt.microbatch_size % layout.count:
            return None, (
                f"the microbatch of {rt.microbatch_size} does not divide into "
                f"{layout.count} replicas"
            )
        inner = rt.replica_analysis(layout.count)
        read = {name for node in program.nodes for name in node.inputs if name}
        missing = sorted(
            name for name in read if name in rt.analysis.static and name not in inner.static
        )
        if missing:
            return None, f"{missing[0]!r} is static at the microbatch size only"
        return layout, ""

    def _float_input(self, name: str) -> bool:
        return name in self.runtime.made_in and train.is_float(self.runtime.analysis.shapes[name])

    def _forward_task(
        self,
        i: int,
        m: int,
        data: Mapping[str, np.ndarray],
        labels: np.ndarray | None,
        produced: Produced,
    ) -> tuple[Tree, Any]:
        """Stage i's forward pass on microbatch m: its outputs go to `produced`; returns its
        differentiable outputs and its VJP."""
        rt = self.runtime
        program = rt.programs[i]
        feeds = {name: rt._feed(name, i, m, data, produced) for name in program.inputs}
        floats = {k: v for k, v in feeds.items() if self._float_input(k)}
        others = {k: v for k, v in feeds.items() if k not in floats}
        label = None
        if i == self.loss_stage and labels is not None:
            label = rt._place(rt._microbatch(labels, m), "labels", i)
        diff, rest, vjp = self.forward_vjp[i](rt.params[i], floats, others, label)
        for name, value in [*diff.items(), *rest.items()]:
            produced[(name, m, i)] = value
        return diff, vjp

    def compiled_texts(
        self, data: Mapping[str, np.ndarray], labels: np.ndarray | None
    ) -> list[tuple[str, str | None]]:
        """Per stage, the optimized HLO of one microbatch's backward pass and of the
        once-per-iteration gradient sum (None where XLA sums inside the backward)."""
        produced: Produced = {}
        texts: list[tuple[str, str | None]] = []
        for i in range(len(self.runtime.programs)):
            diff, vjp = self._forward_task(i, 0, data, labels, produced)
            cotangents = train.zero_cotangents(diff)
            backward_text = str(self.backward[i].lower(vjp, cotangents).compile().as_text())
            reduce = self.reduce[i]
            sum_text = None
            if reduce is not None:
                d_params, _ = self.backward[i](vjp, cotangents)
                sum_text = str(reduce.lower(d_params).compile().as_text())  # type: ignore[attr-defined]
            texts.append((backward_text, sum_text))
        return texts

    def step(self, data: Mapping[str, np.ndarray], labels: np.ndarray | None) -> float:
        rt = self.runtime
        stages = len(rt.programs)
        microbatches = rt.microbatches
        if self.runtime.options.loss == "cross-entropy" and labels is None:
            raise InputError("--inputs", "labels", "labels for the cross-entropy loss", "none")
        produced: Produced = {}
        vjps: dict[tuple[int, int], Any] = {}
        cotangents: dict[tuple[str, int], list[Array]] = {}
        grads: list[Tree | None] = [None] * stages
        losses: list[Array] = []
        settings = rt.plan.settings
        ticks = schedule_blocks(
            stages, microbatches, settings.schedule, training=True,
            warmup_extra=settings.warmup_extra, virtual_stages=settings.virtual_stages,
        )  # fmt: skip
        scale = 1.0 / microbatches
        for tick in ticks:
            for task in tick:
                i, m = task.stage, task.microbatch
                if task.kind is Kind.FORWARD:
                    diff, vjp = self._forward_task(i, m, data, labels, produced)
                    if train.LOSS_KEY in diff:
                        losses.append(diff[train.LOSS_KEY])
                    vjps[(i, m)] = vjp
                    continue
                outgoing = {}
                for name in self.float_outputs[i]:
                    parts = cotangents.pop((name, m))
                    total = rt._place(parts[0], name, i)
                    for part in parts[1:]:
                        total = total + rt._place(part, name, i)
                    outgoing[name] = total
                if i == self.loss_stage:
                    outgoing[train.LOSS_KEY] = jnp.asarray(scale, jnp.float32)
                d_params, d_inputs = self.backward[i](vjps.pop((i, m)), outgoing)
                current = grads[i]
                grads[i] = d_params if current is None else self.add(current, d_params)
                for name, value in d_inputs.items():
                    cotangents.setdefault((name, m), []).append(rt.relay_back(value, name, i))
        self._apply(grads)
        return float(np.mean([float(to_host(loss)) for loss in losses]))

    def _apply(self, grads: list[Tree | None]) -> None:
        rt = self.runtime
        for i, reduce in enumerate(self.reduce):
            if reduce is not None and grads[i] is not None:
                grads[i] = reduce(grads[i])  # the iteration's one all-reduce or reduce-scatter
        for i, program in enumerate(rt.programs):
            stage_grads = grads[i] or {}
            for name in program.parameters:
                owner = rt.owner[name]
                if owner != i:  # a shared parameter: its gradient goes to the owner
                    owned = grads[owner]
                    assert owned is not None
                    target = rt.zero_sharding(name, owner) or rt.sharding(name, owner)
                    moved = rt._place(stage_grads[name], name, owner, target)
                    owned[name] = owned[name] + moved
        for i in range(len(rt.programs)):
            if not self.owned[i]:
                continue
            names = sorted(self.owned[i])
            owned_grads = grads[i]
            assert owned_grads is not None
            params = {name: rt.params[i][name] for name in names}
            new, self.opt_state[i] = self.update[i](
                params, self.opt_state[i], {name: owned_grads[name] for name in names}
            )
            rt.params[i].update(new)
        for i, program in enumerate(rt.programs):
            for name in program.parameters:
                owner = rt.owner[name]
                if owner != i:
                    rt.params[i][name] = rt._place(
                        rt.params[owner][name], name, i, rt.parameter_sharding(name, i)
                    )


def _state_shardings(
    state: Any, by_name: Mapping[str, NamedSharding], params: Tree, fallback: NamedSharding
) -> Any:
    """Each optimizer-state leaf of a parameter's shape, under that parameter's name in the
    state tree (optax keeps one tree like the parameters per moment), gets `by_name[name]`;
    anything else (step counts) is replicated."""

    def pick(path: tuple[Any, ...], leaf: Any) -> NamedSharding:
        for entry in reversed(path):
            name = getattr(entry, "key", None)
            if name in by_name and np.shape(leaf) == np.shape(params[name]):
                return by_name[name]
        return fallback

    return jax.tree_util.tree_map_with_path(pick, state)


def to_host(value: Array) -> np.ndarray:
    """A (possibly multi-process) array as one NumPy array on this process."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(jax.device_get(value))


def _join(parts: list[np.ndarray], microbatch_size: int) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if all(part.ndim and part.shape[0] == microbatch_size for part in parts):
        return np.concatenate(parts, axis=0)
    return np.stack(parts)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    jax.block_until_ready(result)
    return result, time.perf_counter() - started


def _dtype_family(dtype: np.dtype[Any]) -> str:
    """Integers (signed or not), booleans, floating point (real or complex), or other."""
    return {"i": "integer", "u": "integer", "b": "bool", "f": "float", "c": "float"}.get(
        dtype.kind, dtype.kind
    )
