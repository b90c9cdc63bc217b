"""When each stage runs which microbatch: the pipeline schedule of a plan, simulated.

Each stage runs its blocks in the schedule's order, one at a time; a block starts when its
stage is free and its input is there:

- forward of microbatch m on stage i: after the forward of m on stage i-1 and the transfer;
- backward of m on stage i: after the backward of m on stage i+1 and the transfer back (the
  last stage: after its own forward of m).

Orders per stage i of S, with B microbatches:

- GPipe: every forward, then every backward.
- 1F1B (PipeDream-flush): a warm-up of min(S-i-1, B) forwards, then one forward and one backward
  in turn, then the remaining backwards.

A block lasts the stage's forward (or backward) time of one microbatch plus its share of the
stage's in-stage communication (split in proportion to compute). Training ends each stage with
its once-per-iteration work (gradient sync and optimizer step). Inference runs forwards only.
"""

from __future__ import annotations

from dataclasses import dataclass

from plans.plan import Plan, Stage

FORWARD, BACKWARD, SYNC = "forward", "backward", "sync"


@dataclass(frozen=True)
class Block:
    stage: int  # position in plan.stages
    kind: str  # FORWARD, BACKWARD or SYNC
    microbatch: int  # -1 for SYNC
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    stages: int
    microbatches: int
    blocks: tuple[Block, ...]

    @property
    def makespan_s(self) -> float:
        return max((block.end_s for block in self.blocks), default=0.0)


def stage_order(
    schedule: str, stage: int, stages: int, microbatches: int, training: bool
) -> tuple[tuple[str, int], ...]:
    """The (kind, microbatch) blocks stage `stage` runs, in order."""
    forwards = [(FORWARD, m) for m in range(microbatches)]
    backwards = [(BACKWARD, m) for m in range(microbatches)] if training else []
    if schedule == "gpipe" or not training:
        return (*forwards, *backwards)
    warm_up = min(stages - stage - 1, microbatches)
    steady = [block for pair in zip(forwards[warm_up:], backwards, strict=False) for block in pair]
    return (*forwards[:warm_up], *steady, *backwards[microbatches - warm_up :])


def pipeline_timeline(plan: Plan) -> Timeline:
    count, microbatches = len(plan.stages), plan.settings.microbatches
    training = plan.settings.mode == "train"
    orders = [
        stage_order(plan.settings.schedule, i, count, microbatches, training) for i in range(count)
    ]
    hops = [_hop_s(plan, i) for i in range(count - 1)]
    ends: dict[tuple[int, str, int], float] = {}
    free_s = [0.0] * count
    blocks: list[Block] = []
    done = [0] * count
    while any(done[i] < len(orders[i]) for i in range(count)):
        progressed = False
        for i in range(count):
            while done[i] < len(orders[i]):
                kind, microbatch = orders[i][done[i]]
                ready_s = _ready_s(ends, hops, i, kind, microbatch, count)
                if ready_s is None:
                    break
                start_s = max(free_s[i], ready_s)
                free_s[i] = start_s + _duration_s(plan.stages[i], kind)
                ends[(i, kind, microbatch)] = free_s[i]
                blocks.append(Block(i, kind, microbatch, start_s, free_s[i]))
                done[i] += 1
                progressed = True
        if not progressed:
            raise ValueError(f"the {plan.settings.schedule} schedule cannot proceed")
    if training:
        blocks += [
            Block(i, SYNC, -1, free_s[i], free_s[i] + stage.time.once_per_iteration_s)
            for i, stage in enumerate(plan.stages)
            if stage.time.once_per_iteration_s > 0
        ]
    return Timeline(count, microbatches, tuple(blocks))


def _ready_s(
    ends: dict[tuple[int, str, int], float],
    hops: list[float],
    stage: int,
    kind: str,
    microbatch: int,
    count: int,
) -> float | None:
    """When the input of the block is there; None while it is not yet known."""
    if kind == FORWARD:
        if stage == 0:
            return 0.0
        before = ends.get((stage - 1, FORWARD, microbatch))
        return None if before is None else before + hops[stage - 1]
    if stage == count - 1:
        return ends.get((stage, FORWARD, microbatch))
    after = ends.get((stage + 1, BACKWARD, microbatch))
    return None if after is None else after + hops[stage]


def _hop_s(plan: Plan, stage: int) -> float:
    """Seconds to send one microbatch's boundary tensors from `stage` to the next."""
    return sum(
        t.time_s
        for t in plan.transfers
        if t.source_stage == stage and t.destination_stage == stage + 1
    )


def _duration_s(stage: Stage, kind: str) -> float:
    time = stage.time
    compute_s = time.forward_s + time.backward_s
    share = (time.forward_s if kind == FORWARD else time.backward_s) / compute_s if compute_s else 0
    own_s = time.forward_s if kind == FORWARD else time.backward_s
    return own_s + time.communication_s * share
