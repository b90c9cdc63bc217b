r"""Inter-operator pass: cut the layers into pipeline stages and the cluster into submeshes.

Alpa's dynamic program (OSDI'22, section 5.2), over a cost table of candidates: a candidate
runs layers i..j on a submesh of n devices with per-microbatch time t and once-per-iteration
time u (gradient sync and optimizer step), and is usable as a stage that has at most
`max_following` stages after it (its activations of in-flight microbatches must fit: with
1F1B, stage k of S holds min(S - k, B) microbatches).

With B microbatches the iteration time of stages 1..S is the pipeline formula of
`planner/pipeline_time.py`,

    T = sum_k t_k + (B - 1) max_k t_k + sum_k u_k

The DP enumerates t_max over the distinct candidate times in ascending order; for each,

    F(s, i, d) = min over candidates c = (i..j, n devices, t_c <= t_max, fits with s - 1
                 stages after it) of  t_c + u_c + F(s - 1, j + 1, d - n)

with F(0, L, 0) = 0, is the least sum over stages that covers layers i..L-1 with exactly d
devices in s stages; T(t_max) = min_s F(s, 0, D) + (B - 1) t_max. Enumeration stops once
(B - 1) t_max alone is at least the best T found (Alpa's early stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.pipeline_time import pipeline_iteration_s
from planner.placement import Start, placeable_mask


@dataclass(frozen=True)
class Candidate:
    """One way to run layers first..last (inclusive) as a stage on `devices` GPUs."""

    first: int
    last: int
    devices: int
    submesh: int  # index into the caller's list of submeshes
    time_s: float  # one microbatch: forward + backward + communication
    iteration_s: float  # once per iteration
    max_following: int  # the most stages that may follow it (memory); math.inf-like large int
    key: int = 0  # the caller's handle (e.g. an index into its own table)
    start: Start = Start.ANYWHERE  # where it may start (its time assumes that link)
    whole_hosts: bool = False  # a (h, G) submesh: starts on a host's first GPU


@dataclass(frozen=True)
class PipelineSolution:
    stages: tuple[Candidate, ...]
    iteration_s: float


def pipeline_time_s(stages: Sequence[Candidate], microbatches: int) -> float:
    """T = sum t + (B - 1) max t + sum u (`planner/pipeline_time.py`)."""
    return pipeline_iteration_s(
        [stage.time_s for stage in stages], [stage.iteration_s for stage in stages], microbatches
    )


def best_pipeline(
    candidates: Sequence[Candidate],
    num_layers: int,
    num_devices: int,
    microbatches: int,
    gpus_per_host: int | None = None,
) -> PipelineSolution | None:
    """The stage sequence with the least pipeline time that covers every layer once and uses
    every device exactly, each stage placed in order where it fits (`planner/placement.py`:
    the stage that starts at device offset D - d, d the devices left, must fit there and start
    as its candidate says; `gpus_per_host` None: one host of every device); None when no
    sequence fits."""
    found = dp_pipelines(candidates, num_layers, num_devices, microbatches, gpus_per_host)
    return found[0] if found else None


def dp_pipelines(
    candidates: Sequence[Candidate],
    num_layers: int,
    num_devices: int,
    microbatches: int,
    gpus_per_host: int | None = None,
    stage_count: int | None = None,
) -> list[PipelineSolution]:
    """The DP's pipeline for each bottleneck time t_max it enumerates, distinct, by pipeline
    time (the first is `best_pipeline`'s); with `stage_count`, only pipelines of that many
    stages (a user's pin, `planner/pins.py`: the minimum is taken over F(stage_count, 0, D)).

    Feasibility grows with t_max, so the smallest feasible t_max is found by bisection; the
    enumeration then walks up from it until Alpa's early stop."""
    ordered = sorted(
        candidates, key=lambda c: (c.first, c.last, c.devices, c.time_s, c.submesh, c.key)
    )
    table = _DpTable(ordered, num_layers, num_devices, gpus_per_host or num_devices, stage_count)
    times = sorted({c.time_s for c in ordered})
    low, high = 0, len(times)
    while low < high:  # the first t_max with any feasible pipeline
        middle = (low + high) // 2
        if table.solve(times[middle]) is None:
            low = middle + 1
        else:
            high = middle
    best: PipelineSolution | None = None
    found: dict[tuple[int, ...], PipelineSolution] = {}
    for t_max in times[low:]:
        if best is not None and (microbatches - 1) * t_max >= best.iteration_s:
            break
        stages = table.solve(t_max)
        if stages is None:
            continue
        solution = PipelineSolution(stages, pipeline_time_s(stages, microbatches))
        found.setdefault(tuple(c.key for c in stages), solution)
        if best is None or solution.iteration_s < best.iteration_s:
            best = solution
    return sorted(found.values(), key=lambda s: (s.iteration_s, tuple(c.key for c in s.stages)))


class _DpTable:
    """F[s, i, d]: the least sum of (t + u) over s stages that cover layers i.. with exactly
    d devices, using candidates with t <= t_max; vectorised over s and d with numpy."""

    def __init__(
        self,
        candidates: Sequence[Candidate],
        num_layers: int,
        num_devices: int,
        gpus_per_host: int,
        stage_count: int | None = None,
    ) -> None:
        self.candidates = candidates
        self.stage_count = stage_count
        self.num_layers = num_layers
        self.num_devices = num_devices
        self.max_stages = min(num_layers, num_devices)
        self.by_first: list[list[int]] = [[] for _ in range(num_layers)]
        for index, candidate in enumerate(candidates):
            self.by_first[candidate.first].append(index)
        # Per candidate, over the devices left d = n..D: may it start at offset D - d?
        self.allowed: list[np.ndarray] = []
        masks: dict[tuple[int, bool, Start], np.ndarray] = {}
        for c in candidates:
            key = (c.devices, c.whole_hosts, c.start)
            if key not in masks:
                masks[key] = placeable_mask(
                    c.devices, c.whole_hosts, c.start, num_devices, gpus_per_host
                )
            self.allowed.append(masks[key])

    def solve(self, t_max: float) -> tuple[Candidate, ...] | None:
        stages, layers, devices = self.max_stages, self.num_layers, self.num_devices
        cost = np.full((stages + 1, layers + 1, devices + 1), np.inf)
        choice = np.full((stages + 1, layers + 1, devices + 1), -1, dtype=np.int64)
        cost[0, layers, 0] = 0.0
        for first in range(layers - 1, -1, -1):
            for index in self.by_first[first]:
                c = self.candidates[index]
                n = c.devices
                if c.time_s > t_max or n > devices:
                    continue
                # A stage with s - 1 stages after it must hold min(s, B) microbatches.
                top = min(stages, c.max_following + 1)
                if top < 1:
                    continue
                rest = cost[0:top, c.last + 1, : devices + 1 - n]
                total = rest + (c.time_s + c.iteration_s)
                current = cost[1 : top + 1, first, n:]
                better = (total < current) & self.allowed[index]
                if better.any():
                    cost[1 : top + 1, first, n:] = np.where(better, total, current)
                    choice[1 : top + 1, first, n:] = np.where(
                        better, index, choice[1 : top + 1, first, n:]
                    )
        column = cost[1:, 0, devices]
        if self.stage_count is not None:  # pinned: only that column counts
            pinned = self.stage_count
            column = np.where(np.arange(1, stages + 1) == pinned, column, np.inf)
        if not np.isfinite(column).any():
            return None
        s = int(np.argmin(column)) + 1  # the fewest stages among equal sums
        found = []
        first, left = 0, devices
        while s > 0:
            c = self.candidates[int(choice[s, first, left])]
            found.append(c)
            s, first, left = s - 1, c.last + 1, left - c.devices
        return tuple(found)
