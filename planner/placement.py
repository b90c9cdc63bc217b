"""Binding a pipeline's submeshes to concrete (host, GPU) ids.

The search reasons about submesh shapes (`planner/mesh_shapes.py`) and logical meshes without
device ids; ids appear only here, once the stages are chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

from plans.errors import InfeasibleError

Devices = tuple[tuple[int, int], ...]  # (host, GPU) ids of one stage, row-major on its mesh


def pack_devices(
    submeshes: Sequence[tuple[int, int]], hosts: int, gpus_per_host: int
) -> tuple[Devices, ...]:
    """Concrete (host, GPU) ids per stage: whole-host submeshes take whole hosts in stage order,
    then in-host submeshes go largest first into the first host with room (sizes are powers
    of two, or divisors of the host size, so they pack exactly)."""
    free = {host: list(range(gpus_per_host)) for host in range(hosts)}
    placed: dict[int, Devices] = {}
    next_host = 0
    for index, (h, g) in enumerate(submeshes):
        if g == gpus_per_host:
            span = range(next_host, next_host + h)
            placed[index] = tuple((host, gpu) for host in span for gpu in range(g))
            for host in span:
                free[host] = []
            next_host += h
    order = sorted(
        (i for i, (h, g) in enumerate(submeshes) if g != gpus_per_host),
        key=lambda i: (-submeshes[i][1], i),
    )
    for index in order:
        size = submeshes[index][1]
        room = [h for h in range(hosts) if len(free[h]) >= size]
        if not room:
            raise InfeasibleError(
                f"cannot place the stages' submeshes {list(submeshes)} on {hosts} hosts of "
                f"{gpus_per_host} GPUs"
            )
        host = room[0]
        taken, free[host] = free[host][:size], free[host][size:]
        placed[index] = tuple((host, gpu) for gpu in taken)
    return tuple(placed[i] for i in range(len(submeshes)))
