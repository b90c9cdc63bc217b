"""Logical device meshes: the planner's abstract view of a group of GPUs.

A `LogicalMesh` has a 2-D shape (n0, n1) and, per axis, the alpha (latency, s) and beta
(s/byte) of the links a collective along that axis crosses. It has no device ids: the planner
reasons about meshes, and concrete (host, GPU) ids are bound only when stages are packed.

Devices of a submesh of `hosts` x `gpus` are numbered host-major and laid out row-major on the
logical shape, so axis 1 groups consecutive GPUs. Axis 1 stays inside a host when n1 <= gpus;
axis 0 crosses hosts as soon as the submesh spans more than one host (its groups then reach
every host, and the slowest link sets a collective's pace).
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.cluster import Cluster, Link


@dataclass(frozen=True)
class MeshAxis:
    size: int
    alpha_s: float  # latency of one collective step on this axis
    beta_s_per_byte: float  # inverse of the per-GPU bandwidth on this axis
    crosses_hosts: bool


@dataclass(frozen=True)
class LogicalMesh:
    shape: tuple[int, int]
    axes: tuple[MeshAxis, MeshAxis]

    @property
    def num_devices(self) -> int:
        return self.shape[0] * self.shape[1]

    def __str__(self) -> str:
        return f"{self.shape[0]}x{self.shape[1]}"


def _axis(size: int, link: Link, crosses_hosts: bool) -> MeshAxis:
    return MeshAxis(size, link.latency_s, 1.0 / link.bandwidth_bytes_per_s, crosses_hosts)


def logical_mesh(cluster: Cluster, submesh: tuple[int, int], shape: tuple[int, int]) -> LogicalMesh:
    """The logical mesh `shape` over a physical submesh of (hosts, gpus per host)."""
    hosts, gpus = submesh
    n0, n1 = shape
    if n0 * n1 != hosts * gpus:
        raise ValueError(f"logical shape {shape} does not cover the submesh {submesh}")
    axis1_crosses = n1 > gpus
    axis0_crosses = hosts > 1 and n0 > 1
    return LogicalMesh(
        shape=(n0, n1),
        axes=(
            _axis(n0, cluster.inter_host if axis0_crosses else cluster.intra_host, axis0_crosses),
            _axis(n1, cluster.inter_host if axis1_crosses else cluster.intra_host, axis1_crosses),
        ),
    )
