"""The plan bound to the model: per stage, the nodes it runs and the tensors it exchanges.

A plan names ops as the planner does (`onnx_model`'s naming rule); the CLI passes the planner's
own view of the model (`ModelFacts`: its fingerprint at the plan's batch size and each op's
outputs), and the executor checks the plan against it before running anything:

- the fingerprint must be the plan's (same structure and shapes);
- every op a stage lists must be an op of the model, in one stage only;
- every op of the model must be in a stage, unless its outputs are static (the planner and the
  executor both fold constants and shape arithmetic);
- stages are contiguous runs in topological order: a stage reads only tensors of the stages
  before it;
- every spec's rank is its tensor's rank, and each stage's devices fill its logical mesh.

Tensors crossing stages are derived here (the plan's `transfers` may be empty): a stage's inputs
are the graph inputs and earlier stages' tensors it reads; its outputs are the tensors later
stages read and the graph outputs it produces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from executor.graph_fn import Analysis
from executor.onnx_model import Node, OnnxModel
from plans.errors import InputError
from plans.plan import RECOMPUTE_FULL, RECOMPUTE_SELECTIVE, Plan, Stage
from plans.specs import ShardingSpec


@dataclass(frozen=True)
class ModelFacts:
    """What the planner sees in the model: passed in by the CLI, which may import the planner."""

    fingerprint: str | None  # at the plan's batch size; None: not checked
    op_outputs: Mapping[str, tuple[str, ...]]  # planner op name -> output tensor names
    # The data inputs whose dimension 0 follows the batch (split into microbatches); the others
    # (a weight matrix fed as an input, a broadcast operand) keep their shape. None: all of them.
    batch_inputs: frozenset[str] | None = None


@dataclass(frozen=True)
class StageProgram:
    index: int
    nodes: tuple[Node, ...]  # to run, in model order
    parameters: tuple[str, ...]  # trainable weights the nodes read
    inputs: tuple[str, ...]  # graph inputs and earlier stages' tensors the nodes read
    outputs: tuple[str, ...]  # tensors later stages read, and graph outputs made here
    specs: Mapping[str, ShardingSpec] = field(default_factory=dict)  # tensor -> the plan's spec
    logical_mesh: tuple[int, int] = (1, 1)
    devices: tuple[tuple[int, int], ...] = ((0, 0),)
    # The plan's recomputation: each layer's nodes (nodes[start:end] for consecutive `layer_ends`)
    # keep only their inputs and rebuild their activations in the backward.
    recompute: bool = False
    layer_ends: tuple[int, ...] = ()
    # Selective recomputation: the tensors the plan's recomputed ops write; the backward
    # rebuilds them by rerunning those ops instead of saving them.
    rebuilt: frozenset[str] = frozenset()


def facts_from_model(model: OnnxModel) -> ModelFacts:
    """The executor's own view, for callers without the planner: exact when every node is named
    (exporters name them all), and without a fingerprint check."""
    return ModelFacts(
        fingerprint=None,
        op_outputs=MappingProxyType(
            {node.name: node.outputs for node in model.nodes if node.op_type != "Constant"}
        ),
    )


def bind_plan(
    plan: Plan, model: OnnxModel, analysis: Analysis, facts: ModelFacts, plan_source: str
) -> tuple[StageProgram, ...]:
    """Check the plan against the model and cut the model into stage programs."""
    if facts.fingerprint is not None and facts.fingerprint != plan.model.fingerprint:
        raise InputError(
            plan_source,
            "model.fingerprint",
            f"the fingerprint of {model.source} at batch {plan.settings.batch_size} "
            f"({facts.fingerprint}); the plan was made for another model",
            plan.model.fingerprint,
        )
    if not plan.stages:
        raise InputError(plan_source, "stages", "at least one stage", "none")
    producer = {name: node for node in model.nodes for name in node.outputs if name}
    stage_of_node: dict[int, int] = {}
    stage_of_op: dict[str, int] = {}
    layer_of_op = {op: k for k, layer in enumerate(plan.layers) for op in layer.ops}
    layer_of_node: dict[int, int] = {}
    for stage in plan.stages:
        for op in stage.ops:
            where = f"stages[{stage.index}].ops"
            if op not in facts.op_outputs:
                raise InputError(
                    plan_source, where, f"ops of {model.source}", f"{op!r}, which it does not have"
                )
            if op in stage_of_op:
                raise InputError(
                    plan_source,
                    where,
                    "each op in one stage",
                    f"{op!r} in stages {stage_of_op[op]} and {stage.index}",
                )
            stage_of_op[op] = stage.index
            outputs = [name for name in facts.op_outputs[op] if name]
            node = producer.get(outputs[0]) if outputs else None
            if node is None:
                raise InputError(
                    plan_source, where, f"ops of {model.source}", f"{op!r}, which it does not have"
                )
            stage_of_node[node.index] = stage.index
            if op in layer_of_op:
                layer_of_node[node.index] = layer_of_op[op]
    static = analysis.static
    _place_weight_ops(model, static, stage_of_node, plan_source)
    programs = []
    made_in: dict[str, int] = {}  # tensor -> stage that computes it
    graph_inputs = {value.name for value in model.inputs}
    for stage in plan.stages:
        nodes = []
        for node in model.nodes:
            if all(name in static for name in node.outputs if name):
                continue  # a constant or static shape arithmetic: embedded where read
            if node.index not in stage_of_node:
                raise InputError(
                    plan_source,
                    "stages",
                    f"every op of {model.source} in a stage",
                    f"no stage for {node.name!r}",
                )
            if stage_of_node[node.index] == stage.index:
                nodes.append(node)
        for node in nodes:
            for name in node.outputs:
                if name:
                    made_in[name] = stage.index
        programs.append((stage, nodes))
    for stage, nodes in programs:
        _check_order(stage.index, nodes, made_in, plan_source)
    result = []
    for stage, nodes in programs:
        produced = {name for node in nodes for name in node.outputs if name}
        read = [name for node in nodes for name in node.inputs if name]
        inputs = [
            name
            for name in dict.fromkeys(read)
            if name not in produced
            and name not in static
            and name not in model.parameters
            and (name in graph_inputs or name in made_in)
        ]
        later = {
            name
            for other, other_nodes in programs
            if other.index > stage.index
            for node in other_nodes
            for name in node.inputs
        }
        outputs = [
            name
            for node in nodes
            for name in node.outputs
            if name and (name in later or name in model.outputs)
        ]
        mesh = (int(stage.logical_mesh[0]), int(stage.logical_mesh[1]))
        specs = _checked_specs(
            stage.index, stage.shardings, mesh, analysis, plan_source, model.source
        )
        _check_devices(plan, stage.index, plan_source)
        result.append(
            StageProgram(
                index=stage.index,
                nodes=tuple(nodes),
                parameters=tuple(name for name in dict.fromkeys(read) if name in model.parameters),
                inputs=tuple(inputs),
                outputs=tuple(dict.fromkeys(outputs)),
                specs=MappingProxyType(specs),
                logical_mesh=(int(stage.logical_mesh[0]), int(stage.logical_mesh[1])),
                devices=tuple((int(h), int(g)) for h, g in stage.devices),
                recompute=stage.recompute == RECOMPUTE_FULL,
                layer_ends=_layer_ends(nodes, layer_of_node),
                rebuilt=_rebuilt(stage, facts, plan_source),
            )
        )
    for name in model.outputs:
        if name not in made_in and name not in static:
            raise InputError(plan_source, "stages", f"a stage that makes output {name!r}", "none")
    return tuple(result)


def _place_weight_ops(
    model: OnnxModel, static: Mapping[str, object], stage_of_node: dict[int, int], plan_source: str
) -> None:
    """Nodes in no stage that compute only on weights and constants (the planner folds small
    embedded weights, e.g. the transpose of a tied LM head, and lists no op for them) run in
    the first stage that reads their outputs; any other node without a stage is an error."""
    parameters = model.parameters
    floating = [
        node
        for node in model.nodes
        if node.index not in stage_of_node
        and not all(name in static for name in node.outputs if name)
    ]
    floating_outputs = {name for node in floating for name in node.outputs}
    for node in floating:
        if not all(
            not name or name in static or name in parameters or name in floating_outputs
            for name in node.inputs
        ):
            raise InputError(
                plan_source,
                "stages",
                f"every op of {model.source} in a stage",
                f"no stage for {node.name!r}",
            )
    for node in reversed(floating):
        outputs = set(node.outputs)
        readers = [
            stage_of_node[other.index]
            for other in model.nodes
            if other.index in stage_of_node and outputs.intersection(other.inputs)
        ]
        if readers:
            stage_of_node[node.index] = min(readers)
        elif outputs.intersection(model.outputs):
            stage_of_node[node.index] = max(stage_of_node.values(), default=0)


def _check_order(
    index: int, nodes: list[Node], made_in: Mapping[str, int], plan_source: str
) -> None:
    for node in nodes:
        for name in node.inputs:
            if name in made_in and made_in[name] > index:
                raise InputError(
                    plan_source,
                    f"stages[{index}].ops",
                    "stages that are contiguous runs of ops in topological order",
                    f"{node.name!r} reading {name!r} of the later stage {made_in[name]}",
                )


def _checked_specs(
    index: int,
    specs: Mapping[str, str],
    logical_mesh: tuple[int, int],
    analysis: Analysis,
    plan_source: str,
    model_source: str,
) -> dict[str, ShardingSpec]:
    """The stage's specs, parsed, once each names a tensor of the model and divides it."""
    parsed: dict[str, ShardingSpec] = {}
    for name, text in specs.items():
        where = f"stages[{index}].shardings.{name}"
        try:
            spec = ShardingSpec.parse(text)
        except ValueError as error:
            raise InputError(plan_source, where, "a spec such as 'S0R'", repr(text)) from error
        parsed[name] = spec
        if name in analysis.static:
            continue
        shape = analysis.shapes.get(name)
        if shape is None:
            raise InputError(
                plan_source, where, f"a tensor of {model_source}", f"{name!r}, which it lacks"
            )
        if spec.rank != len(shape.shape):
            raise InputError(
                plan_source,
                where,
                f"a spec of rank {len(shape.shape)} (the tensor is {list(shape.shape)})",
                repr(text),
            )
        if not spec.divides(tuple(shape.shape), logical_mesh):
            raise InputError(
                plan_source,
                where,
                f"a spec that divides the tensor's microbatch shape {list(shape.shape)} on the "
                f"logical mesh {logical_mesh[0]}x{logical_mesh[1]}",
                repr(text),
            )
    return parsed


