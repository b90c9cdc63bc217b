"""A plan's placement in ONNX's multi-device form (IR version 11), as plain values.

ONNX annotates a node (onnx's docs/proposals/ShardingFormalism.md and ONNXMultiDeviceProposal.md)
with a `NodeDeviceConfigurationProto`: the `DeviceConfigurationProto` it runs on, its
`pipeline_stage`, and per input or output a `ShardingSpecProto`: the tensor's sharded axes with
their `num_shards`, and `device`, one entry per shard in row-major order of the sharded axes as
listed (the first is the outermost), each a device index of the configuration or, for a shard
held by several devices, a negative key into `index_to_device_group_map`.

How a plan maps onto it (docs/ONNX_SHARDING.md says the same with examples):

- one configuration per device group of the pipeline, named `mesh{k}` (stage k's devices;
  with interleaving, stage s runs on group s mod the number of groups), its devices named
  `host{h}/gpu{g}` in the order the plan lists them: row-major over the stage's logical mesh
  (n0, n1), so device index `i * n1 + j` is logical position (i, j);
- per op, its stage's configuration and index, one spec per labelled input (the layout the
  op's strategy reads it in) and per labelled output (the layout it writes);
- a tensor dimension split over mesh axes A is cut into prod(n_a for a in A) shards; device
  (i, j) holds shard number `c_A` along it, its coordinates along A with axis 0 major (`S01`:
  i * n1 + j); a shard that several devices hold (the axes that split nothing replicate) is a
  device group. Axes of size 1 split nothing and are not written: `S0R` on a 1x8 mesh reads
  back as `RR`.

This module holds the mapping both ways and the comparison of a model's annotations with a
plan; reading and writing the protobuf is `planner/onnx_export.py`'s (the only place besides
the importer that imports onnx).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from plans.check import Problem
from plans.plan import Plan, Stage
from plans.specs import ShardingSpec, parse_strategy_name, split_ways

_DEVICE_NAME = re.compile(r"host(\d+)/gpu(\d+)")


@dataclass(frozen=True)
class DeviceSharding:
    """One ShardingSpecProto's content: which devices hold which piece of a tensor."""

    sharded_dims: tuple[tuple[int, int], ...]  # (tensor axis, num_shards), as listed
    devices: tuple[int, ...]  # per shard: a device index, or a negative key into `groups`
    groups: tuple[tuple[int, tuple[int, ...]], ...] = ()  # key -> device indices

    def holders(self) -> tuple[frozenset[int], ...] | None:
        """Per shard, the devices that hold it; None when a key names no group."""
        groups = dict(self.groups)
        held = []
        for device in self.devices:
            if device >= 0:
                held.append(frozenset({device}))
            elif device in groups:
                held.append(frozenset(groups[device]))
            else:
                return None
        return tuple(held)

    def same_layout(self, other: DeviceSharding, rank: int) -> bool:
        """Whether both put the same pieces on the same devices (keys, group order, negative
        axes and axes cut into one shard aside)."""
        return _layout(self, rank) == _layout(other, rank)


def _layout(
    sharding: DeviceSharding, rank: int
) -> tuple[tuple[tuple[int, int], ...], tuple[frozenset[int], ...] | None]:
    dims = tuple((axis % rank if rank else axis, n) for axis, n in sharding.sharded_dims if n != 1)
    return dims, sharding.holders()


def effective_spec(spec: ShardingSpec, mesh_shape: tuple[int, int]) -> ShardingSpec:
    """`spec` without the mesh axes of size 1, which split nothing."""
    return spec.without_axes({axis for axis in (0, 1) if mesh_shape[axis] == 1})


def device_sharding(spec: ShardingSpec, mesh_shape: tuple[int, int]) -> DeviceSharding:
    """The ONNX form of `spec` on a logical mesh (module docstring)."""
    spec = effective_spec(spec, mesh_shape)
    dims = [(dim, split_ways(axes, mesh_shape)) for dim, axes in enumerate(spec.dims) if axes]
    rows, columns = mesh_shape
    holders: dict[tuple[int, ...], list[int]] = {}
    for i, j in itertools.product(range(rows), range(columns)):
        shard = tuple(_coordinate(spec.dims[dim], (i, j), mesh_shape) for dim, _ in dims)
        holders.setdefault(shard, []).append(i * columns + j)
    devices: list[int] = []
    groups: list[tuple[int, tuple[int, ...]]] = []
    for shard in itertools.product(*(range(ways) for _, ways in dims)):
        held = holders[shard]
        if len(held) == 1:
            devices.append(held[0])
        else:
            key = -(len(groups) + 1)
            groups.append((key, tuple(held)))
            devices.append(key)
    return DeviceSharding(tuple(dims), tuple(devices), tuple(groups))


def _coordinate(axes: tuple[int, ...], position: tuple[int, int], mesh: tuple[int, int]) -> int:
    index = 0
    for axis in axes:
        index = index * mesh[axis] + position[axis]
    return index


def spec_of(
    sharding: DeviceSharding, rank: int, mesh_shape: tuple[int, int]
) -> ShardingSpec | None:
    """The plan spec (without size-1 axes) whose ONNX form is `sharding`, or None when no spec
    of this mesh lays the tensor out that way."""
    rows, columns = mesh_shape
    for first in [None, *range(rank)] if rows > 1 else [None]:
        for second in [None, *range(rank)] if columns > 1 else [None]:
            dims = [
                tuple(axis for axis, dim in ((0, first), (1, second)) if dim == d)
                for d in range(rank)
            ]
            candidate = ShardingSpec(tuple(dims))
            if device_sharding(candidate, mesh_shape).same_layout(sharding, rank):
                return candidate
    return None


