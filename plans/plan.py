"""The plan: what the planner decided and what it expects it to cost.

Immutable values only. JSON (de)serialisation lives in `plans/io.py`; the field names there
follow the published format ("alpa-plan/2", `plans/alpa-plan-2.schema.json`; plans of
"alpa-plan/1" are read and converted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeAlias

SCHEMA = "alpa-plan/2"
SCHEMAS_READ = ("alpa-plan/1", SCHEMA)

# A JSON scalar or nested value, for free-form sections (planner options, solver statistics).
JsonValue: TypeAlias = (
    bool | int | float | str | tuple["JsonValue", ...] | Mapping[str, "JsonValue"] | None
)


def frozen_map(items: Mapping[str, object] | None = None) -> Mapping[str, object]:
    """A read-only mapping with keys in sorted order."""
    return MappingProxyType(dict(sorted((items or {}).items())))


@dataclass(frozen=True)
class PlannerInfo:
    version: str
    options: Mapping[str, JsonValue] = field(default_factory=frozen_map)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fingerprint: str
    parameters: int
    flops_per_sample: float  # forward FLOPs of one sample


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_bytes: int
    peak_flops: Mapping[str, float]  # by dtype
    memory_bandwidth_bytes_per_s: float


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    hosts: int
    gpus_per_host: int
    gpu: GpuInfo

    @property
    def num_devices(self) -> int:
        return self.hosts * self.gpus_per_host


@dataclass(frozen=True)
class Settings:
    mode: str  # "train" or "infer"
    batch_size: int  # global batch of one iteration
    microbatches: int
    schedule: str  # "1f1b" or "gpipe" (`plans/schedules.py`)
    dtype: str
    optimizer: str
    # 1F1B: forwards beyond the S - k - 1 of stage k's warm-up (`plans/schedules.py`).
    warmup_extra: int = 0
    # Stages per device group: more than 1 is interleaved 1F1B, stage k on the devices of
    # stage k mod (S / virtual_stages) (`plans/schedules.py`).
    virtual_stages: int = 1

    @property
    def microbatch_size(self) -> int:
        return self.batch_size // self.microbatches


class ZeroStage(StrEnum):
    """How a parameter's training state is held over the mesh axes it is replicated over
    (Rajbhandari et al., SC'20, "ZeRO")."""

    NONE = "none"  # replicated: gradients all-reduced, every device updates the whole piece
    ZERO1 = "zero1"  # optimizer state sharded: reduce-scatter, update, all-gather per iteration
    ZERO2 = "zero2"  # gradients too: reduce-scatter every microbatch, all-gather per iteration
    ZERO3 = "zero3"  # the weights sharded too: all-gathered for every forward and backward


@dataclass(frozen=True)
class StageTime:
    """Seconds of one microbatch through the stage, and its once-per-iteration work."""

    forward_s: float
    backward_s: float
    communication_s: float  # one microbatch: in-stage collectives and receiving from before
    gradient_sync_s: float  # once per iteration: gradient reduction (and ZeRO-2's gather)
    optimizer_step_s: float  # once per iteration: the optimizer update of the local shards
    total_s: float  # one microbatch: forward + backward + communication

    @property
    def once_per_iteration_s(self) -> float:
        return self.gradient_sync_s + self.optimizer_step_s


@dataclass(frozen=True)
class StageMemory:
    """Peak bytes per device of the stage."""

    parameters_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    peak_bytes: int


@dataclass(frozen=True)
class Layer:
    """A run of consecutive ops that the inter-op pass keeps together."""

    name: str
    ops: tuple[str, ...]
    flops: float  # forward FLOPs of one global batch
    parameter_bytes: int  # in the training dtype


@dataclass(frozen=True)
class Stage:
    index: int
    layers: tuple[str, ...]
    ops: tuple[str, ...]
    devices: tuple[tuple[int, int], ...]  # (host, gpu) ids
    logical_mesh: tuple[int, int]
    strategies: Mapping[str, str]  # op name -> strategy name ("OUT = IN0 x IN1" specs)
    shardings: Mapping[str, str]  # tensor name -> spec such as "S0R"
    time: StageTime
    memory: StageMemory
    # Parameter -> how its state is held on this stage (every parameter the stage reads).
    zero: Mapping[str, ZeroStage] = field(default_factory=frozen_map)  # type: ignore[arg-type]
    # RECOMPUTE_FULL: each layer keeps only its inputs and rebuilds its activations in the
    # backward (activation checkpointing per layer). RECOMPUTE_SELECTIVE: only the ops in
    # `recomputed_ops` (the attention cores) rerun their forward in the backward; what they
    # write is not kept.
    recompute: str = "none"
    recomputed_ops: tuple[str, ...] = ()  # RECOMPUTE_SELECTIVE only, in stage op order


RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL = "none", "selective", "full"
RECOMPUTE_MODES = (RECOMPUTE_NONE, RECOMPUTE_SELECTIVE, RECOMPUTE_FULL)


@dataclass(frozen=True)
class Transfer:
    """A tensor sent from one stage to the next (and its gradient back, when training)."""

    tensor: str
    source_stage: int
    destination_stage: int
    source_spec: str
    destination_spec: str
    size_bytes: int
    time_s: float


@dataclass(frozen=True)
class Estimate:
    iteration_time_s: float
    samples_per_s: float
    tflops_per_gpu: float
    peak_memory_bytes: int


@dataclass(frozen=True)
class CountRecord:
    """One microbatch count the pipeline search tried."""

    microbatches: int
    status: str  # "ok" or "infeasible"
    objective_s: float | None = None  # the DP's objective at this count
    stages: int | None = None
    candidates: int | None = None  # stage candidates the DP chose among
    one_stage_solved_whole: bool | None = None
    # Set when the count was skipped by the memory lower bound (`planner/memory_bound.py`).
    memory_lower_bound_bytes: int | None = None
    # Training: complete pipelines whose schedule was simulated, and whether the search proved
    # that none of the candidates' other pipelines is faster (`planner/pipeline_search.py`).
    pipelines_simulated: int | None = None
    proven_optimal: bool | None = None


@dataclass(frozen=True)
class MeshRecord:
    """One logical mesh the one-stage search (`--intra-only`) tried."""

    logical_mesh: tuple[int, int]
    status: str  # "optimal", "time limit", "infeasible" or "pruned: cannot beat the best mesh"
    objective_s: float | None = None
    mip_gap: float | None = None
    variables: int | None = None
    constraints: int | None = None
    chosen: bool = False
    minimum_memory_bytes: int | None = None  # infeasible: the least memory it reaches


@dataclass(frozen=True)
class SearchReport:
    """How the plan was found, and what the user should know about it (`warnings`)."""

    algorithm: str
    layers: int | None = None
    submeshes: tuple[tuple[int, int], ...] = ()
    microbatches: tuple[CountRecord, ...] = ()
    meshes: tuple[MeshRecord, ...] = ()
    layer_ilps: int | None = None
    layer_ilps_at_time_limit: int | None = None
    stages_solved_whole: tuple[int, ...] = ()
    replicated_fallback: tuple[str, ...] = ()  # op types without a sharding rule
    parameters: Mapping[str, JsonValue] = field(default_factory=frozen_map)  # type: ignore[arg-type]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    planner: PlannerInfo
    model: ModelInfo
    cluster: ClusterInfo
    settings: Settings
    layers: tuple[Layer, ...]
    stages: tuple[Stage, ...]
    transfers: tuple[Transfer, ...]
    estimate: Estimate
    search: SearchReport = field(default_factory=lambda: SearchReport("unknown"))
    schema: str = SCHEMA
    # The format the plan was read from (another than `schema` when it was converted).
    read_from: str = SCHEMA
