"""Interleaved 1F1B pipelines: equal device groups, each running several chunks of layers.

A pipeline of S = G v stages on G groups of d = N / G devices (one submesh shape, the groups
placed in order): stage k, a contiguous range of layers, runs on group k mod G, so each group
holds v non-contiguous chunks (Megatron-LM's virtual pipeline stages, Narayanan et al., SC'21,
section 2.2; the schedule is `plans/schedules.py`). With equal chunks of forward f and backward
b and free transfers the iteration is B v (f + b) + (G - 1)(f + b): the fill and drain shrink v
times, for v times the transfers between groups.

Searched per microbatch count, for every v in `VIRTUAL_STAGES` (or the one a user's pins imply,
`virtual_stage_counts`) and every submesh shape that
tiles the cluster into G >= 2 groups with G v <= L layers and B a multiple of G (the schedule
sends groups of G microbatches through one chunk after another):

1. the cuts: the L layers into G v chunks, either balanced (a DP over chunks that minimises the
   largest chunk block, each chunk priced at its fastest cost-table plan on the group it lands
   on, with the link it receives over) or as equal in layers as they can be (Megatron-LM's
   rule);
2. each chunk's plan: its fastest; when a group's memory exceeds the budget, every chunk at its
   least-memory plan; a group's memory is its chunks' parameter state, the peak of their
   activations as the schedule holds them (`plans/schedules.py: peak_activation_bytes`), and
   the largest recomputation transient of its chunks (one backward rebuilds at a time);
3. ranked by the simulated makespan (`plans/timeline.py`), as every training pipeline is,
   after a bound: a group runs B blocks of each of its chunks one at a time, so the makespan
   is at least B times the largest group's sum of chunk blocks.

Not exhaustive: the cuts are chosen by balance, not by the makespan; the simulation decides
between them and against the pipelines without interleaving (`planner/pipeshard.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from planner.inter_op import Candidate
from planner.pins import Pins
from planner.pipeline_search import pipeline_model
from planner.placement import Start, fits_at, starts_as
from planner.stage_costs import RangePlan
from plans.schedules import in_flight, peak_activation_bytes
from plans.timeline import simulate

# Chunks per device group searched (Megatron-LM's virtual pipeline size).
VIRTUAL_STAGES = (2, 4)


@dataclass(frozen=True)
class InterleavedPipeline:
    stages: tuple[RangePlan, ...]  # stage k on group k mod (len(stages) / virtual_stages)
    virtual_stages: int
    makespan_s: float


@dataclass(frozen=True)
class ClusterShape:
    """What the search needs of the cluster and the iteration."""

    num_layers: int
    gpus_per_host: int
    hosts: int
    microbatches: int
    memory_budget_bytes: float

    @property
    def num_devices(self) -> int:
        return self.gpus_per_host * self.hosts


def search_interleaved(
    candidates: Sequence[Candidate],
    plans: Sequence[RangePlan],
    submeshes: Sequence[tuple[int, int]],
    shape: ClusterShape,
    incumbent_s: float = math.inf,
    pins: Pins | None = None,
) -> InterleavedPipeline | None:
    """The interleaved pipeline of the candidates (their plans by `key` in `plans`) with the
    least simulated makespan below `incumbent_s` (module docstring), or None; with `pins`, only
    the group counts and chunks per group they allow (`planner/pins.py`)."""
    pins = pins or Pins()
    options: dict[tuple[int, int, int, Start], list[RangePlan]] = {}
    for c in candidates:
        options.setdefault((c.first, c.last, c.submesh, c.start), []).append(plans[c.key])
    best: InterleavedPipeline | None = None
    best_s = incumbent_s
    for index, submesh in enumerate(submeshes):
        groups = shape.num_devices // (submesh[0] * submesh[1])
        for virtual_stages in virtual_stage_counts(groups, pins):
            for stages in _pipelines(options, index, submesh, virtual_stages, shape):
                found = _evaluate(stages, virtual_stages, shape, best_s)
                if found is not None and found.makespan_s < best_s:
                    best, best_s = found, found.makespan_s
    return best


def virtual_stage_counts(groups: int, pins: Pins) -> tuple[int, ...]:
    """The chunks per group searched for `groups` device groups: `VIRTUAL_STAGES`, or the one
    count the pins imply (a pinned vp, or a pinned stage count over the groups)."""
    if pins.vp is not None:
        wanted: tuple[int, ...] = (pins.vp,) if pins.vp > 1 else ()
    elif pins.stages is not None:
        wanted = (pins.stages // groups,) if groups and pins.stages % groups == 0 else ()
        wanted = tuple(v for v in wanted if v > 1)
    else:
        wanted = VIRTUAL_STAGES
    return tuple(v for v in wanted if pins.allows_interleaved(groups, v))


def _group_offsets(submesh: tuple[int, int], shape: ClusterShape) -> tuple[int, ...] | None:
    """Where each of the groups of `submesh` starts when they tile the cluster in order."""
    size = submesh[0] * submesh[1]
    if shape.num_devices % size or shape.num_devices // size < 2:
        return None
    found = tuple(range(0, shape.num_devices, size))
    if not all(fits_at(offset, submesh, shape.gpus_per_host) for offset in found):
        return None
    return found


class _ChunkPlans:
    """The cost-table plans of a range on one submesh, by whether the group it runs on starts
    on a host's first GPU (which decides the link it receives over)."""

    def __init__(
        self,
        options: dict[tuple[int, int, int, Start], list[RangePlan]],
        index: int,
        shape: ClusterShape,
    ) -> None:
        self.options, self.index, self.shape = options, index, shape
        layers = shape.num_layers
        # [at host start][first, last + 1]: the least block of the range's plans.
        self.block = np.full((2, layers + 1, layers + 1), np.inf)
        for (first, last, submesh, start), found in options.items():
            if submesh != index:
                continue
            least = min(p.block_s for p in found)
            for at_host_start in (False, True):
                offset = 0 if at_host_start else 1
                if starts_as(offset, start, shape.gpus_per_host):
                    cell = (int(at_host_start), first, last + 1)
                    self.block[cell] = min(self.block[cell], least)

    def plans(self, offset: int, first: int, last: int) -> list[RangePlan]:
        return [
            plan
            for start in Start
            if starts_as(offset, start, self.shape.gpus_per_host)
            for plan in self.options.get((first, last, self.index, start), ())
        ]