def _rebuilt(stage: Stage, facts: ModelFacts, plan_source: str) -> frozenset[str]:
    """The tensors a selectively recomputing stage's recomputed ops write."""
    if stage.recompute != RECOMPUTE_SELECTIVE:
        return frozenset()
    own = set(stage.ops)
    found: set[str] = set()
    for op in stage.recomputed_ops:
        if op not in own or op not in facts.op_outputs:
            raise InputError(
                plan_source, f"stages[{stage.index}].recomputed_ops",
                f"ops of stage {stage.index}", repr(op),
            )  # fmt: skip
        found.update(name for name in facts.op_outputs[op] if name)
    return frozenset(found)


def _layer_ends(nodes: list[Node], layer_of_node: dict[int, int]) -> tuple[int, ...]:
    """Where each of the plan's layers ends among the stage's nodes (a node of no layer joins
    the layer before it)."""
    ends: list[int] = []
    current: int | None = None
    for position, node in enumerate(nodes):
        layer = layer_of_node.get(node.index, current)
        if layer != current and position:
            ends.append(position)
        current = layer
    return (*ends, len(nodes)) if nodes else ()


def _check_devices(plan: Plan, index: int, plan_source: str) -> None:
    stage = plan.stages[index]
    n0, n1 = stage.logical_mesh
    if len(stage.devices) != n0 * n1:
        raise InputError(
            plan_source,
            f"stages[{index}].devices",
            f"{n0 * n1} devices for the logical mesh {n0}x{n1}",
            str(len(stage.devices)),
        )
    # With virtual stages, stage k runs on the devices of stage k mod (S / virtual_stages).
    groups = len(plan.stages) // plan.settings.virtual_stages
    if index >= groups:
        if stage.devices != plan.stages[index % groups].devices:
            raise InputError(
                plan_source,
                f"stages[{index}].devices",
                f"the devices of stage {index % groups} (virtual_stages "
                f"{plan.settings.virtual_stages})",
                "others",
            )
        return
    seen = {tuple(d) for other in plan.stages[:index] for d in other.devices}
    for device in stage.devices:
        if tuple(device) in seen:
            raise InputError(
                plan_source,
                f"stages[{index}].devices",
                "devices that no other stage uses",
                f"device {tuple(device)} of an earlier stage",
            )
