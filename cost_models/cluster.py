"""The GPU cluster the planner plans for: immutable values, no I/O.

A cluster is ``hosts`` identical hosts of ``gpus_per_host`` identical GPUs. Each link kind
(inside a host, between hosts) has a bandwidth and a latency, from which the cost model takes the
alpha (latency) and beta (seconds per byte) of every mesh axis that crosses it.

Convention for link bandwidth: it is what ONE GPU can send on that link kind, in one direction,
while every other GPU of the host does the same (the SPMD case: a collective runs on all GPUs at
once). For a NIC shared by the GPUs of a host that is the GPU's share of the NIC.

Peak FLOP/s are keyed by dtype, one of `PEAK_FLOPS_DTYPES`:

- ``float32``: plain FP32 (CUDA cores, no tensor cores);
- ``tfloat32``: TF32 tensor-core math on float32 tensors (Ampere and later);
- ``float16``, ``bfloat16``: 16-bit tensor-core math, FP32 accumulate;
- ``float8``: FP8 (E4M3/E5M2) tensor-core math (Hopper and later).

All are dense figures (datasheets also quote 2:4 structured sparsity, twice as high).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["PEAK_FLOPS_DTYPES", "Cluster", "Gpu", "Link"]

PEAK_FLOPS_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32", "float8", "tfloat32")


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_positive_finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class Gpu:
    """One GPU model: memory, peak FLOP/s per dtype, memory bandwidth.

    ``peak_flops_by_dtype`` is stored sorted by dtype name (construction sorts it), so equal GPUs
    compare and hash equal whatever order the figures were given in.
    """

    name: str
    memory_bytes: int
    peak_flops_by_dtype: tuple[tuple[str, float], ...]
    memory_bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        if not _is_positive_int(self.memory_bytes):
            raise ValueError(f"memory_bytes must be a positive int, got {self.memory_bytes!r}")
        if not _is_positive_finite(self.memory_bandwidth_bytes_per_s):
            raise ValueError(
                "memory_bandwidth_bytes_per_s must be positive and finite, "
                f"got {self.memory_bandwidth_bytes_per_s!r}"
            )
        pairs = tuple(sorted(self.peak_flops_by_dtype))
        dtypes = [dtype for dtype, _ in pairs]
        if not pairs:
            raise ValueError("peak_flops_by_dtype must name at least one dtype")
        if len(set(dtypes)) != len(dtypes):
            raise ValueError(f"peak_flops_by_dtype names a dtype twice: {dtypes}")
        for dtype, flops in pairs:
            if dtype not in PEAK_FLOPS_DTYPES:
                raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(PEAK_FLOPS_DTYPES)}")
            if not _is_positive_finite(flops):
                raise ValueError(f"peak FLOP/s for {dtype} must be positive, got {flops!r}")
        object.__setattr__(self, "peak_flops_by_dtype", pairs)

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The dtypes this GPU has a peak FLOP/s for, sorted."""
        return tuple(dtype for dtype, _ in self.peak_flops_by_dtype)

    def peak_flops(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``; `ValueError` naming the known dtypes if there is none."""
        for known, flops in self.peak_flops_by_dtype:
            if known == dtype:
                return flops
        raise ValueError(
            f"GPU {self.name!r} has no peak FLOP/s for dtype {dtype!r}; "
            f"known: {', '.join(self.dtypes)}"
        )


@dataclass(frozen=True)
class Link:
    """One link kind: per-GPU, per-direction bandwidth and one-message latency."""

    bandwidth_bytes_per_s: float
    latency_s: float

    def __post_init__(self) -> None:
        if not _is_positive_finite(self.bandwidth_bytes_per_s):
            raise ValueError(
                f"bandwidth_bytes_per_s must be positive, got {self.bandwidth_bytes_per_s!r}"
            )
        latency_ok = isinstance(self.latency_s, int | float) and math.isfinite(self.latency_s)
        if not latency_ok or self.latency_s < 0:
            raise ValueError(f"latency_s must be non-negative, got {self.latency_s!r}")


@dataclass(frozen=True)
class Cluster:
    """``hosts`` x ``gpus_per_host`` identical GPUs and the two link kinds that join them.

    ``calibration_path`` is the measured-cost file the YAML named (already resolved against the
    YAML file's folder), or None.
    """

    name: str
    hosts: int
    gpus_per_host: int
    gpu: Gpu
    intra_host: Link
    inter_host: Link
    calibration_path: str | None = None

    def __post_init__(self) -> None:
        if not _is_positive_int(self.hosts):
            raise ValueError(f"hosts must be a positive int, got {self.hosts!r}")
        if not _is_positive_int(self.gpus_per_host):
            raise ValueError(f"gpus_per_host must be a positive int, got {self.gpus_per_host!r}")

    @property
    def num_devices(self) -> int:
        """All GPUs of the cluster: hosts x GPUs per host."""
        return self.hosts * self.gpus_per_host

    def with_hosts(self, hosts: int) -> Cluster:
        """The same cluster with ``hosts`` hosts (what ``--hosts N`` does)."""
        return dataclasses.replace(self, hosts=hosts)