def _pipelines(
    options: dict[tuple[int, int, int, Start], list[RangePlan]],
    index: int,
    submesh: tuple[int, int],
    virtual_stages: int,
    shape: ClusterShape,
) -> list[tuple[RangePlan, ...]]:
    """The interleaved pipelines of `virtual_stages` chunks per group of `submesh` worth
    simulating: each cut (balanced, equal) with its chunks at their fastest plans, or at their
    least-memory plans where the fastest do not fit."""
    group_offsets = _group_offsets(submesh, shape)
    if group_offsets is None:
        return []
    groups = len(group_offsets)
    count = groups * virtual_stages
    layers, b = shape.num_layers, shape.microbatches
    if count > layers or b % groups:
        return []
    chunk_plans = _ChunkPlans(options, index, shape)
    offsets = [group_offsets[k % groups] for k in range(count)]
    at_host_start = [int(offset % shape.gpus_per_host == 0) for offset in offsets]
    held = [in_flight("1f1b", k, count, b, 0, virtual_stages) for k in range(count)]
    found: list[tuple[RangePlan, ...]] = []
    for cut in _cuts(chunk_plans.block, at_host_start, layers):
        chunks = [chunk_plans.plans(offsets[k], *cut[k]) for k in range(count)]
        if not all(chunks):
            continue
        fastest = tuple(min(ps, key=lambda p: (p.block_s, p.state_bytes)) for ps in chunks)
        least = tuple(_least_memory(ps, held[k]) for k, ps in enumerate(chunks))
        for pipeline in (fastest, least):
            if _fits(pipeline, virtual_stages, shape):
                if pipeline not in found:
                    found.append(pipeline)
                break
    return found


