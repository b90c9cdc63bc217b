"""The spaces the search walks: submeshes of the cluster and logical shapes of a submesh.

- A submesh is (hosts, GPUs per host): Alpa's (1, m) inside a host (m a power of two, or every
  divisor of the host with the "all" space) and (h, G) for h whole hosts of G GPUs. These
  shapes always pack the cluster exactly (`planner/placement.py`).
- A logical shape (n0, n1) of a submesh views its n0 x n1 devices as a 2-D mesh, host-major and
  row-major (`cost_models/mesh.py`). The fast axis (axis 1) stays inside a host: n1 divides the
  GPUs of a host, so a shape never puts the slow link on both axes. Inside one host both axes
  ride the same links, so (a, b) and (b, a) cost the same and only a <= b is kept. The
  physical shape (hosts, GPUs) comes first: usually the best, its cost prunes the rest.

One space for every search: the pipeline's stages, the whole-model stage of ShardParallel
(`--intra-only`) and the polishing of chosen stages.
"""

from __future__ import annotations

from cost_models.cluster import Cluster

SUBMESH_SPACES = ("power-of-two", "all")


def submesh_shapes(cluster: Cluster, space: str = "power-of-two") -> tuple[tuple[int, int], ...]:
    """Alpa's submeshes: in-host (1, m), then whole hosts (h, GPUs per host), smallest first."""
    if space not in SUBMESH_SPACES:
        raise ValueError(f"expected a submesh space in {SUBMESH_SPACES}, found {space!r}")
    gpus = cluster.gpus_per_host
    if space == "all":
        inside = [m for m in range(1, gpus) if gpus % m == 0]
    else:
        powers = (1 << k for k in range(gpus.bit_length()))
        inside = [m for m in powers if m < gpus and gpus % m == 0]
    return (*((1, m) for m in inside), *((h, gpus) for h in range(1, cluster.hosts + 1)))


def logical_shapes(submesh: tuple[int, int], gpus_per_host: int) -> tuple[tuple[int, int], ...]:
    """The logical shapes of `submesh` (module docstring): the physical shape first."""
    hosts = submesh[0]
    devices = submesh[0] * submesh[1]
    others = [
        (n, devices // n)
        for n in range(1, devices + 1)
        if devices % n == 0
        and gpus_per_host % (devices // n) == 0
        and (hosts > 1 or n <= devices // n)
    ]
    return (submesh, *(shape for shape in others if shape != submesh))


def whole_cluster(cluster: Cluster) -> tuple[int, int]:
    """The submesh of every device: (hosts, GPUs per host)."""
    return (cluster.hosts, cluster.gpus_per_host)
