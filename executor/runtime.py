"""The plan on devices: each stage jitted on its own mesh, microbatches pipelined between them.

- Every stage's submesh is a `jax.sharding.Mesh` of its logical shape (`executor/mesh.py`).
- Inside a stage, every tensor the plan gives a spec gets it through
  `jax.lax.with_sharding_constraint`; XLA's SPMD partitioner inserts the collectives. Parameters
  are placed with their spec once; each stage is one `jax.jit` function on its mesh.
- Tensors crossing stages move with `jax.device_put` to the reading stage's sharding (its spec
  for the tensor, or replicated when it gives none); gradients travel back the same way.
- The schedule (`executor/pipeline.py`) orders the tasks; JAX dispatches asynchronously, so
  stages on disjoint devices overlap.
- Training (`executor/train.py`): per-stage VJPs, gradients accumulated over microbatches, one
  optimizer update per iteration. Differences from the plan's cost model, by design of JAX's
  SPMD model: a parameter gradient that is summed over a mesh axis is all-reduced inside each
  microbatch's backward (the plan counts it once per iteration; the values are the same), and
  ZeRO strategies run as their plain variant (parameters keep their plan spec, optimizer state
  follows the parameter's sharding).
- Compute is in the model's own dtype (float32 for the exported models); the plan's training
  dtype is used for its estimates only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from executor import train
from executor.collectives import compiled_collectives, predicted_collectives
from executor.graph_fn import Analysis, analyse, evaluate, input_shapes
from executor.mesh import named, shard_counts, stage_mesh
from executor.onnx_model import OnnxModel, seeded_weights
from executor.pipeline import schedule_tasks
from executor.stages import ModelFacts, StageProgram, bind_plan, facts_from_model
from plans.errors import InputError
from plans.plan import Plan

Array = Any
Tree = dict[str, Array]


@dataclass(frozen=True)
class RuntimeOptions:
    mode: str = "infer"  # "train" or "infer"
    seed: int = 0  # graph-only weights, random inputs and labels
    loss: str = "mean"
    learning_rate: float = 1e-3
    dims: Mapping[str, int] = field(default_factory=dict)  # other symbolic dimensions


@dataclass(frozen=True)
class StageCollectives:
    stage: int
    predicted: frozenset[str]  # kinds the plan implies (forward pass)
    compiled: Mapping[str, int]  # kind -> count in the compiled forward HLO

    @property
    def agree(self) -> bool:
        return self.predicted == frozenset(self.compiled)


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
        self.microbatches = settings.microbatches
        self.microbatch_size = settings.microbatch_size
        weights = dict(model.weights)
        weights.update(seeded_weights(model, options.seed))
        self.weights: Mapping[str, np.ndarray] = weights
        self.input_shapes = input_shapes(model, self.microbatch_size, options.dims)
        self.analysis: Analysis = analyse(model, weights, self.input_shapes)
        self.programs = bind_plan(
            plan, model, self.analysis, facts or facts_from_model(model), plan_source
        )
        self.meshes = tuple(self._mesh(program) for program in self.programs)
        self.made_in = {name: p.index for p in self.programs for name in p.outputs}
        self.readers = {
            name: tuple(p.index for p in self.programs if name in p.inputs) for name in self.made_in
        }
        self.forwards = tuple(self._forward(program) for program in self.programs)
        self.forward_jits = tuple(jax.jit(fn) for fn in self.forwards)
        self.params: list[Tree] = [
            {name: self._place(weights[name], name, p.index) for name in p.parameters}
            for p in self.programs
        ]
        self.owner: dict[str, int] = {}
        for program in self.programs:
            for name in program.parameters:
                self.owner.setdefault(name, program.index)
        self._training: _Training | None = None

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

    def _place(self, value: Array, name: str, stage: int) -> Array:
        """Host data or another stage's array -> this stage, in its spec for `name`."""
        target = self.sharding(name, stage)
        spec = self.programs[stage].specs.get(name)
        shape = np.shape(value)
        if spec is not None:
            counts = shard_counts(spec, self.programs[stage].logical_mesh)
            if any(size % count for size, count in zip(shape, counts, strict=False)):
                raise InputError(
                    self.plan_source,
                    f"stages[{stage}].shardings.{name}",
                    f"a spec that divides the tensor's shape {list(shape)} on mesh "
                    f"{self.programs[stage].logical_mesh}",
                    repr(spec),
                )
        if isinstance(value, jax.Array):
            return jax.device_put(value, target)
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    # --- the stage functions -----------------------------------------------------------------

    def _forward(self, program: StageProgram) -> Callable[[Tree, Tree], Tree]:
        mesh = self.meshes[program.index]
        shardings = {name: named(mesh, spec) for name, spec in program.specs.items()}
        static = self.analysis.static
        read = {name for node in program.nodes for name in node.inputs if name in static}
        constants = {name: static[name] for name in read}
        model = self.model

        def constrain(name: str, value: Array) -> Array:
            target = shardings.get(name)
            return value if target is None else jax.lax.with_sharding_constraint(value, target)

        def forward(params: Tree, inputs: Tree) -> Tree:
            env: dict[str, Array] = dict(constants)
            env.update(params)
            env.update({name: constrain(name, value) for name, value in inputs.items()})
            evaluate(program.nodes, env, model.opset, model.source, constrain)
            return {name: env[name] for name in program.outputs}

        return forward

    def _abstract_inputs(self, stage: int) -> tuple[Tree, Tree]:
        program = self.programs[stage]

        def struct(name: str) -> jax.ShapeDtypeStruct:
            shape = self.analysis.shapes[name]
            return jax.ShapeDtypeStruct(
                shape.shape, shape.dtype, sharding=self.sharding(name, stage)
            )

        return (
            {name: struct(name) for name in program.parameters},
            {name: struct(name) for name in program.inputs},
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
                    predicted=frozenset(predicted_collectives(program, strategies)),
                    compiled=dict(compiled_collectives(self.compiled_text(program.index))),
                )
            )
        return tuple(found)

    # --- data --------------------------------------------------------------------------------

    def random_inputs(self, seed: int) -> dict[str, np.ndarray]:
        """Seeded inputs of the global batch: token ids below the smallest vocabulary the
        model gathers from, floats N(0, 1)."""
        rng = np.random.default_rng(seed)
        made = {}
        for value in self.model.inputs:
            shape = (self.plan.settings.batch_size, *self.input_shapes[value.name].shape[1:])
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
        checked = {}
        for value in self.model.inputs:
            if value.name not in inputs:
                raise InputError("--inputs", value.name, "an array for every graph input", "none")
            array = np.asarray(inputs[value.name])
            wanted = (self.plan.settings.batch_size, *self.input_shapes[value.name].shape[1:])
            if array.shape != wanted:
                raise InputError(
                    "--inputs",
                    value.name,
                    f"an array of shape {list(wanted)}",
                    str(list(array.shape)),
                )
            checked[value.name] = array
        return checked

    def _microbatch(self, array: np.ndarray, m: int) -> np.ndarray:
        size = self.microbatch_size
        return array[m * size : (m + 1) * size]

    # --- inference ---------------------------------------------------------------------------

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph outputs for the whole batch (microbatches concatenated on dimension 0)."""
        data = self._check_inputs(inputs)
        produced: dict[tuple[str, int], Array] = {}
        ticks = schedule_tasks(len(self.programs), self.microbatches, "gpipe", training=False)
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
                    produced[(name, task.microbatch)] = value
        results = {}
        for name in self.model.outputs:
            if name in self.analysis.static:
                results[name] = np.asarray(self.analysis.static[name])
                continue
            parts = [to_host(produced[(name, m)]) for m in range(self.microbatches)]
            results[name] = _join(parts, self.microbatch_size)
        return results

    def _feed(
        self,
        name: str,
        stage: int,
        m: int,
        data: Mapping[str, np.ndarray],
        produced: Mapping[tuple[str, int], Array],
    ) -> Array:
        if name in data:
            return self._place(self._microbatch(data[name], m), name, stage)
        return self._place(produced[(name, m)], name, stage)

    # --- training ----------------------------------------------------------------------------

    def train_step(
        self, inputs: Mapping[str, np.ndarray], labels: np.ndarray | None = None
    ) -> float:
        """One iteration: forward and backward of every microbatch in the plan's schedule,
        then one optimizer update. Returns the iteration's loss."""
        if self._training is None:
            self._training = _Training(self)
        return self._training.step(self._check_inputs(inputs), labels)

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
        for program in runtime.programs:
            later_read = tuple(
                name
                for name in program.outputs
                if any(reader > program.index for reader in runtime.readers.get(name, ()))
                and train.is_float(runtime.analysis.shapes[name])
            )
            self.float_outputs.append(later_read)
            loss = (options.loss, self.loss_name) if program.index == self.loss_stage else None
            fn = train.forward_with_vjp(runtime.forwards[program.index], later_read, loss)
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
            replicated = named(runtime.meshes[i], None)
            state = jax.jit(transform.init)(params)
            state_shardings = jax.tree.map(
                lambda leaf, fallback=replicated: (
                    leaf.sharding if isinstance(leaf.sharding, NamedSharding) else fallback
                ),
                state,
            )
            self.opt_state.append(jax.device_put(state, state_shardings))
            # Updated parameters keep their plan spec, and the optimizer state its sharding, so
            # every iteration runs the same compiled update.
            shardings = ({name: value.sharding for name, value in params.items()}, state_shardings)
            self.update.append(jax.jit(train.apply_update(transform), out_shardings=shardings))

    def _float_input(self, name: str) -> bool:
        return name in self.runtime.made_in and train.is_float(self.runtime.analysis.shapes[name])

    def step(self, data: Mapping[str, np.ndarray], labels: np.ndarray | None) -> float:
        rt = self.runtime
        stages = len(rt.programs)
        microbatches = rt.microbatches
        if self.runtime.options.loss == "cross-entropy" and labels is None:
            raise InputError("--inputs", "labels", "labels for the cross-entropy loss", "none")
        produced: dict[tuple[str, int], Array] = {}
        vjps: dict[tuple[int, int], Any] = {}
        cotangents: dict[tuple[str, int], list[Array]] = {}
        grads: list[Tree | None] = [None] * stages
        losses: list[Array] = []
        ticks = schedule_tasks(stages, microbatches, rt.plan.settings.schedule, training=True)
        scale = 1.0 / microbatches
        for tick in ticks:
            for task in tick:
                i, m = task.stage, task.microbatch
                program = rt.programs[i]
                if not task.backward:
                    feeds = {name: rt._feed(name, i, m, data, produced) for name in program.inputs}
                    floats = {k: v for k, v in feeds.items() if self._float_input(k)}
                    others = {k: v for k, v in feeds.items() if k not in floats}
                    label = None
                    if i == self.loss_stage and labels is not None:
                        label = rt._place(rt._microbatch(labels, m), "labels", i)
                    diff, rest, vjp = self.forward_vjp[i](rt.params[i], floats, others, label)
                    for name, value in [*diff.items(), *rest.items()]:
                        produced[(name, m)] = value
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
                    cotangents.setdefault((name, m), []).append(value)
        self._apply(grads)
        return float(np.mean([float(to_host(loss)) for loss in losses]))

    def _apply(self, grads: list[Tree | None]) -> None:
        rt = self.runtime
        for i, program in enumerate(rt.programs):
            stage_grads = grads[i] or {}
            for name in program.parameters:
                owner = rt.owner[name]
                if owner != i:  # a shared parameter: its gradient goes to the owner
                    owned = grads[owner]
                    assert owned is not None
                    moved = rt._place(stage_grads[name], name, owner)
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
                    rt.params[i][name] = rt._place(rt.params[owner][name], name, i)


def to_host(value: Array) -> np.ndarray:
    """A (possibly multi-process) array as one NumPy array on this process."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(jax.device_get(value))


def _join(parts: list[np.ndarray], microbatch_size: int) -> np.ndarray:
    if all(part.ndim and part.shape[0] == microbatch_size for part in parts):
        return np.concatenate(parts, axis=0)
    return np.stack(parts)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    jax.block_until_ready(result)
    return result, time.perf_counter() - started
