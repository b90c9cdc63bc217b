"""Is a plan consistent with itself, its model and its cluster? (`alpa-plan check`)

`check_plan` is pure: it takes the plan and, optionally, plain facts about the model and the
cluster (the CLI loads them; `plans` reads no ONNX or YAML) and returns one `Problem` per thing
that is wrong, in a stable order. An empty result means the plan passed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from plans.plan import RECOMPUTE_SELECTIVE, Plan
from plans.specs import ShardingSpec

_LISTED_DEVICES = 8  # unused devices named in the one line that reports them


@dataclass(frozen=True)
class ModelFacts:
    """What `check` needs to know about the model, as plain values."""

    fingerprint: str
    op_names: tuple[str, ...]
    # Shapes as the stages see them: of one microbatch (the batch dimension divided).
    tensor_shapes: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class ClusterFacts:
    hosts: int
    gpus_per_host: int
    gpu_memory_bytes: int

    @staticmethod
    def of_plan(plan: Plan) -> ClusterFacts:
        """The cluster as the plan recorded it."""
        return ClusterFacts(
            plan.cluster.hosts, plan.cluster.gpus_per_host, plan.cluster.gpu.memory_bytes
        )


@dataclass(frozen=True)
class Problem:
    kind: str  # "stages", "ops", "devices", "mesh", "spec", "memory" or "fingerprint"
    message: str

    def __str__(self) -> str:
        return self.message


def check_plan(
    plan: Plan, model: ModelFacts | None = None, cluster: ClusterFacts | None = None
) -> tuple[Problem, ...]:
    """Every problem found, in a stable order. Without `cluster`, the plan's own record of the
    cluster is used; without `model`, the checks that need the model are skipped."""
    facts = cluster or ClusterFacts.of_plan(plan)
    problems = [
        *_stage_references(plan),
        *_op_placement(plan, model),
        *_device_placement(plan, facts),
        *_meshes(plan),
        *_memory(plan, facts),
    ]
    if model is not None:
        problems += [*_fingerprint(plan, model), *_specs(plan, model)]
    return tuple(problems)


def _stage_references(plan: Plan) -> Iterator[Problem]:
    for position, stage in enumerate(plan.stages):
        if stage.index != position:
            yield Problem("stages", f"stages[{position}] has index {stage.index}")
    for stage in plan.stages:
        if stage.recomputed_ops and stage.recompute != RECOMPUTE_SELECTIVE:
            yield Problem(
                "recompute",
                f"stage {stage.index} lists recomputed_ops but recomputes {stage.recompute}",
            )
        own = set(stage.ops)
        for op in stage.recomputed_ops:
            if op not in own:
                yield Problem("recompute", f"stage {stage.index} recomputes op {op}: not its own")
    for position, transfer in enumerate(plan.transfers):
        for end in (transfer.source_stage, transfer.destination_stage):
            if not 0 <= end < len(plan.stages):
                yield Problem("stages", f"transfers[{position}] refers to stage {end}: none such")


def _op_placement(plan: Plan, model: ModelFacts | None) -> Iterator[Problem]:
    stages_of: dict[str, list[int]] = {}
    for stage in plan.stages:
        for op in stage.ops:
            stages_of.setdefault(op, []).append(stage.index)
    for op, stages in stages_of.items():
        if len(stages) > 1:
            yield Problem("ops", f"op {op} is in more than one stage: {_joined(stages)}")
    if model is None:
        return
    known = set(model.op_names)
    for op in model.op_names:
        if op not in stages_of:
            yield Problem("ops", f"op {op} of the model is in no stage")
    for op, stages in stages_of.items():
        if op not in known:
            yield Problem("ops", f"op {op} in stage {stages[0]} is not in the model")


def _device_placement(plan: Plan, cluster: ClusterFacts) -> Iterator[Problem]:
    owners: dict[tuple[int, int], list[int]] = {}
    for stage in plan.stages:
        for device in stage.devices:
            owners.setdefault(device, []).append(stage.index)
            host, gpu = device
            if not (0 <= host < cluster.hosts and 0 <= gpu < cluster.gpus_per_host):
                yield Problem(
                    "devices",
                    f"stage {stage.index}: device {_device(device)} is outside the cluster "
                    f"({cluster.hosts} hosts x {cluster.gpus_per_host} GPUs)",
                )
    virtual = plan.settings.virtual_stages
    groups = max(1, len(plan.stages) // virtual)
    for device, stages in owners.items():
        group = list(range(stages[0] % groups, len(plan.stages), groups))
        if len(stages) > 1 and (virtual == 1 or stages != group):
            yield Problem(
                "devices", f"device {_device(device)} is in more than one stage: {_joined(stages)}"
            )
    for stage in plan.stages[groups:]:
        if stage.devices != plan.stages[stage.index % groups].devices:
            yield Problem(
                "devices",
                f"stage {stage.index}: expected the devices of stage {stage.index % groups} "
                f"(virtual_stages {virtual}: stage k runs on the devices of stage k mod "
                f"{groups}), found others",
            )
    every = [(h, g) for h in range(cluster.hosts) for g in range(cluster.gpus_per_host)]
    unused = [device for device in every if device not in owners]
    if unused:
        named = ", ".join(map(_device, unused[:_LISTED_DEVICES]))
        more = ", ..." if len(unused) > _LISTED_DEVICES else ""
        yield Problem(
            "devices", f"{len(unused)} of {len(every)} devices are in no stage: {named}{more}"
        )


def _meshes(plan: Plan) -> Iterator[Problem]:
    for stage in plan.stages:
        rows, columns = stage.logical_mesh
        if rows * columns != len(stage.devices):
            yield Problem(
                "mesh",
                f"stage {stage.index}: logical mesh {rows}x{columns} has {rows * columns} "
                f"devices, the stage has {len(stage.devices)}",
            )


def _memory(plan: Plan, cluster: ClusterFacts) -> Iterator[Problem]:
    for stage in plan.stages:
        if stage.memory.peak_bytes > cluster.gpu_memory_bytes:
            yield Problem(
                "memory",
                f"stage {stage.index}: peak memory {_gib(stage.memory.peak_bytes)} per GPU "
                f"exceeds the GPU's {_gib(cluster.gpu_memory_bytes)}",
            )


def _fingerprint(plan: Plan, model: ModelFacts) -> Iterator[Problem]:
    if model.fingerprint != plan.model.fingerprint:
        yield Problem(
            "fingerprint",
            f"the model's fingerprint {model.fingerprint} is not the plan's "
            f"{plan.model.fingerprint} (another model, or another batch size)",
        )


def _specs(plan: Plan, model: ModelFacts) -> Iterator[Problem]:
    """Every spec names a model tensor of its rank and splits only dimensions that divide."""
    for stage in plan.stages:
        for tensor, spec in stage.shardings.items():
            problem = _spec_problem(tensor, spec, stage.logical_mesh, model)
            if problem:
                yield Problem("spec", f"stage {stage.index}: tensor {tensor}: {problem}")
    meshes = {stage.index: stage.logical_mesh for stage in plan.stages}
    for position, transfer in enumerate(plan.transfers):
        ends = (
            (transfer.source_stage, transfer.source_spec),
            (transfer.destination_stage, transfer.destination_spec),
        )
        for stage_index, spec in ends:
            if stage_index in meshes:
                problem = _spec_problem(transfer.tensor, spec, meshes[stage_index], model)
                if problem:
                    yield Problem("spec", f"transfers[{position}]: {transfer.tensor}: {problem}")


def _spec_problem(
    tensor: str, spec: str, logical_mesh: tuple[int, int], model: ModelFacts
) -> str | None:
    shape = model.tensor_shapes.get(tensor)
    if shape is None:
        return "not in the model"
    try:
        parsed = ShardingSpec.parse(spec)
    except ValueError as error:
        return str(error)
    if parsed.rank != len(shape):
        return f"spec {spec} has {parsed.rank} dimensions, the tensor {len(shape)}"
    for dim, extent in enumerate(shape):
        ways = parsed.shard_count(dim, logical_mesh)
        if extent % ways:
            mesh = f"{logical_mesh[0]}x{logical_mesh[1]}"
            return f"dimension {dim} of size {extent} does not split {ways} ways ({spec} on {mesh})"
    return None


def _joined(stages: list[int]) -> str:
    return ", ".join(map(str, stages))


def _device(device: tuple[int, int]) -> str:
    return f"[{device[0]}, {device[1]}]"


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"
