"""Where a pipeline's stages sit, and which link carries what crosses between them.

Stages sit in order on the cluster's devices, numbered host-major ((host, GPU) -> host x G +
GPU for G GPUs per host): stage k takes the n_k devices after those of the stages before it.
So the device offset at which a stage starts is the number of devices the stages before it use,
which the DP knows in its state (`planner/inter_op.py`), and placement is exact in the search,
not decided after it. A stage must fit where it starts: a whole-host submesh (h, G) starts on a
host's first GPU, an in-host one (1, m) does not straddle two hosts.

Between stage k - 1 and stage k flows everything that crosses the cut between them: the
activations made before the cut and read after it (a tensor read two stages later is relayed
by the stage between, as pipeline runtimes that talk only to their neighbours do), and, when
training, their gradients back. `cut_link` is the one rule for the link of a cut: the
intra-host link when the devices on both sides of the cut (the last of stage k - 1, the first
of stage k) are on one host, else the inter-host link. The DP prices transfers with it from the
offset in its state; the plan's transfers (`planner/plan_assembly.py`) with it from the placed
devices: both see the same offset, so they agree.

The search reasons about submesh shapes and logical meshes without device ids; ids appear only
here.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from cost_models.cluster import Cluster, Link
from plans.errors import InfeasibleError

Devices = tuple[tuple[int, int], ...]  # (host, GPU) ids of one stage, row-major on its mesh


class Start(StrEnum):
    """Where a candidate stage may start, which decides the link it receives over."""

    ANYWHERE = "anywhere"  # it receives nothing (or the cluster is one host)
    HOST_START = "host start"  # on a host's first GPU: receives over the inter-host link
    INSIDE_HOST = "inside a host"  # after the stage before it on the same host: intra-host


def fits_at(offset: int, submesh: tuple[int, int], gpus_per_host: int) -> bool:
    """Whether a stage of `submesh` can start at device `offset`."""
    hosts, gpus = submesh
    if gpus == gpus_per_host:
        return offset % gpus_per_host == 0
    return hosts == 1 and offset // gpus_per_host == (offset + gpus - 1) // gpus_per_host


def starts_as(offset: int, start: Start, gpus_per_host: int) -> bool:
    """Whether a stage starting at `offset` starts as `start` says."""
    if start is Start.ANYWHERE:
        return True
    at_host_start = offset % gpus_per_host == 0
    return at_host_start if start is Start.HOST_START else not at_host_start


START_CODES = {Start.ANYWHERE: 0, Start.HOST_START: 1, Start.INSIDE_HOST: 2}


def placeable(
    offset: np.ndarray | int,
    devices: np.ndarray | int,
    whole_hosts: np.ndarray | bool,
    start_code: np.ndarray | int,
    gpus_per_host: int,
) -> np.ndarray:
    """`fits_at` and `starts_as` elementwise: whether stages of `devices` GPUs (whole hosts, or
    inside one) starting at `offset` fit there and start as their `START_CODES` say."""
    g = gpus_per_host
    offset, devices = np.asarray(offset), np.asarray(devices)
    at_host_start = offset % g == 0
    fits = np.where(whole_hosts, at_host_start, offset // g == (offset + devices - 1) // g)
    code = np.asarray(start_code)
    starts = (code == 0) | ((code == 1) & at_host_start) | ((code == 2) & ~at_host_start)
    return np.asarray(fits & starts, dtype=bool)


def placeable_mask(
    devices: int, whole_hosts: bool, start: Start, total: int, gpus_per_host: int
) -> np.ndarray:
    """Over the devices left d = `devices`..`total` (the stage then starts at offset
    `total` - d): whether a stage of `devices` GPUs (whole hosts, or inside one) fits there and
    starts as `start` says."""
    left = np.arange(devices, total + 1)
    return placeable(total - left, devices, whole_hosts, START_CODES[start], gpus_per_host)


def cut_link(cluster: Cluster, offset: int) -> Link:
    """The link joining the stage that ends at device `offset` - 1 and the stage that starts at
    device `offset` (module docstring)."""
    same_host = offset % cluster.gpus_per_host != 0 or cluster.hosts == 1
    return cluster.intra_host if same_host else cluster.inter_host


def start_link(cluster: Cluster, start: Start) -> Link:
    """The link a stage that starts as `start` receives over (`cut_link` at such an offset)."""
    return cluster.inter_host if start is Start.HOST_START else cluster.intra_host


def offsets(submeshes: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """The device offset at which each stage starts."""
    found, used = [], 0
    for hosts, gpus in submeshes:
        found.append(used)
        used += hosts * gpus
    return tuple(found)


def place_stages(
    submeshes: Sequence[tuple[int, int]], hosts: int, gpus_per_host: int
) -> tuple[Devices, ...]:
    """Concrete (host, GPU) ids per stage, in order (module docstring)."""
    placed = []
    total = hosts * gpus_per_host
    for (h, g), offset in zip(submeshes, offsets(submeshes), strict=True):
        size = h * g
        if offset + size > total or not fits_at(offset, (h, g), gpus_per_host):
            raise InfeasibleError(
                f"cannot place the stages' submeshes {list(submeshes)} in order on {hosts} "
                f"hosts of {gpus_per_host} GPUs"
            )
        span = range(offset, offset + size)
        placed.append(tuple(divmod(device, gpus_per_host) for device in span))
    return tuple(placed)
