"""When each stage runs which block, and when each link carries which transfer: the schedule a
plan prescribes, simulated. The plan's estimate is this simulation's makespan, and `show` draws
it: one model of a schedule's time for every reader.

What runs where (docs/DESIGN.md section 5.5):

- each device group runs its blocks (`plans/schedules.py`) one at a time, in the schedule's
  order (a group is one stage, or with interleaving the v stages it holds); a block lasts the
  stage's forward (or backward) compute of one microbatch plus its share of the stage's
  in-stage collectives (split in proportion to compute): collectives inside a stage do not
  overlap its compute;
- a forward of microbatch m on stage k starts once m's activations have crossed the cut from
  stage k - 1; a backward once its gradient has crossed back from stage k + 1 (the last stage:
  after its own forward of m);
- a transfer across a cut starts when the block that made it ends and its link is free: it
  overlaps the compute of both stages. Links are shared resources: every inter-host send of a
  stage occupies the inter-host link of each host the sending stage sits on (a host's link
  carries the sends of all its stages, in both directions, one at a time); an intra-host send
  occupies the sending group's NVLink port in that direction;
- a stage's gradient sync starts as its last backward starts (gradients are reduced in buckets
  as the backward finishes them, layer by layer) and ends no earlier than that backward's end
  plus one layer's share of the sync; a sync that crosses hosts (the stage spans several)
  occupies their inter-host links, so it waits for, and delays, other traffic on them; syncs
  of different groups overlap unless they share a link, the syncs of one group's stages run
  one after another. A group's optimizer steps follow its last block and all its syncs;
- the iteration ends when every stage's step (inference: every block) has ended.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from plans.plan import Plan
from plans.schedules import Block as ScheduleBlock
from plans.schedules import Kind, device_blocks

FORWARD, BACKWARD, SYNC, STEP = "forward", "backward", "sync", "step"


@dataclass(frozen=True)
class StageModel:
    """What the simulation needs of one stage."""

    forward_s: float  # one microbatch's forward block, its share of the collectives included
    backward_s: float
    sync_s: float  # once per iteration: gradient reduction
    step_s: float  # once per iteration: the optimizer update
    layers: int  # for the last bucket of the sync: one layer's share
    hosts: tuple[int, ...]  # hosts the stage's devices are on


@dataclass(frozen=True)
class CutModel:
    """What crosses the cut between stage k and stage k + 1, per microbatch, one way."""

    forward_s: float  # activations, k -> k + 1
    backward_s: float  # their gradients, k + 1 -> k
    inter_host: bool  # over the inter-host links (else the intra-host one)


@dataclass(frozen=True)
class PipelineModel:
    stages: tuple[StageModel, ...]
    cuts: tuple[CutModel, ...]  # len(stages) - 1
    microbatches: int
    schedule: str
    training: bool
    warmup_extra: int = 0
    virtual_stages: int = 1  # stages per device group (interleaved 1F1B: more than 1)

    @property
    def groups(self) -> int:
        return len(self.stages) // self.virtual_stages


@dataclass(frozen=True)
class Slice:
    """Something that occupies a lane from start_s to end_s."""

    lane: str  # a group: "stage 2" ("stages 0,4" interleaved), or a link: "host 1 link"
    kind: str  # FORWARD, BACKWARD, SYNC, STEP, or "transfer"
    stage: int  # the stage it belongs to (a transfer: the sending stage)
    microbatch: int  # -1 for once-per-iteration work
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Timeline:
    stages: int
    microbatches: int
    blocks: tuple[Slice, ...]  # compute, sync and step, by stage
    transfers: tuple[Slice, ...]  # link occupancy
    lanes: tuple[str, ...] = ()  # the device groups' lanes, in order

    @property
    def makespan_s(self) -> float:
        return max((s.end_s for s in (*self.blocks, *self.transfers)), default=0.0)


def group_lane(group: int, groups: int, virtual_stages: int) -> str:
    """The lane of a device group: "stage 2", or the stages it holds ("stages 0,4")."""
    if virtual_stages == 1:
        return f"stage {group}"
    return "stages " + ",".join(str(group + c * groups) for c in range(virtual_stages))


def simulate(model: PipelineModel) -> Timeline:
    """The schedule of `model`, event by event in time order (module docstring); links serve
    their requests first come, first served."""
    return _Simulation(model).run()


class _Simulation:
    """The event loop of `simulate`: events are (time, order, what, group or stage, block
    index)."""

    def __init__(self, model: PipelineModel) -> None:
        self.model = model
        count, groups = len(model.stages), model.groups
        self.orders = [
            device_blocks(
                model.schedule,
                g,
                count,
                model.microbatches,
                model.training,
                model.warmup_extra,
                model.virtual_stages,
            )
            for g in range(groups)
        ]
        self.lanes = tuple(group_lane(g, groups, model.virtual_stages) for g in range(groups))
        self.arrived: dict[tuple[int, str, int], float] = {
            (0, FORWARD, m): 0.0 for m in range(model.microbatches)
        }
        self.position = [0] * groups
        self.busy = [False] * groups
        self.backwards = [0] * count  # backwards started, by stage
        self.synced: list[list[float]] = [[] for _ in range(groups)]  # sync ends, by group
        self.link_free: dict[str, float] = {}
        self.blocks: list[Slice] = []
        self.transfers: list[Slice] = []
        self.events: list[tuple[float, int, str, int, int]] = []
        self.sequence = 0

    def group(self, stage: int) -> int:
        return stage % self.model.groups

    def push(self, time: float, what: str, where: int, index: int = -1) -> None:
        heapq.heappush(self.events, (time, self.sequence, what, where, index))
        self.sequence += 1

    def run(self) -> Timeline:
        for g in range(len(self.orders)):
            self.push(0.0, "try", g)
        while self.events:
            now, _, what, where, index = heapq.heappop(self.events)
            if what == "try":
                self.try_start(now, where)
            elif what == "end":
                self.busy[where] = False
                self.send(now, self.orders[where][index])
                self.try_start(now, where)
            else:  # "sync": the stage's last backward has started
                self.sync(now, where)
        if any(p < len(order) for p, order in zip(self.position, self.orders, strict=True)):
            raise ValueError(f"the {self.model.schedule} schedule cannot proceed")
        return Timeline(
            len(self.model.stages), self.model.microbatches, tuple(self.blocks),
            tuple(self.transfers), self.lanes,
        )  # fmt: skip

    def try_start(self, now: float, g: int) -> None:
        if self.busy[g] or self.position[g] == len(self.orders[g]):
            return
        index = self.position[g]
        block = self.orders[g][index]
        k = block.stage
        kind = FORWARD if block.kind is Kind.FORWARD else BACKWARD
        ready = self.arrived.get((k, kind, block.microbatch))
        if ready is None:
            return  # the arrival of its input wakes the group
        if ready > now:
            self.push(ready, "try", g)
            return
        stage = self.model.stages[k]
        end = now + (stage.forward_s if kind == FORWARD else stage.backward_s)
        self.blocks.append(Slice(self.lanes[g], kind, k, block.microbatch, now, end))
        self.busy[g] = True
        self.position[g] += 1
        self.push(end, "end", g, index)
        if self.model.training and kind == BACKWARD:
            self.backwards[k] += 1
            if self.backwards[k] == self.model.microbatches:
                self.push(now, "sync", k)

    def send(self, now: float, block: ScheduleBlock) -> None:
        """The block's output crosses to the stage that needs it."""
        model, k, m = self.model, block.stage, block.microbatch
        if block.kind is Kind.FORWARD:
            if k == len(model.stages) - 1:
                if model.training:
                    self.arrived[(k, BACKWARD, m)] = now
                    self.push(now, "try", self.group(k))
                return
            cut, target, direction, kind = model.cuts[k], k + 1, "up", FORWARD
            duration = cut.forward_s
        else:
            if k == 0:
                return
            cut, target, direction, kind = model.cuts[k - 1], k - 1, "down", BACKWARD
            duration = cut.backward_s
        lanes = (
            tuple(f"host {h} link" for h in model.stages[k].hosts)
            if cut.inter_host
            else (f"stage {self.group(k)} link {direction}",)
        )
        start = max([now, *(self.link_free.get(lane, 0.0) for lane in lanes)])
        finish = start + duration
        for lane in lanes:
            self.link_free[lane] = finish
            if duration > 0:
                self.transfers.append(Slice(lane, "transfer", k, m, start, finish))
        self.arrived[(target, kind, m)] = finish
        self.push(finish, "try", self.group(target))

    def sync(self, now: float, k: int) -> None:
        """The stage's gradient sync from the start of its last backward (bucketed: module
        docstring), on the inter-host links when it spans hosts, after the syncs of its group's
        other stages; when the group's last stage has synced, its optimizer steps."""
        stage, g = self.model.stages[k], self.group(k)
        backward_end = now + stage.backward_s
        end = backward_end
        if stage.sync_s > 0:
            lanes = (f"stage {g} sync",) + (
                tuple(f"host {h} link" for h in stage.hosts) if len(stage.hosts) > 1 else ()
            )
            start = max([now, *(self.link_free.get(lane, 0.0) for lane in lanes)])
            end = max(start + stage.sync_s, backward_end + stage.sync_s / max(stage.layers, 1))
            for lane in lanes:
                self.link_free[lane] = end
            self.blocks.append(Slice(self.lanes[g], SYNC, k, -1, start, end))
        self.synced[g].append(end)
        if len(self.synced[g]) < self.model.virtual_stages:
            return
        # The group's last sync starts with its last backward, so its blocks end by then.
        start = max(*self.synced[g], backward_end)
        for c in range(self.model.virtual_stages):
            stage_index = g + c * self.model.groups
            step_s = self.model.stages[stage_index].step_s
            if step_s > 0:
                self.blocks.append(
                    Slice(self.lanes[g], STEP, stage_index, -1, start, start + step_s)
                )
                start += step_s


