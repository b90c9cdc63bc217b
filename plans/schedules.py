"""Pipeline schedules as data: the blocks each device group runs, in order, for one iteration.

One definition for every reader: the plan's estimate and the timeline `show` draws simulate it
(`plans/timeline.py`), the planner charges the memory it implies (`in_flight`,
`peak_activation_bytes`), and the executor runs it (`executor/pipeline.py`). A block is (stage,
kind, microbatch); a device group runs its blocks one at a time, in the order listed.

A pipeline of S stages on G = S / v device groups: with v = 1 (`virtual_stages`) stage k runs on
group k; with v > 1 (interleaved) group g runs the v stages g, g + G, ..., g + (v - 1) G, each a
contiguous chunk of layers (Megatron-LM's virtual pipeline stages, `--num-layers-per-virtual-
pipeline-stage`), so microbatch m crosses every group v times.

- GPipe: every forward, then every backward (microbatches in order).
- 1F1B (PipeDream-flush, Narayanan et al., SC'21): stage k of S warms up with min(S - k - 1 + w,
  B) forwards, then alternates one forward and one backward, then drains the remaining
  backwards. `w` (`warmup_extra`, default 0) deepens the warm-up of every stage but the last:
  more microbatches in flight, more activations held, more room for the round trip to the
  stages after it to hide. The last stage's backward needs nothing from later stages, so it
  follows its forward at once (a deeper warm-up there would only hold the gradient back).
- Interleaved 1F1B (v > 1; Narayanan et al., SC'21, section 2.2; Megatron-LM's
  `forward_backward_pipelining_with_interleaving`): group g runs B v forward blocks in the
  order of their index i = 0 .. B v - 1, where block i is chunk c = (i mod G v) div G of
  microbatch m = (i div G v) G + (i mod G); its backwards run in the same order with the chunks
  reversed (chunk v - 1 - c). It warms up with min(2 (G - g - 1) + (v - 1) G, B v) forwards,
  then alternates one forward and one backward, then drains. B must be a multiple of G (groups
  of G microbatches go through one chunk after another); no deeper warm-up.

Inference runs forwards only, in order (interleaved: in the order of i).
"""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True)
class ScheduleProblem:
    """Why a schedule cannot run as given: the setting at fault, what it must be, what it is."""

    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, found {self.found}"


def schedule_problem(
    schedule: str, stages: int, microbatches: int, warmup_extra: int = 0, virtual_stages: int = 1
) -> ScheduleProblem | None:
    """Why the schedule cannot run as given (fields named as in a plan's settings), or None."""
    if schedule not in SCHEDULES:
        return ScheduleProblem("schedule", f"one of {', '.join(SCHEDULES)}", repr(schedule))
    if virtual_stages < 1 or stages % virtual_stages:
        return ScheduleProblem(
            "virtual_stages", f"a divisor of the stage count {stages}", str(virtual_stages)
        )
    if virtual_stages == 1:
        return None
    groups = stages // virtual_stages
    if schedule != "1f1b":
        return ScheduleProblem("schedule", "1f1b with virtual stages", repr(schedule))
    if warmup_extra:
        return ScheduleProblem("warmup_extra", "0 with virtual stages", str(warmup_extra))
    if microbatches % groups:
        return ScheduleProblem(
            "microbatches",
            f"a multiple of the {groups} device groups of the interleaved schedule",
            str(microbatches),
        )
    return None


def device_blocks(
    schedule: str,
    group: int,
    stages: int,
    microbatches: int,
    training: bool,
    warmup_extra: int = 0,
    virtual_stages: int = 1,
) -> tuple[Block, ...]:
    """The blocks device group `group` runs, in order, in a pipeline of `stages` stages with
    `virtual_stages` of them on each group (module docstring)."""
    problem = schedule_problem(schedule, stages, microbatches, warmup_extra, virtual_stages)
    if problem is not None:
        raise ValueError(str(problem))
    if virtual_stages > 1:
        return _interleaved(group, stages // virtual_stages, virtual_stages, microbatches, training)
    forwards = [Block(group, Kind.FORWARD, m) for m in range(microbatches)]
    if not training:
        return tuple(forwards)
    backwards = [Block(group, Kind.BACKWARD, m) for m in range(microbatches)]
    if schedule == "gpipe":
        return (*forwards, *backwards)
    extra = warmup_extra if group < stages - 1 else 0
    warm_up = min(stages - group - 1 + extra, microbatches)
    return _one_forward_one_backward(forwards, backwards, warm_up)


def _interleaved(
    group: int, groups: int, chunks: int, microbatches: int, training: bool
) -> tuple[Block, ...]:
    """Interleaved 1F1B on one group (module docstring)."""
    per_round = groups * chunks
    forwards, backwards = [], []
    for i in range(microbatches * chunks):
        chunk = i % per_round // groups
        m = i // per_round * groups + i % groups
        forwards.append(Block(chunk * groups + group, Kind.FORWARD, m))
        backwards.append(Block((chunks - 1 - chunk) * groups + group, Kind.BACKWARD, m))
    if not training:
        return tuple(forwards)
    warm_up = min(2 * (groups - group - 1) + (chunks - 1) * groups, len(forwards))
    return _one_forward_one_backward(forwards, backwards, warm_up)


def _one_forward_one_backward(
    forwards: Sequence[Block], backwards: Sequence[Block], warm_up: int
) -> tuple[Block, ...]:
    order = list(forwards[:warm_up])
    for i in range(warm_up, len(forwards)):
        order += [forwards[i], backwards[i - warm_up]]
    order += backwards[len(forwards) - warm_up :]
    return tuple(order)


def group_of(stage: int, stages: int, virtual_stages: int = 1) -> int:
    """The device group that runs `stage`."""
    return stage % (stages // virtual_stages)


def in_flight(
    schedule: str,
    stage: int,
    stages: int,
    microbatches: int,
    warmup_extra: int = 0,
    virtual_stages: int = 1,
) -> int:
    """The most microbatches whose forward activations the stage holds at once (forwards run,
    backwards not yet), as its group's training blocks say: 1F1B min(S - k + w, B) (the last
    stage 1), GPipe B."""
    group = group_of(stage, stages, virtual_stages)
    order = device_blocks(schedule, group, stages, microbatches, True, warmup_extra, virtual_stages)
    held = most = 0
    for block in order:
        if block.stage == stage:
            held += 1 if block.kind is Kind.FORWARD else -1
            most = max(most, held)
    return most


def peak_activation_bytes(
    schedule: str,
    group: int,
    stages: int,
    microbatches: int,
    kept_bytes: Sequence[int],
    warmup_extra: int = 0,
    virtual_stages: int = 1,
) -> int:
    """The most activation bytes the group's devices hold at once, its stages holding
    `kept_bytes[c]` per microbatch in flight (c: the group's c-th stage, stage c G + group)."""
    groups = stages // virtual_stages
    held = most = 0
    order = device_blocks(schedule, group, stages, microbatches, True, warmup_extra, virtual_stages)
    for block in order:
        kept = kept_bytes[block.stage // groups]
        held += kept if block.kind is Kind.FORWARD else -kept
        most = max(most, held)
    return most