def device_name(device: tuple[int, int]) -> str:
    host, gpu = device
    return f"host{host}/gpu{gpu}"


def parse_device_name(name: str) -> tuple[int, int] | None:
    match = _DEVICE_NAME.fullmatch(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class NodeAnnotation:
    """What a node carries: its configuration, pipeline stage and tensor layouts."""

    configuration: str
    stage: int | None
    specs: tuple[tuple[str, DeviceSharding], ...]  # (tensor, layout), inputs then outputs


@dataclass(frozen=True)
class ModelAnnotations:
    """A model's multi-device annotations: its configurations (name -> device names) and, by
    op name, each annotated node's."""

    configurations: tuple[tuple[str, tuple[str, ...]], ...]
    nodes: Mapping[str, NodeAnnotation]


@dataclass(frozen=True)
class LabelledTensors:
    """An op's tensors that its strategy name gives specs for, in the name's order: its
    present inputs and outputs that the op's notation labels (`planner/onnx_export.py`)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def configuration_name(group: int) -> str:
    return f"mesh{group}"


def _groups(plan: Plan) -> int:
    return max(1, len(plan.stages) // plan.settings.virtual_stages)


def plan_annotations(
    plan: Plan, labelled: Mapping[str, LabelledTensors], ranks: Mapping[str, int]
) -> ModelAnnotations:
    """The annotations that say `plan` (module docstring); `ranks`: each tensor's rank."""
    groups = _groups(plan)
    configurations = tuple(
        (configuration_name(k), tuple(map(device_name, plan.stages[k].devices)))
        for k in range(groups)
    )
    nodes: dict[str, NodeAnnotation] = {}
    for stage in plan.stages:
        for op in stage.ops:
            specs = _op_specs(stage, op, labelled.get(op, LabelledTensors((), ())), ranks)
            nodes[op] = NodeAnnotation(configuration_name(stage.index % groups), stage.index, specs)
    return ModelAnnotations(configurations, nodes)


def _op_specs(
    stage: Stage, op: str, labelled: LabelledTensors, ranks: Mapping[str, int]
) -> tuple[tuple[str, DeviceSharding], ...]:
    name = stage.strategies.get(op)
    if name is None:
        return ()
    out_specs, in_specs = parse_strategy_name(name)
    found: dict[str, DeviceSharding] = {}
    # A rank-0 spec may be missing from the name (a side of only scalars reads as '-').
    pairs = [
        *zip(labelled.inputs, in_specs, strict=False),
        *zip(labelled.outputs, out_specs, strict=False),
    ]
    for tensor, spec in pairs:
        if tensor not in found and spec.rank == ranks.get(tensor):
            found[tensor] = device_sharding(spec, stage.logical_mesh)
    return tuple(found.items())


def annotation_problems(
    plan: Plan, expected: ModelAnnotations, found: ModelAnnotations, ranks: Mapping[str, int]
) -> tuple[Problem, ...]:
    """Every way the annotations `found` in a model differ from those that say `plan`."""
    return tuple(
        [
            *_configuration_problems(expected, found),
            *_node_problems(plan, expected, found, ranks),
        ]
    )


def _configuration_problems(
    expected: ModelAnnotations, found: ModelAnnotations
) -> Iterator[Problem]:
    present = dict(found.configurations)
    for name, devices in expected.configurations:
        if name not in present:
            yield Problem("annotation", f"configuration {name}: not in the model")
        elif present[name] != devices:
            yield Problem(
                "annotation",
                f"configuration {name}: devices {_listed(present[name])}, the plan's "
                f"{_listed(devices)}",
            )
    wanted = dict(expected.configurations)
    for name, _ in found.configurations:
        if name not in wanted:
            yield Problem("annotation", f"configuration {name}: not one of the plan's")


def _node_problems(
    plan: Plan, expected: ModelAnnotations, found: ModelAnnotations, ranks: Mapping[str, int]
) -> Iterator[Problem]:
    meshes = {stage.index: stage.logical_mesh for stage in plan.stages}
    for op, want in expected.nodes.items():
        have = found.nodes.get(op)
        if have is None:
            yield Problem("annotation", f"op {op}: not annotated")
            continue
        if (have.configuration, have.stage) != (want.configuration, want.stage):
            yield Problem(
                "annotation",
                f"op {op}: annotated {have.configuration} stage {have.stage}, the plan's "
                f"{want.configuration} stage {want.stage}",
            )
            continue
        mesh = meshes[want.stage] if want.stage is not None else (1, 1)
        present = dict(have.specs)
        for tensor, layout in want.specs:
            rank = ranks.get(tensor, 0)
            other = present.get(tensor)
            if other is None:
                yield Problem("annotation", f"op {op}: tensor {tensor}: no sharding spec")
            elif not other.same_layout(layout, rank):
                yield Problem(
                    "annotation",
                    f"op {op}: tensor {tensor}: annotated {_described(other, rank, mesh)}, "
                    f"the plan's {_described(layout, rank, mesh)}",
                )
    for op in found.nodes:
        if op not in expected.nodes:
            yield Problem("annotation", f"node {op}: annotated but not an op of the plan")


def _described(sharding: DeviceSharding, rank: int, mesh: tuple[int, int]) -> str:
    spec = spec_of(sharding, rank, mesh)
    if spec is None:
        return f"a layout no spec of the {mesh[0]}x{mesh[1]} mesh gives"
    return str(spec) or "a scalar"


def _listed(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"
