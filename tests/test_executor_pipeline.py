"""The executor's microbatch schedules (pure Python: no jax needed)."""

from __future__ import annotations

import pytest

from executor.pipeline import Task, schedule_tasks, stage_order


def _names(tasks: tuple[Task, ...]) -> list[str]:
    return [f"{'B' if t.backward else 'F'}{t.microbatch}" for t in tasks]


def test_gpipe_runs_every_forward_then_every_backward_in_reverse() -> None:
    assert _names(stage_order(0, 2, 3, "gpipe", training=True)) == [
        "F0", "F1", "F2", "B2", "B1", "B0",
    ]  # fmt: skip


def test_1f1b_fills_with_stages_minus_one_minus_index_forwards_then_alternates() -> None:
    # PipeDream-flush, 2 stages, 4 microbatches.
    assert _names(stage_order(0, 2, 4, "1f1b", training=True)) == [
        "F0", "F1", "B0", "F2", "B1", "F3", "B2", "B3",
    ]  # fmt: skip
    assert _names(stage_order(1, 2, 4, "1f1b", training=True)) == [
        "F0", "B0", "F1", "B1", "F2", "B2", "F3", "B3",
    ]  # fmt: skip


@pytest.mark.parametrize("stages, microbatches", [(1, 1), (2, 4), (3, 2), (4, 8)])
def test_1f1b_keeps_at_most_stages_minus_index_microbatches_in_flight(
    stages: int, microbatches: int
) -> None:
    for stage in range(stages):
        in_flight = peak = 0
        for task in stage_order(stage, stages, microbatches, "1f1b", training=True):
            in_flight += -1 if task.backward else 1
            peak = max(peak, in_flight)
        assert peak == min(stages - stage, microbatches)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages, microbatches", [(1, 3), (2, 4), (3, 5), (4, 2)])
def test_merged_schedule_respects_every_dependency_and_each_stage_order(
    schedule: str, stages: int, microbatches: int
) -> None:
    ticks = schedule_tasks(stages, microbatches, schedule, training=True)
    when = {task: tick for tick, tasks in enumerate(ticks) for task in tasks}
    assert len(when) == 2 * stages * microbatches
    for task, tick in when.items():
        if not task.backward and task.stage:
            assert when[Task(task.stage - 1, task.microbatch, False)] < tick
        if task.backward:
            assert when[Task(task.stage, task.microbatch, False)] < tick
            if task.stage < stages - 1:
                assert when[Task(task.stage + 1, task.microbatch, True)] < tick
    for stage in range(stages):
        mine = sorted((t for t in when if t.stage == stage), key=when.__getitem__)
        assert tuple(mine) == stage_order(stage, stages, microbatches, schedule, training=True)


def test_inference_runs_forwards_only_pipelined_one_tick_apart() -> None:
    ticks = schedule_tasks(2, 3, "1f1b", training=False)
    assert [[str(t) for t in tick] for tick in ticks] == [
        ["F0@0"], ["F1@0", "F0@1"], ["F2@0", "F1@1"], ["F2@1"],
    ]  # fmt: skip


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule"):
        stage_order(0, 2, 2, "interleaved", training=True)
