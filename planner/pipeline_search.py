"""Choosing a training pipeline by the makespan of the schedule it prescribes.

The DP (`planner/inter_op.py`) ranks candidate pipelines by the pipeline formula, which charges
a transfer once and the once-per-iteration work one stage after another; the plan's estimate is
the simulated makespan of its schedule (`plans/timeline.py`), where transfers occupy links and
overlap compute and a stage may wait every cycle for a round trip longer than its work. So the
choice is made by the simulation, in a branch and bound over stage sequences.

Bounds. Stage k of S has block time c_k (forward and backward of one microbatch, its in-stage
collectives included) and receives over the cut before it with round trip r_k (both ways;
r_0 = 0). Whatever else happens (contention and gradient syncs only add):

- its first forward waits for microbatch 0 to cross every stage before it, and after its last
  backward the gradient crosses back to stage 0: a chain A_k = sum_{j<k} c_j + sum_{j<=k} r_j;
- between them it runs 2B blocks one at a time: B c_k;
- it holds h_k = min(S - k + w, B) microbatches (1F1B with w extra warm-up forwards, none on
  the last stage; GPipe B),
  so microbatches m and m + h_k pass through it one round trip apart: its block, every later
  stage's and every cut after it, RT_k = c_k + sum_{j>k} (c_j + r_j); some slot carries
  ceil(B / h_k) microbatches.

      makespan >= max_k  A_k + max(B c_k, ceil(B / h_k) RT_k)

The search builds pipelines from the last stage back, so a partial pipeline (a suffix) knows
every term of its stages but the prefix part of A_k, which is at least the least sum of c + r
over the layers and devices left (a shortest-path DP, `_prefix_bounds`). It starts from the DP's
pipelines (simulated), extends suffixes best bound first, prunes any whose bound cannot beat the
best makespan found, and simulates every complete pipeline it reaches. It is exact (the least
simulated makespan among every stage cut and submesh assignment of the candidates) when it
finishes within its budget (`MAX_SIMULATIONS`, `MAX_EXPANSIONS`); otherwise it keeps the best
found, and the plan's search record says which.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.inter_op import Candidate
from planner.placement import START_CODES, Start, offsets, placeable, placeable_mask
from planner.stage_costs import RangePlan
from plans.timeline import CutModel, PipelineModel, StageModel, block_times, simulate

# Budgets of one search: complete pipelines simulated, partial pipelines extended.
MAX_SIMULATIONS = 400
MAX_EXPANSIONS = 25_000


@dataclass(frozen=True)
class SearchResult:
    stages: tuple[Candidate, ...]
    makespan_s: float
    proven: bool  # the search finished: no other pipeline of the candidates is faster
    simulated: int  # complete pipelines simulated


@dataclass(frozen=True)
class _Shape:
    """What the search needs of the cluster and the schedule."""

    num_layers: int
    num_devices: int
    gpus_per_host: int
    hosts: int
    microbatches: int
    schedule: str
    warmup_extra: int
    stage_count: int | None = None  # pinned (`planner/pins.py`): only pipelines of this many


def pipeline_model(
    stages: Sequence[RangePlan],
    gpus_per_host: int,
    hosts: int,
    microbatches: int,
    schedule: str,
    warmup_extra: int = 0,
    training: bool = True,
    virtual_stages: int = 1,
) -> PipelineModel:
    """The simulation's view of a pipeline of cost-table plans placed in order
    (`planner/placement.py`); with virtual stages, its device groups (the first S / v stages'
    submeshes) in order and stage k on group k mod (S / v)."""
    groups = len(stages) // virtual_stages
    group_starts = offsets([plan.submesh for plan in stages[:groups]])
    starts = [group_starts[k % groups] for k in range(len(stages))]
    models = []
    for plan, start in zip(stages, starts, strict=True):
        forward_s, backward_s = block_times(plan.forward_s, plan.backward_s, plan.communication_s)
        devices = plan.submesh[0] * plan.submesh[1]
        host_ids = tuple(range(start // gpus_per_host, (start + devices - 1) // gpus_per_host + 1))
        models.append(
            StageModel(
                forward_s,
                backward_s,
                plan.gradient_sync_s,
                plan.optimizer_step_s,
                plan.last - plan.first + 1,
                host_ids,
            )
        )
    cuts = []
    for plan, start in zip(stages[1:], starts[1:], strict=True):
        one_way = plan.transfer_s / 2 if training else plan.transfer_s
        inter_host = hosts > 1 and start % gpus_per_host == 0
        cuts.append(CutModel(one_way, one_way if training else 0.0, inter_host))
    return PipelineModel(
        tuple(models), tuple(cuts), microbatches, schedule, training, warmup_extra, virtual_stages
    )


@dataclass(frozen=True)
class PipelineObjective:
    """What a pipeline of cost-table plans is ranked by: in training the simulated makespan of
    its schedule; in inference the DP's weighted pipeline formula (`weight` on the slowest
    stage: throughput first, or latency)."""

    training: bool
    microbatches: int
    weight: int  # the DP's weight of the slowest stage (B in training)
    gpus_per_host: int
    hosts: int
    schedule: str
    warmup_extra: int = 0

    def of(self, stages: Sequence[RangePlan]) -> float:
        if not self.training:
            times = [plan.time_s for plan in stages]
            return sum(times) + (self.weight - 1) * max(times)
        model = pipeline_model(
            stages, self.gpus_per_host, self.hosts, self.microbatches, self.schedule,
            self.warmup_extra,
        )  # fmt: skip
        return simulate(model).makespan_s


def search_pipeline(
    candidates: Sequence[Candidate],
    plans: Sequence[RangePlan],
    starting: Sequence[Sequence[Candidate]],
    num_layers: int,
    gpus_per_host: int,
    hosts: int,
    microbatches: int,
    schedule: str,
    warmup_extra: int = 0,
    incumbent_s: float = math.inf,
    stage_count: int | None = None,
) -> SearchResult | None:
    """The training pipeline of `candidates` (their cost-table plans by `key` in `plans`) with
    the least simulated makespan, starting from the pipelines `starting` (module docstring);
    None when no pipeline fits or none beats `incumbent_s` (a makespan found elsewhere)."""
    shape = _Shape(
        num_layers, gpus_per_host * hosts, gpus_per_host, hosts, microbatches, schedule,
        warmup_extra, stage_count,
    )  # fmt: skip
    search = _Search(candidates, plans, shape)
    search.best_s = incumbent_s
    for pipeline in starting:
        search.offer(tuple(pipeline))
    return search.run()


@dataclass(frozen=True)
class _Suffix:
    """Stages k..S-1 of a pipeline, last first in `stages`, with what their bounds need."""

    stages: tuple[Candidate, ...]  # from the last stage back
    first: int  # first layer of the suffix
    used: int  # devices of the suffix
    tail_s: float  # sum over the suffix of c + r: the round trip past the stage before it
    worst_s: float  # max over the suffix of (chain within it) + max(B c, ceil(B / h) RT)


class _Search:
    def __init__(
        self, candidates: Sequence[Candidate], plans: Sequence[RangePlan], shape: _Shape
    ) -> None:
        self.shape = shape
        self.plans = plans
        self.by_last: list[list[Candidate]] = [[] for _ in range(shape.num_layers)]
        for c in sorted(candidates, key=lambda c: (c.last, c.first, c.devices, c.time_s, c.key)):
            self.by_last[c.last].append(c)
        self.block = {c.key: plans[c.key].block_s for c in candidates}
        self.receive = {c.key: plans[c.key].transfer_s for c in candidates}
        self.prefix, self.prefix_worst = _prefix_bounds(candidates, self.block, self.receive, shape)
        self.columns = [self._columns(group) for group in self.by_last]
        self.best: tuple[Candidate, ...] | None = None
        self.best_s = math.inf
        self.simulated = 0
        self.seen: set[tuple[int, ...]] = set()

    def offer(self, pipeline: tuple[Candidate, ...]) -> None:
        """Simulate a complete pipeline and keep it if it is the fastest so far."""
        keys = tuple(c.key for c in pipeline)
        if keys in self.seen or not _fits_memory(pipeline, self.shape.warmup_extra):
            return
        if self.shape.stage_count not in (None, len(pipeline)):
            return
        self.seen.add(keys)
        self.simulated += 1
        shape = self.shape
        model = pipeline_model(
            [self.plans[key] for key in keys], shape.gpus_per_host, shape.hosts,
            shape.microbatches, shape.schedule, shape.warmup_extra,
        )  # fmt: skip
        makespan = simulate(model).makespan_s
        # Ties go to the smaller keys; with no pipeline yet, best_s is the incumbent's.
        best_keys = tuple(c.key for c in self.best) if self.best is not None else ()
        if (makespan, keys) < (self.best_s, best_keys):
            self.best, self.best_s = pipeline, makespan

    def run(self) -> SearchResult | None:
        """Best bound first over suffixes (module docstring)."""
        shape = self.shape
        frontier: list[tuple[float, int, _Suffix]] = []
        order = 0
        empty = _Suffix((), shape.num_layers, 0, 0.0, 0.0)
        frontier.append((0.0, order, empty))
        expansions = 0
        proven = True
        while frontier:
            bound, _, suffix = heapq.heappop(frontier)
            if bound >= self.best_s:
                break  # every other suffix is bounded at least as high
            if self.simulated >= MAX_SIMULATIONS or expansions >= MAX_EXPANSIONS:
                proven = False
                break
            expansions += 1
            group = self.by_last[suffix.first - 1]
            for index, worst, new_bound in self._extensions(suffix):
                # best_s may fall while the group is walked: every test is against its value now.
                c = group[index]
                if c.first == 0:
                    if worst < self.best_s:
                        self.offer((*suffix.stages, c)[::-1])
                    continue
                if new_bound < self.best_s:
                    order += 1
                    tail = suffix.tail_s + self.block[c.key] + self.receive[c.key]
                    extended = _Suffix((*suffix.stages, c), c.first, suffix.used + c.devices,
                                       tail, worst)  # fmt: skip
                    heapq.heappush(frontier, (new_bound, order, extended))
        if self.best is None:
            return None
        return SearchResult(self.best, self.best_s, proven, self.simulated)

    def _columns(self, group: Sequence[Candidate]) -> dict[str, np.ndarray]:
        """The candidates ending at one layer as arrays, for `_extensions`."""
        return {
            "devices": np.array([c.devices for c in group], dtype=np.int64),
            "first": np.array([c.first for c in group], dtype=np.int64),
            "following": np.array([c.max_following for c in group], dtype=np.int64),
            "whole_hosts": np.array([c.whole_hosts for c in group], dtype=bool),
            "start": np.array([START_CODES[c.start] for c in group], dtype=np.int64),
            "block": np.array([self.block[c.key] for c in group], dtype=float),
            "receive": np.array([self.receive[c.key] for c in group], dtype=float),
        }

    def _extensions(self, suffix: _Suffix) -> list[tuple[int, float, float]]:
        """`_extend` over every candidate ending before `suffix` at once: (index in its group,
        its chain bound `worst_s`, its bound) for those that fit and may beat the best
        makespan; a complete pipeline's bound is its `worst_s`."""
        shape, arrays = self.shape, self.columns[suffix.first - 1]
        if not len(arrays["devices"]):
            return []
        n, g, b = shape.num_devices, shape.gpus_per_host, shape.microbatches
        later = len(suffix.stages)
        extra = shape.warmup_extra if later else 0  # the last stage warms up with none
        devices = arrays["devices"]
        used = suffix.used + devices
        offset = n - used  # stages sit in order: the suffix ends the devices
        fits = placeable(offset, devices, arrays["whole_hosts"], arrays["start"], g)
        ok = (used <= n) & (arrays["following"] >= later + extra) & fits
        block, receive = arrays["block"], arrays["receive"]
        held = b if shape.schedule == "gpipe" else min(later + 1 + extra, b)
        own = np.maximum(b * block, -(-b // held) * (block + suffix.tail_s))
        # Chains inside the suffix grow by this stage's c + r for every later stage; this
        # stage's own chain inside the suffix is its receive.
        worst = np.maximum(receive + own, suffix.worst_s + block + receive)
        first = arrays["first"]
        complete = first == 0
        left = np.clip(n - used, 0, n)
        prefix = self.prefix[first, left]
        bound = np.where(
            complete, worst, np.maximum(self.prefix_worst[first, left], prefix + worst)
        )
        ok &= np.where(complete, used == n, True) & (bound < self.best_s)
        if shape.stage_count is not None:  # pinned: complete at that count, never beyond
            ok &= np.where(complete, later + 1 == shape.stage_count, later + 1 < shape.stage_count)
        return [(int(i), float(worst[i]), float(bound[i])) for i in np.flatnonzero(ok)]


def _prefix_bounds(
    candidates: Sequence[Candidate],
    block: dict[int, float],
    receive: dict[int, float],
    shape: _Shape,
) -> tuple[np.ndarray, np.ndarray]:
    """Over prefixes covering layers 0..i-1 with d devices, placed in order from device 0
    (memory relaxed), [i, d] tables of: the least sum of c + r (P); and a lower bound on the
    largest A_j + B c_j of their stages (W: by induction, max(W of the prefix before the last
    stage, P of it + the last stage's r + B c)). inf where no prefix can."""
    layers, devices, b = shape.num_layers, shape.num_devices, shape.microbatches
    g = shape.gpus_per_host
    total = np.full((layers + 1, devices + 1), np.inf)
    worst = np.full((layers + 1, devices + 1), np.inf)
    total[0, 0] = worst[0, 0] = 0.0
    by_first: list[list[Candidate]] = [[] for _ in range(layers)]
    for c in candidates:
        by_first[c.first].append(c)
    masks: dict[tuple[int, bool, Start], np.ndarray] = {}
    for first in range(layers):
        for c in by_first[first]:
            n = c.devices
            if n > devices:
                continue
            key = (n, c.whole_hosts, c.start)
            if key not in masks:
                # Over the devices used before the stage u = 0..D - n: it starts at offset u.
                masks[key] = placeable_mask(n, c.whole_hosts, c.start, devices, g)[::-1]
            allowed = masks[key]
            before = total[first, : devices + 1 - n]
            value = before + block[c.key] + receive[c.key]
            current = total[c.last + 1, n:]
            total[c.last + 1, n:] = np.where(allowed & (value < current), value, current)
            reach = np.maximum(
                worst[first, : devices + 1 - n], before + receive[c.key] + b * block[c.key]
            )
            current = worst[c.last + 1, n:]
            worst[c.last + 1, n:] = np.where(allowed & (reach < current), reach, current)
    return total, worst


def _fits_memory(pipeline: Sequence[Candidate], warmup_extra: int) -> bool:
    """Each stage holds the microbatches its place in the pipeline and the warm-up mean
    (`max_following`: the stages that may follow it, one fewer than it may hold)."""
    last = len(pipeline) - 1
    return all(
        last - k + (warmup_extra if k < last else 0) <= c.max_following
        for k, c in enumerate(pipeline)
    )
