r"""Inter-operator pass: cut the layers into pipeline stages and the cluster into submeshes.

Alpa's dynamic program (OSDI'22, section 5.2), over a cost table of candidates: a candidate
runs layers i..j on a submesh of n devices with per-microbatch time t and once-per-iteration
time u (gradient sync and optimizer step), and is usable as a stage that has at most
`max_following` stages after it (its activations of in-flight microbatches must fit: with
1F1B, stage k of S holds min(S - k, B) microbatches).

With B microbatches the iteration time of stages 1..S is

    T = sum_k t_k + (B - 1) max_k t_k + sum_k u_k

(the pipeline formula; the gradient syncs are charged as if they ran one after another, which
is exact when they share the inter-host links and conservative otherwise).

The DP enumerates t_max over the distinct candidate times in ascending order; for each,

    F(s, i, d) = min over candidates c = (i..j, n devices, t_c <= t_max, fits with s - 1
                 stages after it) of  t_c + u_c + F(s - 1, j + 1, d - n)

with F(0, L, 0) = 0, is the least sum over stages that covers layers i..L-1 with exactly d
devices in s stages; T(t_max) = min_s F(s, 0, D) + (B - 1) t_max. Enumeration stops once
(B - 1) t_max alone is at least the best T found (Alpa's early stop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache


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


@dataclass(frozen=True)
class PipelineSolution:
    stages: tuple[Candidate, ...]
    iteration_s: float


def pipeline_time_s(stages: Sequence[Candidate], microbatches: int) -> float:
    """T = sum t + (B - 1) max t + sum u."""
    times = [stage.time_s for stage in stages]
    return sum(times) + (microbatches - 1) * max(times) + sum(stage.iteration_s for stage in stages)


def best_pipeline(
    candidates: Sequence[Candidate], num_layers: int, num_devices: int, microbatches: int
) -> PipelineSolution | None:
    """The stage sequence with the least pipeline time that covers every layer once and uses
    every device exactly; None when no sequence fits."""
    by_first: dict[int, list[Candidate]] = {}
    for candidate in candidates:
        by_first.setdefault(candidate.first, []).append(candidate)
    for options in by_first.values():
        options.sort(key=lambda c: (c.last, c.devices, c.time_s, c.submesh, c.key))
    max_stages = min(num_layers, num_devices)
    best: PipelineSolution | None = None
    for t_max in sorted({c.time_s for c in candidates}):
        if best is not None and (microbatches - 1) * t_max >= best.iteration_s:
            break
        found = _best_for_t_max(by_first, num_layers, num_devices, max_stages, t_max)
        if found is None:
            continue
        stages = found
        total = pipeline_time_s(stages, microbatches)
        if best is None or total < best.iteration_s:
            best = PipelineSolution(stages, total)
    return best


def _best_for_t_max(
    by_first: dict[int, list[Candidate]],
    num_layers: int,
    num_devices: int,
    max_stages: int,
    t_max: float,
) -> tuple[Candidate, ...] | None:
    @cache
    def cover(stages_left: int, first: int, devices: int) -> tuple[float, tuple[Candidate, ...]]:
        """Least sum of (t + u) covering layers first.. with `devices` in `stages_left`."""
        if first == num_layers:
            return (0.0, ()) if devices == 0 and stages_left == 0 else (math.inf, ())
        if stages_left == 0 or devices <= 0:
            return (math.inf, ())
        best: tuple[float, tuple[Candidate, ...]] = (math.inf, ())
        for candidate in by_first.get(first, ()):
            if candidate.time_s > t_max or candidate.devices > devices:
                continue
            if candidate.max_following < stages_left - 1:
                continue
            rest_cost, rest = cover(
                stages_left - 1, candidate.last + 1, devices - candidate.devices
            )
            total = candidate.time_s + candidate.iteration_s + rest_cost
            if total < best[0]:
                best = (total, (candidate, *rest))
        return best

    best: tuple[float, tuple[Candidate, ...]] = (math.inf, ())
    for stages in range(1, max_stages + 1):
        found = cover(stages, 0, num_devices)
        if found[0] < best[0]:
            best = found
    cover.cache_clear()
    return best[1] if math.isfinite(best[0]) else None
