"""A plan written into its ONNX model as multi-device annotations, and read back.

`annotated_model` returns the model with, added and nothing else changed, the configurations
and per-node annotations of `plans/onnx_sharding.py` (the mapping) in ONNX's IR version 11
fields: `ModelProto.configuration` and `NodeProto.device_configurations`. Weights stay as they
were, embedded or as external data references (relative to the model's folder: write the
annotated model beside the original, or copy the data with it). A model with local functions
is written inlined, the graph whose nodes the plan names.

`model_annotations` reads a model's annotations back for `alpa-plan check`. Nodes are matched
to the plan's ops by the tensors they write (every op writes a tensor no other node writes),
else by the op naming rule (`plans/naming.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from planner.graph import Graph, split_batch
from planner.onnx_import import read_model
from planner.ops import notation_of
from plans.errors import InputError
from plans.onnx_sharding import (
    DeviceSharding,
    LabelledTensors,
    ModelAnnotations,
    NodeAnnotation,
    plan_annotations,
)
from plans.plan import Plan

# ONNX's IR version that added the multi-device fields (onnx 1.18).
MULTI_DEVICE_IR_VERSION = 11


def labelled_tensors(graph: Graph, microbatches: int) -> dict[str, LabelledTensors]:
    """Per op, the inputs and outputs its strategy name gives specs for (those its notation
    labels), at the microbatch shapes the planner saw."""
    tensors = split_batch(graph.tensors, microbatches)
    found = {}
    for op in graph.ops:
        notation = notation_of(op, tensors)
        inputs = tuple(
            name
            for name, labels in zip(op.inputs, notation.inputs, strict=False)
            if name and labels is not None
        )
        outputs = tuple(
            name
            for name, labels in zip(op.outputs, notation.outputs, strict=False)
            if name and labels is not None
        )
        found[op.name] = LabelledTensors(inputs, outputs)
    return found


def tensor_ranks(graph: Graph) -> dict[str, int]:
    return {name: len(tensor.shape) for name, tensor in graph.tensors.items()}


def expected_annotations(plan: Plan, graph: Graph) -> ModelAnnotations:
    """The annotations that say `plan` for the model `graph` was imported from."""
    labelled = labelled_tensors(graph, plan.settings.microbatches)
    return plan_annotations(plan, labelled, tensor_ranks(graph))


@dataclass(frozen=True)
class AnnotatedModel:
    data: bytes  # the serialised ModelProto
    external_data: tuple[str, ...]  # the weight files it references, relative to its folder


def annotated_model(path: str | Path, plan: Plan, graph: Graph) -> AnnotatedModel:
    """The model at `path` with `plan` written in (module docstring); `graph` is the model as
    `load_onnx` imported it, which the plan matches."""
    model = read_model(Path(path))
    annotations = expected_annotations(plan, graph)
    del model.configuration[:]
    for name, devices in annotations.configurations:
        model.configuration.append(
            onnx.DeviceConfigurationProto(name=name, num_devices=len(devices), device=devices)
        )
    for node, op in zip(model.graph.node, _node_ops(model.graph.node, graph), strict=True):
        del node.device_configurations[:]
        if op is None or op not in annotations.nodes:
            continue
        node.device_configurations.append(_node_proto(annotations.nodes[op]))
    model.ir_version = max(model.ir_version, MULTI_DEVICE_IR_VERSION)
    locations = {
        entry.value
        for init in model.graph.initializer
        for entry in init.external_data
        if entry.key == "location"
    }
    return AnnotatedModel(model.SerializeToString(deterministic=True), tuple(sorted(locations)))


def model_annotations(path: str | Path, graph: Graph) -> ModelAnnotations:
    """The multi-device annotations of the model at `path` (empty when it has none); `graph` is
    the model as imported, for the node names. A node with more than one configuration: its
    first is read."""
    source = str(path)
    model = read_model(Path(path))
    configurations = tuple((proto.name, tuple(proto.device)) for proto in model.configuration)
    nodes: dict[str, NodeAnnotation] = {}
    for index, (node, op) in enumerate(
        zip(model.graph.node, _node_ops(model.graph.node, graph), strict=True)
    ):
        if op is None or not node.device_configurations:
            continue
        proto = node.device_configurations[0]
        where = f"graph.node[{index}].device_configurations[0]"
        nodes[op] = NodeAnnotation(
            configuration=proto.configuration_id,
            stage=proto.pipeline_stage if proto.HasField("pipeline_stage") else None,
            specs=tuple(
                (spec.tensor_name, _device_sharding(spec, source, f"{where}.sharding_spec[{k}]"))
                for k, spec in enumerate(proto.sharding_spec)
            ),
        )
    return ModelAnnotations(configurations, nodes)


def _node_ops(nodes: Sequence[onnx.NodeProto], graph: Graph) -> list[str | None]:
    """The plan's op name of each node (None: folded away or a Constant)."""
    writer = {name: op.name for op in graph.ops for name in op.outputs if name}
    names = {op.name for op in graph.ops}
    taken: set[str] = set()
    found: list[str | None] = []
    for node in nodes:
        op = next((writer[name] for name in node.output if name in writer), None)
        if op is None and node.name in names and node.name not in taken:
            op = node.name
        if op is not None:
            taken.add(op)
        found.append(op)
    return found


def _node_proto(annotation: NodeAnnotation) -> onnx.NodeDeviceConfigurationProto:
    proto = onnx.NodeDeviceConfigurationProto(configuration_id=annotation.configuration)
    if annotation.stage is not None:
        proto.pipeline_stage = annotation.stage
    for tensor, sharding in annotation.specs:
        spec = proto.sharding_spec.add(tensor_name=tensor, device=sharding.devices)
        for key, devices in sharding.groups:
            spec.index_to_device_group_map.add(key=key, value=devices)
        for axis, shards in sharding.sharded_dims:
            dim = spec.sharded_dim.add(axis=axis)
            dim.simple_sharding.add(num_shards=shards)
    return proto


def _device_sharding(spec: onnx.ShardingSpecProto, source: str, where: str) -> DeviceSharding:
    dims = []
    for k, dim in enumerate(spec.sharded_dim):
        shards = 1
        for simple in dim.simple_sharding:
            shards *= simple.num_shards
        if shards < 1:
            raise InputError(
                source, f"{where}.sharded_dim[{k}]", "a positive num_shards", str(shards)
            )
        dims.append((int(dim.axis), shards))
    groups: Mapping[int, tuple[int, ...]] = {
        int(entry.key): tuple(int(v) for v in entry.value)
        for entry in spec.index_to_device_group_map
    }
    return DeviceSharding(
        tuple(dims), tuple(int(d) for d in spec.device), tuple(sorted(groups.items()))
    )