def _cuts(
    block: np.ndarray, at_host_start: Sequence[int], layers: int
) -> list[tuple[tuple[int, int], ...]]:
    """The balanced cut and the equal one, as (first, last) per chunk."""
    count = len(at_host_start)
    cuts = []
    balanced = _balanced_cut(block, at_host_start, layers)
    if balanced is not None:
        cuts.append(balanced)
    size, extra = divmod(layers, count)
    bounds = [0]
    for k in range(count):
        bounds.append(bounds[-1] + size + (1 if k < extra else 0))
    equal = tuple((bounds[k], bounds[k + 1] - 1) for k in range(count))
    if equal not in cuts:
        cuts.append(equal)
    return cuts


def _balanced_cut(
    block: np.ndarray, at_host_start: Sequence[int], layers: int
) -> tuple[tuple[int, int], ...] | None:
    """The cut into chunks whose largest block (at the fastest plan, `block[at host start]
    [first, last + 1]`) is least: over chunks k, best_k[i] = min over a of max(best_{k-1}[a],
    block of chunk k - 1 over layers a .. i - 1)."""
    best = np.full(layers + 1, np.inf)
    best[0] = 0.0
    choices = []
    columns = np.arange(layers + 1)
    for kind in at_host_start:
        value = np.maximum(best[:, None], block[kind])  # [a, i]
        choice = np.argmin(value, axis=0)
        best = value[choice, columns]
        choices.append(choice)
    if not math.isfinite(best[layers]):
        return None
    cut, end = [], layers
    for choice in reversed(choices):
        first = int(choice[end])
        cut.append((first, end - 1))
        end = first
    return tuple(cut[::-1])


def _least_memory(plans: Sequence[RangePlan], held: int) -> RangePlan:
    """The plan that needs the least memory holding `held` microbatches (then the fastest)."""
    return min(plans, key=lambda p: (p.state_bytes + p.activation_bytes(held), p.block_s))


def _fits(pipeline: Sequence[RangePlan], virtual_stages: int, shape: ClusterShape) -> bool:
    """Whether every group's memory (module docstring) is within the budget."""
    peaks = group_peak_bytes(pipeline, shape.microbatches, virtual_stages)
    return max(peaks) <= shape.memory_budget_bytes


def group_peak_bytes(
    pipeline: Sequence[RangePlan], microbatches: int, virtual_stages: int
) -> tuple[int, ...]:
    """Per device group of an interleaved pipeline (stage k on group k mod G): its stages'
    parameter state, the peak of their activations as the schedule holds them, and the largest
    transient of one backward (module docstring)."""
    groups = len(pipeline) // virtual_stages
    peaks = []
    for g in range(groups):
        chunks = pipeline[g::groups]
        activations = peak_activation_bytes(
            "1f1b", g, len(pipeline), microbatches, [p.kept_bytes for p in chunks], 0,
            virtual_stages,
        )  # fmt: skip
        peaks.append(
            sum(p.state_bytes for p in chunks)
            + activations
            + max(p.transient_bytes for p in chunks)
        )
    return tuple(peaks)


def _evaluate(
    pipeline: tuple[RangePlan, ...], virtual_stages: int, shape: ClusterShape, limit_s: float
) -> InterleavedPipeline | None:
    """The pipeline's simulated makespan, unless its bound already reaches `limit_s`."""
    groups = len(pipeline) // virtual_stages
    work_s = max(sum(p.block_s for p in pipeline[g::groups]) for g in range(groups))
    if shape.microbatches * work_s >= limit_s:
        return None
    model = pipeline_model(
        pipeline, shape.gpus_per_host, shape.hosts, shape.microbatches, "1f1b", 0, True,
        virtual_stages,
    )  # fmt: skip
    return InterleavedPipeline(pipeline, virtual_stages, simulate(model).makespan_s)
