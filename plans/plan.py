"""The plan: what the planner decided and what it expects it to cost.

Immutable values only. JSON (de)serialisation lives in `plans/io.py`; the field names there
follow the published format ("alpa-plan/1").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeAlias

SCHEMA = "alpa-plan/1"

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
    schedule: str  # "1f1b" or "gpipe"
    dtype: str
    optimizer: str

    @property
    def microbatch_size(self) -> int:
        return self.batch_size // self.microbatches


@dataclass(frozen=True)
class StageTime:
    """Seconds of one microbatch through the stage, and its share of once-per-iteration work."""

    forward_s: float
    backward_s: float
    communication_s: float  # in-stage collectives of one microbatch, forward and backward
    gradient_sync_s: float  # once per iteration: parameter-gradient all-reduce
    total_s: float  # one microbatch: forward + backward + communication


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
    strategies: Mapping[str, str]  # op name -> strategy name
    shardings: Mapping[str, str]  # tensor name -> spec such as "S0R"
    time: StageTime
    memory: StageMemory


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
class Plan:
    planner: PlannerInfo
    model: ModelInfo
    cluster: ClusterInfo
    settings: Settings
    layers: tuple[Layer, ...]
    stages: tuple[Stage, ...]
    transfers: tuple[Transfer, ...]
    estimate: Estimate
    search: Mapping[str, JsonValue] = field(default_factory=frozen_map)  # type: ignore[arg-type]
    schema: str = SCHEMA
