"""Compute time of one op on one GPU.

The planner asks a `ComputeModel` for the time of each op on its local (sharded) shapes. The
default is the roofline,

    time_s = max(flops / peak_flops, bytes_moved / memory_bandwidth)

with the GPU's datasheet peak for the compute dtype and its memory bandwidth (cluster YAML).
A calibration measured on the hardware replaces it with fitted curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cost_models.cluster import Gpu


class CostClass(StrEnum):
    """The class of kernel an op runs as, which decides how it is priced. Which op types fall
    in which class is the op registry's to say (`planner/ops/`); the cost models know classes
    only."""

    CONTRACTION = "contraction"  # matmul-like: priced by matmul throughput
    ELEMENTWISE = "elementwise"  # streams its bytes once (an Add)
    TRANSCENDENTAL = "transcendental"  # elementwise with a transcendental function (a tanh)
    REDUCTION = "reduction"  # reduces along an axis: a pass for statistics, a pass to write
    COPY = "copy"  # moves or indexes data without arithmetic (a transpose)


# Backward-to-forward compute ratio. Source: a contraction Y = X W needs dX = dY W^T and
# dW = X^T dY, two products of the forward's size (Kaplan et al. 2020, "Scaling Laws", 6N
# FLOPs per token for training vs 2N forward); a memory-bound op reads its saved inputs and
# the incoming gradient and writes one gradient: about one forward's traffic.
BACKWARD_RATIO_CONTRACTION = 2.0
BACKWARD_RATIO_MEMORY_BOUND = 1.0


def backward_ratio(cost: CostClass) -> float:
    """Backward compute over forward compute for an op of kernel class `cost`."""
    if cost is CostClass.CONTRACTION:
        return BACKWARD_RATIO_CONTRACTION
    return BACKWARD_RATIO_MEMORY_BOUND


def roofline_s(flops: float, bytes_moved: float, gpu: Gpu, dtype: str) -> float:
    """Seconds for `flops` and `bytes_moved` on `gpu` with math in `dtype`."""
    return max(flops / gpu.peak_flops(dtype), bytes_moved / gpu.memory_bandwidth_bytes_per_s)


class ComputeModel(Protocol):
    """What one op costs on one GPU."""

    def op_time_s(self, cost: CostClass, flops: float, bytes_moved: float, dtype: str) -> float:
        """Seconds for an op of kernel class `cost` doing `flops` and moving `bytes_moved`."""
        ...

    def describe(self) -> str:
        """One line for the plan's record: which model, measured where."""
        ...


@dataclass(frozen=True)
class Roofline:
    """The datasheet roofline of `gpu` (no calibration)."""

    gpu: Gpu

    def op_time_s(self, cost: CostClass, flops: float, bytes_moved: float, dtype: str) -> float:
        del cost
        return roofline_s(flops, bytes_moved, self.gpu, dtype)

    def describe(self) -> str:
        return f"roofline of {self.gpu.name} (datasheet peaks)"
