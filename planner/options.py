"""The options of one planning run, as the CLI passes them to the planner."""

from __future__ import annotations

from dataclasses import dataclass, field

from cost_models.compute import ComputeModel
from planner.reshard import ReshardRules
from planner.strategies import StrategyOptions

MODES = ("train", "infer")
SCHEDULES = ("1f1b", "gpipe")
DTYPES = ("float16", "bfloat16", "float32")
OPTIMIZERS = ("adam", "sgd")
SEARCHES = ("pipeshard", "intra-only")
OBJECTIVES = ("throughput", "latency")
SUBMESH_SPACES = ("power-of-two", "all")


@dataclass(frozen=True)
class PlanOptions:
    mode: str = "train"
    dtype: str = "float16"
    optimizer: str = "adam"
    microbatches: int | None = None  # None: searched (pipeshard) or 1 (intra-only)
    schedule: str = "1f1b"
    search: str = "pipeshard"  # Alpa's PipeshardParallel; "intra-only" is its ShardParallel
    layers: int | None = None  # None: from the model's name scopes, or chosen by FLOPs
    submesh_space: str = "power-of-two"
    objective: str = "throughput"  # inference only: "throughput" or "latency"
    # Rematerialisation (activation checkpointing) per layer, as Alpa's benchmarks use: keep
    # only each layer's inputs from the forward pass, recompute the rest in the backward.
    remat: bool = False
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

    @property
    def training(self) -> bool:
        return self.mode == "train"

    def record(self) -> dict[str, object]:
        """The options as the plan records them (everything that can change a plan)."""
        return {
            "search": self.search,
            "layers": self.layers,
            "submesh_space": self.submesh_space,
            "remat": self.remat,
            "objective": self.objective if not self.training else None,
            "memory_fraction": self.memory_fraction,
            "ilp_time_limit_s": self.ilp_time_limit_s,
            "ilp_relative_gap": self.ilp_relative_gap,
            "zero": self.strategy.zero,
            "force_data_parallel": self.strategy.force_data_parallel,
            "force_batch_dim_to_mesh_dim": self.strategy.force_batch_dim_to_mesh_dim,
            "allow_all_to_all": self.reshard.allow_all_to_all,
            "allow_all_gather": self.reshard.allow_all_gather,
            "compute_model": "roofline" if self.compute is None else self.compute.describe(),
        }
