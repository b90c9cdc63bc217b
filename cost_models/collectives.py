"""Alpha-beta cost of collectives on the axes of a logical mesh (docs/DESIGN.md section 5.2).

For n devices on an axis with latency alpha (s) and beta (s/byte), moving V bytes per device:

    all-reduce      2 (n-1)/n * V * beta + alpha
    all-gather      (n-1)/n * V * beta + alpha      (V = the gathered, full size)
    reduce-scatter  (n-1)/n * V * beta + alpha      (V = the full size before scattering)
    all-to-all      (n-1)/n^2 * V * beta + alpha
    point-to-point  V * beta + alpha
    stage transfer  V / n_receivers * beta + alpha per direction (`transfer_s`)

Source: the ring-algorithm bandwidth terms of Thakur, Rabenseifner and Gropp, "Optimization of
Collective Communication Operations in MPICH" (IJHPCA 2005), as used by the Alpa paper.

A collective over both axes runs hierarchically, fast axis first: a 2-axis all-reduce is a
reduce-scatter on the fast axis, an all-reduce of the 1/n_fast shard on the slow axis, and an
all-gather on the fast axis (as NCCL does across hosts).
"""

from __future__ import annotations

from collections.abc import Sequence

from cost_models.cluster import Link
from cost_models.mesh import MeshAxis


def all_reduce_s(num_bytes: float, axis: MeshAxis) -> float:
    n = axis.size
    if n <= 1 or num_bytes <= 0:
        return 0.0
    return 2.0 * (n - 1) / n * num_bytes * axis.beta_s_per_byte + axis.alpha_s


def all_gather_s(num_bytes: float, axis: MeshAxis) -> float:
    n = axis.size
    if n <= 1 or num_bytes <= 0:
        return 0.0
    return (n - 1) / n * num_bytes * axis.beta_s_per_byte + axis.alpha_s


def reduce_scatter_s(num_bytes: float, axis: MeshAxis) -> float:
    return all_gather_s(num_bytes, axis)


def all_to_all_s(num_bytes: float, axis: MeshAxis) -> float:
    n = axis.size
    if n <= 1 or num_bytes <= 0:
        return 0.0
    return (n - 1) / (n * n) * num_bytes * axis.beta_s_per_byte + axis.alpha_s


def point_to_point_s(num_bytes: float, alpha_s: float, beta_s_per_byte: float) -> float:
    if num_bytes <= 0:
        return 0.0
    return num_bytes * beta_s_per_byte + alpha_s


def transfer_s(num_bytes: float, receivers: int, link: Link, training: bool) -> float:
    """Sending `num_bytes` (one microbatch) from one stage to the next over `link`, spread over
    the receiving stage's `receivers` devices (each receives its share point-to-point); when
    training, the gradient of the same size travels back."""
    per_device = num_bytes / receivers
    one_way = point_to_point_s(per_device, link.latency_s, 1.0 / link.bandwidth_bytes_per_s)
    return one_way * (2 if training else 1)


def _fast_first(axes: Sequence[MeshAxis]) -> list[MeshAxis]:
    return sorted((axis for axis in axes if axis.size > 1), key=lambda a: a.beta_s_per_byte)


def all_reduce_over_s(num_bytes: float, axes: Sequence[MeshAxis]) -> float:
    """All-reduce over the group spanned by `axes` (one axis or both), hierarchically."""
    ordered = _fast_first(axes)
    if not ordered:
        return 0.0
    if len(ordered) == 1:
        return all_reduce_s(num_bytes, ordered[0])
    fast, slow = ordered
    return (
        reduce_scatter_s(num_bytes, fast)
        + all_reduce_s(num_bytes / fast.size, slow)
        + all_gather_s(num_bytes, fast)
    )


def all_gather_over_s(num_bytes: float, axes: Sequence[MeshAxis]) -> float:
    """All-gather to `num_bytes` per device from shards split over `axes`: slow axis first,
    while the pieces are small."""
    ordered = _fast_first(axes)
    if not ordered:
        return 0.0
    if len(ordered) == 1:
        return all_gather_s(num_bytes, ordered[0])
    fast, slow = ordered
    return all_gather_s(num_bytes / fast.size, slow) + all_gather_s(num_bytes, fast)


def reduce_scatter_over_s(num_bytes: float, axes: Sequence[MeshAxis]) -> float:
    """Reduce-scatter of `num_bytes` per device over `axes`: the mirror of all-gather."""
    return all_gather_over_s(num_bytes, axes)
