"""Pipeline schedules as data: the blocks each stage runs, in order, for one iteration.

One definition for every reader: the plan's estimate and the timeline `show` draws simulate it
(`plans/timeline.py`), the planner charges the memory it implies (`in_flight`), and the
executor runs it (`executor/pipeline.py`). A block is (stage, kind, microbatch); a stage runs its
blocks one at a time, in the order listed.

- GPipe: every forward, then every backward (microbatches in order).
- 1F1B (PipeDream-flush, Narayanan et al., SC'21): stage k of S warms up with min(S - k - 1 + w,
  B) forwards, then alternates one forward and one backward, then drains the remaining
  backwards. `w` (`warmup_extra`, default 0) deepens the warm-up of every stage but the last:
  more microbatches in flight, more activations held, more room for the round trip to the
  stages after it to hide. The last stage's backward needs nothing from later stages, so it
  follows its forward at once (a deeper warm-up there would only hold the gradient back).

Inference runs forwards only, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True)
class Block:
    """One block of work of a stage: the forward or backward of one microbatch."""

    stage: int
    kind: Kind
    microbatch: int

    def __str__(self) -> str:
        return f"{'F' if self.kind is Kind.FORWARD else 'B'}{self.microbatch}@{self.stage}"


SCHEDULES = ("1f1b", "gpipe")


def stage_blocks(
    schedule: str,
    stage: int,
    stages: int,
    microbatches: int,
    training: bool,
    warmup_extra: int = 0,
) -> tuple[Block, ...]:
    """The blocks stage `stage` of `stages` runs, in order."""
    forwards = [Block(stage, Kind.FORWARD, m) for m in range(microbatches)]
    if not training:
        return tuple(forwards)
    backwards = [Block(stage, Kind.BACKWARD, m) for m in range(microbatches)]
    if schedule == "gpipe":
        return (*forwards, *backwards)
    if schedule != "1f1b":
        raise ValueError(f"expected a schedule in {SCHEDULES}, found {schedule!r}")
    extra = warmup_extra if stage < stages - 1 else 0
    warm_up = min(stages - stage - 1 + extra, microbatches)
    order = forwards[:warm_up]
    for m in range(warm_up, microbatches):
        order += [forwards[m], backwards[m - warm_up]]
    order += backwards[microbatches - warm_up :]
    return tuple(order)


def in_flight(
    schedule: str,
    stage: int,
    stages: int,
    microbatches: int,
    warmup_extra: int = 0,
) -> int:
    """The most microbatches whose forward activations the stage holds at once (forwards run,
    backwards not yet), as its training blocks say: 1F1B min(S - k + w, B) (the last stage 1),
    GPipe B."""
    held = most = 0
    for block in stage_blocks(schedule, stage, stages, microbatches, True, warmup_extra):
        held += 1 if block.kind is Kind.FORWARD else -1
        most = max(most, held)
    return most
