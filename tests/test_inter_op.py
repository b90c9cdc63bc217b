"""The stage/mesh DP against exhaustive enumeration, and the pipeline formula by hand."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.inter_op import Candidate, best_pipeline, dp_pipelines, pipeline_time_s
from planner.placement import Start, fits_at, starts_as


def test_pipeline_formula_by_hand() -> None:
    stages = [
        Candidate(first=k, last=k, devices=1, submesh=0, time_s=t, iteration_s=0.0, max_following=9)
        for k, t in enumerate([1.0, 2.0, 3.0, 2.0])
    ]
    # 1 + 2 + 3 + 2 = 8, plus (10 - 1) x the slowest stage (3 s): 35 s.
    assert pipeline_time_s(stages, microbatches=10) == 35.0


def _exhaustive(
    candidates: list[Candidate],
    num_layers: int,
    num_devices: int,
    microbatches: int,
    gpus_per_host: int | None = None,
    stage_count: int | None = None,
) -> float | None:
    """Every sequence of candidates (of `stage_count` stages, where given) that covers the
    layers in order with exactly all devices, each placed in order where it fits and starts
    as it says (`planner/placement.py`)."""
    g = gpus_per_host or num_devices
    best = None
    by_first: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_first.setdefault(c.first, []).append(c)

    def extend(first: int, devices: int, chosen: list[Candidate]) -> None:
        nonlocal best
        if first == num_layers:
            if devices == 0 and stage_count in (None, len(chosen)):
                stages = len(chosen)
                if all(c.max_following >= stages - 1 - k for k, c in enumerate(chosen)):
                    total = pipeline_time_s(chosen, microbatches)
                    best = total if best is None else min(best, total)
            return
        offset = num_devices - devices
        for c in by_first.get(first, []):
            submesh = (c.devices // g, g) if c.whole_hosts else (1, c.devices)
            if (
                c.devices <= devices
                and fits_at(offset, submesh, g)
                and starts_as(offset, c.start, g)
            ):
                extend(c.last + 1, devices - c.devices, [*chosen, c])

    extend(0, num_devices, [])
    return best


@st.composite
def instances(draw: st.DrawFn) -> tuple[list[Candidate], int, int, int]:
    num_layers = draw(st.integers(1, 6))
    num_devices = draw(st.sampled_from([1, 2, 4, 8]))
    submeshes = [n for n in (1, 2, 4, 8) if n <= num_devices]
    time = st.integers(1, 40).map(lambda x: x / 4)
    candidates = []
    for first, last in itertools.combinations_with_replacement(range(num_layers), 2):
        for index, devices in enumerate(submeshes):
            if draw(st.booleans()) or devices == num_devices:
                candidates.append(
                    Candidate(
                        first=first,
                        last=last,
                        devices=devices,
                        submesh=index,
                        time_s=draw(time),
                        iteration_s=draw(st.integers(0, 4).map(lambda x: x / 8)),
                        max_following=draw(st.integers(0, 6)),
                        key=len(candidates),
                    )
                )
    return candidates, num_layers, num_devices, draw(st.integers(1, 12))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(instances())
def test_dp_equals_exhaustive_enumeration(
    instance: tuple[list[Candidate], int, int, int],
) -> None:
    candidates, num_layers, num_devices, microbatches = instance
    expected = _exhaustive(candidates, num_layers, num_devices, microbatches)
    found = best_pipeline(candidates, num_layers, num_devices, microbatches)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert found.iteration_s == pytest.approx(expected)
    assert pipeline_time_s(found.stages, microbatches) == pytest.approx(found.iteration_s)
    assert sum(stage.devices for stage in found.stages) == num_devices
    assert [s.first for s in found.stages] == [0] + [s.last + 1 for s in found.stages[:-1]]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(instances(), st.integers(1, 6))
def test_dp_at_a_pinned_stage_count_equals_exhaustive_enumeration(
    instance: tuple[list[Candidate], int, int, int], stage_count: int
) -> None:
    candidates, num_layers, num_devices, microbatches = instance
    expected = _exhaustive(candidates, num_layers, num_devices, microbatches, None, stage_count)
    found = dp_pipelines(candidates, num_layers, num_devices, microbatches, None, stage_count)
    if expected is None:
        assert found == []
        return
    assert all(len(solution.stages) == stage_count for solution in found)
    assert found[0].iteration_s == pytest.approx(expected)


@st.composite
def placed_instances(draw: st.DrawFn) -> tuple[list[Candidate], int, int, int, int]:
    """Two or four hosts of 2 or 4 GPUs; in-host candidates that start at a host's start or
    inside a host (each with its own time, as receiving over another link), whole-host ones."""
    num_layers = draw(st.integers(1, 5))
    gpus = draw(st.sampled_from([2, 4]))
    hosts = draw(st.sampled_from([2, 4]))
    num_devices = gpus * hosts
    shapes = [(1, m, False) for m in (1, 2) if m < gpus] + [
        (h, gpus, True) for h in range(1, hosts + 1)
    ]
    time = st.integers(1, 40).map(lambda x: x / 4)
    candidates = []
    for first, last in itertools.combinations_with_replacement(range(num_layers), 2):
        for index, (h, m, whole) in enumerate(shapes):
            starts = [Start.HOST_START] if whole else [Start.HOST_START, Start.INSIDE_HOST]
            for start in starts if first else [Start.ANYWHERE]:
                if draw(st.booleans()) or (whole and h == hosts):
                    candidates.append(
                        Candidate(
                            first=first,
                            last=last,
                            devices=h * m,
                            submesh=index,
                            time_s=draw(time),
                            iteration_s=draw(st.integers(0, 4).map(lambda x: x / 8)),
                            max_following=draw(st.integers(0, 6)),
                            key=len(candidates),
                            start=start,
                            whole_hosts=whole,
                        )
                    )
    return candidates, num_layers, num_devices, draw(st.integers(1, 12)), gpus


@settings(max_examples=200, deadline=None, derandomize=True)
@given(placed_instances())
def test_dp_with_placement_equals_exhaustive_enumeration(
    instance: tuple[list[Candidate], int, int, int, int],
) -> None:
    candidates, num_layers, num_devices, microbatches, gpus = instance
    expected = _exhaustive(candidates, num_layers, num_devices, microbatches, gpus)
    found = best_pipeline(candidates, num_layers, num_devices, microbatches, gpus)
    if expected is None:
        assert found is None
        return
    assert found is not None
    assert found.iteration_s == pytest.approx(expected)


# --- the microbatch search -------------------------------------------------------------------


def _search(batch_size: int, objective: dict[int, float]) -> list[int]:
    """The counts the microbatch search tries, in order, when each count's objective is given."""
    from planner.microbatches import search_counts

    return list(search_counts(batch_size, None, objective.__getitem__))


@settings(max_examples=300)
@given(
    batch_size=st.sampled_from([1, 6, 64, 96, 1000, 1024, 1536]),
    target=st.floats(0.5, 4000.0),
    slope_below=st.floats(0.1, 10.0),
    infeasible_below=st.integers(0, 64),
)
def test_the_microbatch_search_finds_the_best_divisor_of_a_unimodal_objective(
    batch_size: int, target: float, slope_below: float, infeasible_below: int
) -> None:
    """Unimodal in log(count), with the smallest counts infeasible (too much memory)."""
    import math

    from planner.microbatches import divisors

    def value(count: int) -> float:
        if count < infeasible_below:
            return math.inf
        distance = math.log(count / target)
        return -slope_below * distance if distance < 0 else distance

    objective = {count: value(count) for count in divisors(batch_size)}
    tried = _search(batch_size, objective)
    assert len(tried) == len(set(tried))
    assert min(objective[c] for c in tried) == min(objective.values())


def test_the_microbatch_search_tries_powers_of_four_then_refines_around_the_best() -> None:
    objective = {count: abs(math.log2(count) - math.log2(100)) for count in range(1, 1025)}
    assert _search(1024, objective) == [1, 4, 16, 64, 256, 1024, 32, 128]
