"""The options of one planning run, validated once into enums.

`PlanOptions` accepts the enums or their string values (`mode="train"`) and converts them in
`__post_init__`; anything else raises `ValueError` naming the field, what it accepts and what it
got, so a typo can never silently mean another mode. The CLI builds one in one place
(`cli/arguments.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cost_models.cluster import Cluster
from cost_models.compute import ComputeModel
from cost_models.memory import OPTIMIZERS
from planner.intra_op import IntraOpSettings
from planner.mesh_shapes import SUBMESH_SPACES
from planner.pins import Pins
from planner.reshard import ReshardRules
from planner.strategies import StrategyOptions
from plans.plan import RECOMPUTE_NONE


class Mode(StrEnum):
    TRAIN = "train"
    INFER = "infer"


class Schedule(StrEnum):
    ONE_F_ONE_B = "1f1b"  # PipeDream-flush: stage k of S holds min(S - k, B) microbatches
    GPIPE = "gpipe"  # every forward, then every backward: every microbatch in flight


class Search(StrEnum):
    PIPESHARD = "pipeshard"  # Alpa's PipeshardParallel: stages on submeshes, each sharded
    INTRA_ONLY = "intra-only"  # Alpa's ShardParallel: one stage on the whole cluster


class Objective(StrEnum):
    """Inference only: what a pipeline is ranked by."""

    THROUGHPUT = "throughput"  # the slowest stage first
    LATENCY = "latency"  # the sum of the stages


class Recompute(StrEnum):
    """Activation recomputation in the backward (training), per stage."""

    AUTO = "auto"  # searched: each stage none, selective or full, whichever the makespan prefers
    NONE = "none"  # keep every saved activation
    SELECTIVE = "selective"  # rebuild the attention cores' activations (`planner/recompute.py`)
    FULL = "full"  # keep only each layer's inputs, rebuild its activations in the backward


MODES = tuple(m.value for m in Mode)
SCHEDULES = tuple(s.value for s in Schedule)
SEARCHES = tuple(s.value for s in Search)
OBJECTIVES = tuple(o.value for o in Objective)
RECOMPUTES = tuple(r.value for r in Recompute)
DTYPES = ("float16", "bfloat16", "float32")  # the training dtypes `cost_models.memory` sizes

_ENUM_FIELDS: tuple[tuple[str, type[StrEnum]], ...] = (
    ("mode", Mode),
    ("schedule", Schedule),
    ("search", Search),
    ("objective", Objective),
    ("recompute", Recompute),
)
_CHOICE_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dtype", DTYPES),
    ("optimizer", OPTIMIZERS),
    ("submesh_space", SUBMESH_SPACES),
)


@dataclass(frozen=True)
class PlanOptions:
    mode: Mode = Mode.TRAIN
    dtype: str = "float16"
    optimizer: str = "adam"
    microbatches: int | None = None  # None: searched (pipeshard) or 1 (intra-only)
    schedule: Schedule = Schedule.ONE_F_ONE_B
    search: Search = Search.PIPESHARD
    layers: int | None = None  # None: from the model's name scopes, or chosen by FLOPs
    submesh_space: str = "power-of-two"
    objective: Objective = Objective.THROUGHPUT
    # Recomputation (activation checkpointing, rematerialisation), as Alpa's and Megatron-LM's
    # runs use: FULL keeps only each layer's inputs from the forward pass and rebuilds the rest in
    # the backward, SELECTIVE rebuilds only the attention cores (`planner/recompute.py`). AUTO
    # searches it per stage (`planner/pipeshard.py`).
    recompute: Recompute = Recompute.AUTO
    # Share of GPU memory the plan may fill; the rest is left to the framework, the CUDA
    # context and fragmentation (Alpa's default memory budget is likewise below 100 %).
    memory_fraction: float = 0.9
    ilp_time_limit_s: float = 60.0
    # Relative optimality gap at which the ILP stops (HiGHS's default, 1e-4): proving the last
    # hundredth of a percent costs more solver time than it gains.
    ilp_relative_gap: float = 1e-4
    strategy: StrategyOptions = field(default_factory=StrategyOptions)
    reshard: ReshardRules = field(default_factory=ReshardRules)
    # How op compute time is estimated; None: the GPU's datasheet roofline.
    compute: ComputeModel | None = None
    # Parts of the configuration the user fixed (`--pin`, `planner/pins.py`); the search
    # applies the microbatch and recompute pins to the fields above (`planner/search.py`).
    pins: Pins = field(default_factory=Pins)

    def __post_init__(self) -> None:
        for name, kind in _ENUM_FIELDS:
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                raise ValueError(_expected(name, tuple(kind), value)) from None
        for name, choices in _CHOICE_FIELDS:
            if getattr(self, name) not in choices:
                raise ValueError(_expected(name, choices, getattr(self, name)))
        if self.microbatches is not None and self.microbatches < 1:
            raise ValueError(f"microbatches: expected a positive count, found {self.microbatches}")
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"layers: expected a positive count, found {self.layers}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(
                f"memory_fraction: expected a share in (0, 1], found {self.memory_fraction}"
            )

    @property
    def training(self) -> bool:
        return self.mode is Mode.TRAIN

    def memory_budget_bytes(self, cluster: Cluster) -> float:
        """What a plan may hold per GPU."""
        return cluster.gpu.memory_bytes * self.memory_fraction

    def intra_op_settings(
        self, cluster: Cluster, microbatches: int | None = None, in_flight: int = 1
    ) -> IntraOpSettings:
        """The settings of one stage's ILP at `microbatches` (default: the options' count, or
        1), holding `in_flight` microbatches of activations."""
        return IntraOpSettings(
            dtype=self.dtype,
            optimizer=self.optimizer,
            training=self.training,
            microbatches=microbatches or self.microbatches or 1,
            in_flight=in_flight,
            memory_budget_bytes=self.memory_budget_bytes(cluster),
            time_limit_s=self.ilp_time_limit_s,
            relative_gap=self.ilp_relative_gap,
            strategy_options=self.strategy,
            reshard_rules=self.reshard,
            compute=self.compute,
            recompute=RECOMPUTE_NONE if self.recompute is Recompute.AUTO else str(self.recompute),
        )

    def record(self) -> dict[str, object]:
        """The options as the plan records them (everything that can change a plan); the pins
        only where some are set."""
        pins: dict[str, object] = {"pins": self.pins.given} if self.pins.given else {}
        return {
            "search": str(self.search),
            "layers": self.layers,
            "submesh_space": self.submesh_space,
            "recompute": str(self.recompute),
            "objective": str(self.objective) if not self.training else None,
            "memory_fraction": self.memory_fraction,
            "ilp_time_limit_s": self.ilp_time_limit_s,
            "ilp_relative_gap": self.ilp_relative_gap,
            "zero": self.strategy.zero,
            "force_data_parallel": self.strategy.force_data_parallel,
            "force_batch_dim_to_mesh_dim": self.strategy.force_batch_dim_to_mesh_dim,
            "allow_all_to_all": self.reshard.allow_all_to_all,
            "allow_all_gather": self.reshard.allow_all_gather,
            "compute_model": "roofline" if self.compute is None else self.compute.describe(),
            **pins,
        }


def _expected(name: str, choices: tuple[str, ...], found: object) -> str:
    return f"{name}: expected one of {', '.join(map(str, choices))}, found {found!r}"
