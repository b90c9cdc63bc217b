"""The microbatch schedule: which stage runs which microbatch, forward or backward, in order.

Each stage's own order follows the plan's schedule:

- GPipe: every microbatch forward, then every microbatch backward in reverse order;
- 1F1B (PipeDream-flush): stage i of S runs min(S - 1 - i, B) forwards to fill the pipeline,
  then alternates one forward and one backward, then drains the remaining backwards; at most
  S - i microbatches are in flight on stage i.

The executor has one controller for all stages, so the stage orders are merged into one task
list by simulated clock ticks: at each tick every stage whose next task is ready (its inputs
were produced at an earlier tick) runs it. JAX dispatches asynchronously, so stages on disjoint
devices overlap as they would with one controller per stage. Inference runs forwards only.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("gpipe", "1f1b")


@dataclass(frozen=True)
class Task:
    stage: int
    microbatch: int
    backward: bool

    def __str__(self) -> str:
        return f"{'B' if self.backward else 'F'}{self.microbatch}@{self.stage}"


def stage_order(
    stage: int, stages: int, microbatches: int, schedule: str, training: bool
) -> tuple[Task, ...]:
    """The tasks of one stage, in the order it runs them."""
    forwards = [Task(stage, m, False) for m in range(microbatches)]
    if not training:
        return tuple(forwards)
    backwards = [Task(stage, m, True) for m in range(microbatches)]
    if schedule == "gpipe":
        return tuple(forwards + backwards[::-1])
    if schedule != "1f1b":
        raise ValueError(f"expected a schedule in {SCHEDULES}, found {schedule!r}")
    warmup = min(stages - 1 - stage, microbatches)
    order = forwards[:warmup]
    for m in range(warmup, microbatches):
        order += [forwards[m], backwards[m - warmup]]
    order += backwards[microbatches - warmup :]
    return tuple(order)


def schedule_tasks(
    stages: int, microbatches: int, schedule: str, training: bool
) -> tuple[tuple[Task, ...], ...]:
    """Every task of one iteration, grouped by clock tick, in dependency order.

    Forward (i, m) needs forward (i - 1, m); backward (i, m) needs forward (i, m) and backward
    (i + 1, m) (the last stage's backward starts from its own forward: the loss is there).
    """
    orders = [stage_order(i, stages, microbatches, schedule, training) for i in range(stages)]
    position = [0] * stages
    done: set[Task] = set()
    ticks: list[tuple[Task, ...]] = []
    total = sum(len(order) for order in orders)
    while len(done) < total:
        ready = []
        for i, order in enumerate(orders):
            if position[i] == len(order):
                continue
            task = order[position[i]]
            if all(need in done for need in _needs(task, stages)):
                ready.append(task)
        if not ready:  # cannot happen for the two schedules above; guards a bad order
            raise RuntimeError(f"the {schedule} schedule deadlocks at {sorted(map(str, done))}")
        for task in ready:
            position[task.stage] += 1
        done.update(ready)
        ticks.append(tuple(ready))
    return tuple(ticks)


def _needs(task: Task, stages: int) -> list[Task]:
    if not task.backward:
        return [Task(task.stage - 1, task.microbatch, False)] if task.stage else []
    needs = [Task(task.stage, task.microbatch, False)]
    if task.stage < stages - 1:
        needs.append(Task(task.stage + 1, task.microbatch, True))
    return needs