def block_times(forward_s: float, backward_s: float, communication_s: float) -> tuple[float, float]:
    """A stage's forward and backward block of one microbatch: compute plus the in-stage
    collectives, split in proportion to compute."""
    compute_s = forward_s + backward_s
    if compute_s <= 0:
        return communication_s, 0.0
    return (
        forward_s + communication_s * forward_s / compute_s,
        backward_s + communication_s * backward_s / compute_s,
    )


def plan_model(plan: Plan) -> PipelineModel:
    """The simulation's view of a plan: its stages, the transfers across each cut, its
    schedule."""
    training = plan.settings.mode == "train"
    stages = []
    for stage in plan.stages:
        forward_s, backward_s = block_times(
            stage.time.forward_s, stage.time.backward_s, stage.time.communication_s
        )
        stages.append(
            StageModel(
                forward_s=forward_s,
                backward_s=backward_s,
                sync_s=stage.time.gradient_sync_s,
                step_s=stage.time.optimizer_step_s,
                layers=max(1, len(stage.layers)),
                hosts=tuple(sorted({host for host, _ in stage.devices})),
            )
        )
    cuts = []
    for k in range(len(plan.stages) - 1):
        seconds = sum(
            t.time_s for t in plan.transfers if t.source_stage == k and t.destination_stage == k + 1
        )
        one_way = seconds / 2 if training else seconds
        last, first = plan.stages[k].devices[-1], plan.stages[k + 1].devices[0]
        cuts.append(CutModel(one_way, one_way if training else 0.0, last[0] != first[0]))
    return PipelineModel(
        stages=tuple(stages),
        cuts=tuple(cuts),
        microbatches=plan.settings.microbatches,
        schedule=plan.settings.schedule,
        training=training,
        warmup_extra=plan.settings.warmup_extra,
        virtual_stages=plan.settings.virtual_stages,
    )


def pipeline_timeline(plan: Plan) -> Timeline:
    """The plan's schedule, simulated."""
    return simulate(plan_model(plan))
