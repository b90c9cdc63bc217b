"""The iteration's blocks in the order one controller dispatches them.

Each device group's own order is the plan's schedule (`plans/schedules.py`, the one definition
the estimate and `show` simulate too; a group is one stage, or the v stages an interleaved
schedule puts on it). The executor has one controller for all stages, so the group orders are
merged into one list by simulated clock ticks: at each tick every group whose next block is
ready (its inputs were produced at an earlier tick) runs it. JAX dispatches
asynchronously, so stages on disjoint devices overlap as they would with one controller per
stage. Inference runs forwards only.
"""

from __future__ import annotations

from plans.schedules import Block, Kind, device_blocks


def schedule_blocks(
    stages: int,
    microbatches: int,
    schedule: str,
    training: bool,
    warmup_extra: int = 0,
    virtual_stages: int = 1,
) -> tuple[tuple[Block, ...], ...]:
    """Every block of one iteration, grouped by clock tick, in dependency order.

    Forward (k, m) needs forward (k - 1, m); backward (k, m) needs forward (k, m) and backward
    (k + 1, m) (the last stage's backward starts from its own forward: the loss is there)."""
    groups = stages // virtual_stages
    orders = [
        device_blocks(schedule, g, stages, microbatches, training, warmup_extra, virtual_stages)
        for g in range(groups)
    ]
    position = [0] * groups
    done: set[Block] = set()
    ticks: list[tuple[Block, ...]] = []
    total = sum(len(order) for order in orders)
    while len(done) < total:
        ready = []
        for g, order in enumerate(orders):
            if position[g] == len(order):
                continue
            block = order[position[g]]
            if all(need in done for need in _needs(block, stages)):
                ready.append(block)
        if not ready:  # cannot happen for the schedules of plans/schedules.py
            raise RuntimeError(f"the {schedule} schedule deadlocks at {sorted(map(str, done))}")
        for block in ready:
            position[block.stage % groups] += 1
        done.update(ready)
        ticks.append(tuple(ready))
    return tuple(ticks)


def _needs(block: Block, stages: int) -> list[Block]:
    if block.kind is Kind.FORWARD:
        return [Block(block.stage - 1, Kind.FORWARD, block.microbatch)] if block.stage else []
    needs = [Block(block.stage, Kind.FORWARD, block.microbatch)]
    if block.stage < stages - 1:
        needs.append(Block(block.stage + 1, Kind.BACKWARD, block.microbatch))
    return needs
