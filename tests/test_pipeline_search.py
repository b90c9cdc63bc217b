"""The pipeline search (planner/pipeline_search.py) against brute force: on small random
instances its choice has the least simulated makespan among every stage cut and submesh
assignment of the candidates."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from test_pipeshard import cluster

from cost_models.mesh import logical_mesh
from planner.inter_op import Candidate, dp_pipelines
from planner.pipeline_search import pipeline_model, search_pipeline
from planner.placement import Start, fits_at, offsets, starts_as
from planner.stage_costs import RangePlan
from plans.timeline import simulate

_CLUSTER = cluster(2, 4, 1e10)  # for the logical meshes only


def _submeshes(hosts: int, gpus_per_host: int) -> list[tuple[int, int]]:
    inside = [(1, n) for n in (1, 2, 4) if n < gpus_per_host]
    return [*inside, *((h, gpus_per_host) for h in range(1, hosts + 1))]


@st.composite
def _instances(draw: st.DrawFn) -> tuple[list[Candidate], list[RangePlan], int, int, int, int]:
    layers = draw(st.integers(2, 6))
    hosts = draw(st.sampled_from([1, 2]))
    gpus_per_host = draw(st.sampled_from([2, 4]))
    microbatches = draw(st.sampled_from([1, 2, 3, 4, 8]))
    time = st.floats(0.1, 4.0)
    candidates: list[Candidate] = []
    plans: list[RangePlan] = []
    for first in range(layers):
        for last in range(first, min(layers, first + 3)):  # stages of up to 3 layers
            for index, submesh in enumerate(_submeshes(hosts, gpus_per_host)):
                devices = submesh[0] * submesh[1]
                whole = submesh[1] == gpus_per_host
                starts = [Start.ANYWHERE] if first == 0 else [Start.HOST_START, Start.INSIDE_HOST]
                for start in starts:
                    if whole and start is Start.INSIDE_HOST:
                        continue
                    forward, backward = draw(time), draw(time)
                    # A cut that starts a host is an inter-host transfer: slower.
                    receive = 0.0 if first == 0 else draw(st.floats(0.0, 6.0))
                    if start is Start.HOST_START and first > 0:
                        receive *= 2
                    sync = draw(st.floats(0.0, 3.0))
                    plan = RangePlan(
                        first=first,
                        last=last,
                        submesh=submesh,
                        mesh=logical_mesh(_CLUSTER, submesh, submesh),
                        level=0,
                        time_s=forward + backward + receive,
                        forward_s=forward,
                        backward_s=backward,
                        communication_s=0.0,
                        gradient_sync_s=sync,
                        optimizer_step_s=0.1,
                        state_bytes=0,
                        kept_bytes=0,
                        transient_bytes=0,
                        resharding_s=0.0,
                        transfer_s=receive,
                        start=start,
                    )
                    candidates.append(
                        Candidate(
                            first=first,
                            last=last,
                            devices=devices,
                            submesh=index,
                            time_s=plan.time_s,
                            iteration_s=plan.iteration_s,
                            max_following=draw(st.sampled_from([1, 2, 9])),
                            key=len(plans),
                            start=start,
                            whole_hosts=whole,
                        )
                    )
                    plans.append(plan)
    return candidates, plans, layers, hosts, gpus_per_host, microbatches


def _brute_force(
    candidates: list[Candidate],
    plans: list[RangePlan],
    layers: int,
    hosts: int,
    gpus_per_host: int,
    microbatches: int,
    schedule: str,
    stage_count: int | None = None,
) -> float:
    """The least simulated makespan over every sequence of candidates (of `stage_count` stages,
    where given) that covers the layers and the devices, placed in order, each holding what its
    place in the pipeline means."""
    by_first: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_first.setdefault(c.first, []).append(c)
    devices = hosts * gpus_per_host
    best = math.inf

    def extend(pipeline: tuple[Candidate, ...], layer: int, used: int) -> None:
        nonlocal best
        if layer == layers:
            if used != devices or stage_count not in (None, len(pipeline)):
                return
            if any(len(pipeline) - 1 - k > c.max_following for k, c in enumerate(pipeline)):
                return
            submeshes = [plans[c.key].submesh for c in pipeline]
            for offset, c, submesh in zip(offsets(submeshes), pipeline, submeshes, strict=True):
                if not fits_at(offset, submesh, gpus_per_host):
                    return
                if not starts_as(offset, c.start, gpus_per_host):
                    return
            model = pipeline_model(
                [plans[c.key] for c in pipeline], gpus_per_host, hosts, microbatches, schedule
            )
            best = min(best, simulate(model).makespan_s)
            return
        for c in by_first.get(layer, []):
            if used + c.devices <= devices:
                extend((*pipeline, c), c.last + 1, used + c.devices)

    extend((), 0, 0)
    return best


@settings(max_examples=40, deadline=None, derandomize=True)
@given(_instances(), st.sampled_from(["1f1b", "gpipe"]))
def test_the_search_finds_the_least_simulated_makespan(
    instance: tuple[list[Candidate], list[RangePlan], int, int, int, int], schedule: str
) -> None:
    candidates, plans, layers, hosts, gpus_per_host, microbatches = instance
    expected = _brute_force(candidates, plans, layers, hosts, gpus_per_host, microbatches, schedule)
    starting = [
        s.stages
        for s in dp_pipelines(
            candidates, layers, hosts * gpus_per_host, microbatches, gpus_per_host
        )
    ]
    found = search_pipeline(
        candidates, plans, starting, layers, gpus_per_host, hosts, microbatches, schedule
    )
    if math.isinf(expected):
        assert found is None
        return
    assert found is not None and found.proven
    assert found.makespan_s == expected or math.isclose(found.makespan_s, expected, rel_tol=1e-12)
    # What it reports is the simulation of what it chose.
    model = pipeline_model(
        [plans[c.key] for c in found.stages], gpus_per_host, hosts, microbatches, schedule
    )
    assert simulate(model).makespan_s == found.makespan_s


@settings(max_examples=25, deadline=None, derandomize=True)
@given(_instances(), st.integers(1, 4))
def test_the_search_at_a_pinned_stage_count_finds_the_least_makespan_of_that_count(
    instance: tuple[list[Candidate], list[RangePlan], int, int, int, int], stage_count: int
) -> None:
    candidates, plans, layers, hosts, gpus_per_host, microbatches = instance
    expected = _brute_force(
        candidates, plans, layers, hosts, gpus_per_host, microbatches, "1f1b", stage_count
    )
    devices = hosts * gpus_per_host
    solutions = dp_pipelines(candidates, layers, devices, microbatches, gpus_per_host, stage_count)
    found = search_pipeline(
        candidates, plans, [s.stages for s in solutions], layers, gpus_per_host, hosts,
        microbatches, "1f1b", stage_count=stage_count,
    )  # fmt: skip
    if math.isinf(expected):
        assert found is None
        return
    assert found is not None and found.proven and len(found.stages) == stage_count
    assert math.isclose(found.makespan_s, expected, rel_tol=1e-12)


def test_brute_force_sees_every_cut() -> None:
    # The oracle itself, on one host of 2 GPUs and two layers: the pipelines are one stage on
    # 2 GPUs, or two stages of one GPU each.
    candidates, plans = [], []
    for first, last, submesh in [(0, 1, (1, 2)), (0, 0, (1, 1)), (1, 1, (1, 1))]:
        devices = submesh[1]
        plan = RangePlan(
            first, last, submesh, logical_mesh(_CLUSTER, submesh, submesh), 0,
            time_s=3.0 if devices == 2 else 1.0, forward_s=1.0 if devices == 2 else 0.5,
            backward_s=2.0 if devices == 2 else 0.5, communication_s=0.0, gradient_sync_s=0.0,
            optimizer_step_s=0.0, state_bytes=0, kept_bytes=0, transient_bytes=0,
            resharding_s=0.0, transfer_s=0.0,
        )  # fmt: skip
        candidates.append(
            Candidate(
                first,
                last,
                devices,
                0,
                plan.time_s,
                0.0,
                9,
                key=len(plans),
                whole_hosts=devices == 2,
            )
        )
        plans.append(plan)
    # One stage: 2 microbatches of 3 s blocks, 6 s. Two stages of 1 s blocks: (2 + 2 - 1) x 1 s.
    assert _brute_force(candidates, plans, 2, 1, 2, 2, "1f1b") == 3.0
    del candidates[1:]
    assert _brute_force(candidates, plans, 2, 1, 2, 2, "1f1b") == 6.0
