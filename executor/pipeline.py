"""The iteration's blocks in the order one controller dispatches them.

Each stage's own order is the plan's schedule (`plans/schedules.py`, the one definition the
estimate and `show` simulate too). The executor has one controller for all stages, so the
stage orders are merged into one list by simulated clock ticks: at each tick every stage whose
next block is ready (its inputs were produced at an earlier tick) runs it. JAX dispatches
asynchronously, so stages on disjoint devices overlap as they would with one controller per
stage. Inference runs forwards only.
"""

from __future__ import annotations

from plans.schedules import Block, Kind, stage_blocks


def schedule_blocks(
    stages: int, microbatches: int, schedule: str, training: bool, warmup_extra: int = 0
) -> tuple[tuple[Block, ...], ...]:
    """Every block of one iteration, grouped by clock tick, in dependency order.

    Forward (k, m) needs forward (k - 1, m); backward (k, m) needs forward (k, m) and backward
    (k + 1, m) (the last stage's backward starts from its own forward: the loss is there)."""
    orders = [
        stage_blocks(schedule, k, stages, microbatches, training, warmup_extra)
        for k in range(stages)
    ]
    position = [0] * stages
    done: set[Block] = set()
    ticks: list[tuple[Block, ...]] = []
    total = sum(len(order) for order in orders)
    while len(done) < total:
        ready = []
        for k, order in enumerate(orders):
            if position[k] == len(order):
                continue
            block = order[position[k]]
            if all(need in done for need in _needs(block, stages)):
                ready.append(block)
        if not ready:  # cannot happen for the schedules of plans/schedules.py
            raise RuntimeError(f"the {schedule} schedule deadlocks at {sorted(map(str, done))}")
        for block in ready:
            position[block.stage] += 1
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
