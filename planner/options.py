"""The options of one planning run, as the CLI passes them to the planner."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("train", "infer")
SCHEDULES = ("1f1b", "gpipe")
DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class PlanOptions:
    mode: str = "train"
    dtype: str = "float16"
    optimizer: str = "adam"
    microbatches: int = 1
    schedule: str = "1f1b"
    # Share of GPU memory the plan may fill; the rest is left to the framework, the CUDA
    # context and fragmentation (Alpa's default memory budget is likewise below 100 %).
    memory_fraction: float = 0.9

    @property
    def training(self) -> bool:
        return self.mode == "train"
