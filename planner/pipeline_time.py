"""The pipeline time model: what an iteration of a pipeline of stages costs.

With B microbatches and stages k = 1..S, where one microbatch takes t_k on stage k (forward,
backward, in-stage collectives and receiving from the stage before) and the stage's
once-per-iteration work (gradient sync, optimizer step) takes u_k,

    T = sum_k t_k + (B - 1) max_k t_k + sum_k u_k

the fill and drain of the pipeline plus B - 1 beats of its slowest stage (Alpa, OSDI'22, eq. 2),
with the once-per-iteration work charged one stage after another. It is the DP's ranking
(`planner/inter_op.py`) and inference's objective; a training plan's estimate is the simulated
makespan of its schedule (`plans/timeline.py`), which the search ranks its pipelines by
(`planner/pipeline_search.py`; docs/DESIGN.md section 5.5). Inference runs forwards only and has
no once-per-iteration work.

Memory follows the schedule: with 1F1B (PipeDream-flush) stage k of S holds the activations of
min(S - k, B) microbatches at once; with GPipe every stage holds all B.
"""

from __future__ import annotations

from collections.abc import Sequence

from planner.options import Schedule
from plans.schedules import in_flight as schedule_in_flight


def pipeline_iteration_s(
    microbatch_s: Sequence[float], once_per_iteration_s: Sequence[float], microbatches: int
) -> float:
    """T = sum t + (B - 1) max t + sum u."""
    return (
        sum(microbatch_s)
        + (microbatches - 1) * max(microbatch_s, default=0.0)
        + sum(once_per_iteration_s)
    )


def in_flight(
    stage_index: int,
    num_stages: int,
    microbatches: int,
    schedule: Schedule,
    warmup_extra: int = 0,
    virtual_stages: int = 1,
) -> int:
    """Microbatches whose activations a stage holds at once, as the schedule's blocks say
    (`plans/schedules.py`): 1F1B min(S - k + w, B), the last stage 1; GPipe B."""
    return schedule_in_flight(
        str(schedule), stage_index, num_stages, microbatches, warmup_extra, virtual_stages
    )
