"""Compute time of one op on one GPU: the roofline.

    time_s = max(flops / peak_flops, bytes_moved / memory_bandwidth)

with the GPU's datasheet peak for the compute dtype and its memory bandwidth (cluster YAML).
A calibration file (a later issue) replaces the peaks with measured curves.
"""

from __future__ import annotations

from cost_models.cluster import Gpu

# Backward-to-forward compute ratio. Source: a contraction Y = X W needs dX = dY W^T and
# dW = X^T dY, two products of the forward's size (Kaplan et al. 2020, "Scaling Laws", 6N
# FLOPs per token for training vs 2N forward); a memory-bound op reads its saved inputs and
# the incoming gradient and writes one gradient: about one forward's traffic.
BACKWARD_RATIO_CONTRACTION = 2.0
BACKWARD_RATIO_MEMORY_BOUND = 1.0


def roofline_s(flops: float, bytes_moved: float, gpu: Gpu, dtype: str) -> float:
    """Seconds for `flops` and `bytes_moved` on `gpu` with math in `dtype`."""
    return max(flops / gpu.peak_flops(dtype), bytes_moved / gpu.memory_bandwidth_bytes_per_s)
