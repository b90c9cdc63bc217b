"""The plan's schedules (plans/schedules.py) and the executor's merged dispatch order."""

from __future__ import annotations

import pytest

from executor.pipeline import schedule_blocks
from plans.schedules import (
    Block,
    Kind,
    device_blocks,
    in_flight,
    peak_activation_bytes,
    schedule_problem,
)


def _names(blocks: tuple[Block, ...]) -> list[str]:
    return [f"{'F' if b.kind is Kind.FORWARD else 'B'}{b.microbatch}" for b in blocks]


def test_gpipe_runs_every_forward_then_every_backward() -> None:
    assert _names(device_blocks("gpipe", 0, 2, 3, training=True)) == [
        "F0", "F1", "F2", "B0", "B1", "B2",
    ]  # fmt: skip


def test_1f1b_fills_with_stages_minus_one_minus_index_forwards_then_alternates() -> None:
    # PipeDream-flush, 2 stages, 4 microbatches.
    assert _names(device_blocks("1f1b", 0, 2, 4, training=True)) == [
        "F0", "F1", "B0", "F2", "B1", "F3", "B2", "B3",
    ]  # fmt: skip
    assert _names(device_blocks("1f1b", 1, 2, 4, training=True)) == [
        "F0", "B0", "F1", "B1", "F2", "B2", "F3", "B3",
    ]  # fmt: skip


def test_a_deeper_warm_up_runs_more_forwards_first_and_holds_more() -> None:
    assert _names(device_blocks("1f1b", 0, 2, 4, training=True, warmup_extra=1)) == [
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
        expected = device_blocks(schedule, stage, stages, microbatches, True, warmup_extra)
        assert tuple(mine) == expected


def test_inference_runs_forwards_only_pipelined_one_tick_apart() -> None:
    ticks = schedule_blocks(2, 3, "1f1b", training=False)
    assert [[str(b) for b in tick] for tick in ticks] == [
        ["F0@0"], ["F1@0", "F0@1"], ["F2@0", "F1@1"], ["F2@1"],
    ]  # fmt: skip


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule"):
        device_blocks("zigzag", 0, 2, 2, training=True)


def test_interleaved_1f1b_follows_megatron_lm_order() -> None:
    # 2 groups, 2 virtual stages each (stages 0, 2 on group 0; 1, 3 on group 1), 4
    # microbatches: groups of 2 microbatches go through chunk 0, then chunk 1; group 0 warms up
    # with 2 (2 - 0 - 1) + (2 - 1) 2 = 4 forwards, group 1 with 2. Megatron-LM's
    # forward_backward_pipelining_with_interleaving, traced by hand.
    assert " ".join(map(str, device_blocks("1f1b", 0, 4, 4, True, 0, 2))) == (
        "F0@0 F1@0 F0@2 F1@2 F2@0 B0@2 F3@0 B1@2 F2@2 B0@0 F3@2 B1@0 B2@2 B3@2 B2@0 B3@0"
    )
    assert " ".join(map(str, device_blocks("1f1b", 1, 4, 4, True, 0, 2))) == (
        "F0@1 F1@1 F0@3 B0@3 F1@3 B1@3 F2@1 B0@1 F3@1 B1@1 F2@3 B2@3 F3@3 B3@3 B2@1 B3@1"
    )
    assert [in_flight("1f1b", k, 4, 4, 0, 2) for k in range(4)] == [4, 3, 2, 1]


def test_interleaved_activation_peak_weighs_each_stage_by_what_it_keeps() -> None:
    # Group 0 of the order above, stage 0 keeping 1 byte a microbatch, stage 2 keeping 10:
    # 1, 2, 12, 22, 23 (F2@0), 13, 14, 4, 14, 13, 23 (F3@2), ...: the peak is 23.
    assert peak_activation_bytes("1f1b", 0, 4, 4, [1, 10], 0, 2) == 23


@pytest.mark.parametrize(
    "groups, virtual_stages, microbatches", [(2, 2, 2), (2, 3, 4), (3, 2, 6), (4, 2, 8), (4, 4, 4)]
)
def test_interleaved_schedule_respects_every_dependency_and_each_group_order(
    groups: int, virtual_stages: int, microbatches: int
) -> None:
    stages = groups * virtual_stages
    ticks = schedule_blocks(stages, microbatches, "1f1b", True, 0, virtual_stages)
    when = {block: tick for tick, blocks in enumerate(ticks) for block in blocks}
    assert len(when) == 2 * stages * microbatches
    for block, tick in when.items():
        if block.kind is Kind.FORWARD and block.stage:
            assert when[Block(block.stage - 1, Kind.FORWARD, block.microbatch)] < tick
        if block.kind is Kind.BACKWARD and block.stage < stages - 1:
            assert when[Block(block.stage + 1, Kind.BACKWARD, block.microbatch)] < tick
    for group in range(groups):
        mine = sorted((b for b in when if b.stage % groups == group), key=when.__getitem__)
        assert tuple(mine) == device_blocks(
            "1f1b", group, stages, microbatches, True, 0, virtual_stages
        )


@pytest.mark.parametrize(
    "args, field",
    [
        (("gpipe", 4, 4, 0, 2), "schedule"),
        (("1f1b", 4, 3, 0, 2), "microbatches"),
        (("1f1b", 4, 4, 1, 2), "warmup_extra"),
        (("1f1b", 6, 4, 0, 4), "virtual_stages"),
    ],
)
def test_an_interleaved_schedule_that_cannot_run_names_the_setting(
    args: tuple[str, int, int, int, int], field: str
) -> None:
    problem = schedule_problem(*args)
    assert problem is not None and problem.field == field
    with pytest.raises(ValueError, match=field):
        device_blocks(args[0], 0, args[1], args[2], True, args[3], args[4])
