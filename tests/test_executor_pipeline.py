"""The plan's schedules (plans/schedules.py) and the executor's merged dispatch order."""

from __future__ import annotations

import pytest

from executor.pipeline import schedule_blocks
from plans.schedules import Block, Kind, in_flight, stage_blocks


def _names(blocks: tuple[Block, ...]) -> list[str]:
    return [f"{'F' if b.kind is Kind.FORWARD else 'B'}{b.microbatch}" for b in blocks]


def test_gpipe_runs_every_forward_then_every_backward() -> None:
    assert _names(stage_blocks("gpipe", 0, 2, 3, training=True)) == [
        "F0", "F1", "F2", "B0", "B1", "B2",
    ]  # fmt: skip


def test_1f1b_fills_with_stages_minus_one_minus_index_forwards_then_alternates() -> None:
    # PipeDream-flush, 2 stages, 4 microbatches.
    assert _names(stage_blocks("1f1b", 0, 2, 4, training=True)) == [
        "F0", "F1", "B0", "F2", "B1", "F3", "B2", "B3",
    ]  # fmt: skip
    assert _names(stage_blocks("1f1b", 1, 2, 4, training=True)) == [
        "F0", "B0", "F1", "B1", "F2", "B2", "F3", "B3",
    ]  # fmt: skip


def test_a_deeper_warm_up_runs_more_forwards_first_and_holds_more() -> None:
    assert _names(stage_blocks("1f1b", 0, 2, 4, training=True, warmup_extra=1)) == [
        "F0", "F1", "F2", "B0", "F3", "B1", "B2", "B3",
    ]  # fmt: skip
    assert in_flight("1f1b", 0, 2, 4, warmup_extra=1) == 3


@pytest.mark.parametrize("stages, microbatches", [(1, 1), (2, 4), (3, 2), (4, 8)])
def test_1f1b_keeps_at_most_stages_minus_index_microbatches_in_flight(
    stages: int, microbatches: int
) -> None:
    for stage in range(stages):
        assert in_flight("1f1b", stage, stages, microbatches) == min(stages - stage, microbatches)
        assert in_flight("gpipe", stage, stages, microbatches) == microbatches


@pytest.mark.parametrize("warmup_extra", [0, 1, 3])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("stages, microbatches", [(1, 3), (2, 4), (3, 5), (4, 2)])
def test_merged_schedule_respects_every_dependency_and_each_stage_order(
    schedule: str, stages: int, microbatches: int, warmup_extra: int
) -> None:
    ticks = schedule_blocks(stages, microbatches, schedule, True, warmup_extra)
    when = {block: tick for tick, blocks in enumerate(ticks) for block in blocks}
    assert len(when) == 2 * stages * microbatches
    for block, tick in when.items():
        if block.kind is Kind.FORWARD and block.stage:
            assert when[Block(block.stage - 1, Kind.FORWARD, block.microbatch)] < tick
        if block.kind is Kind.BACKWARD:
            assert when[Block(block.stage, Kind.FORWARD, block.microbatch)] < tick
            if block.stage < stages - 1:
                assert when[Block(block.stage + 1, Kind.BACKWARD, block.microbatch)] < tick
    for stage in range(stages):
        mine = sorted((b for b in when if b.stage == stage), key=when.__getitem__)
        expected = stage_blocks(schedule, stage, stages, microbatches, True, warmup_extra)
        assert tuple(mine) == expected


def test_inference_runs_forwards_only_pipelined_one_tick_apart() -> None:
    ticks = schedule_blocks(2, 3, "1f1b", training=False)
    assert [[str(b) for b in tick] for tick in ticks] == [
        ["F0@0"], ["F1@0", "F0@1"], ["F2@0", "F1@1"], ["F2@1"],
    ]  # fmt: skip


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule"):
        stage_blocks("zigzag", 0, 2, 2, training=True)
