"""Plans for the tests of show, diff and check, built from a golden case without planning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from conftest import ROOT

from plans.io import plan_to_json, read_plan
from plans.plan import Layer, Plan, frozen_map

CASES = ROOT / "tests" / "data" / "cases"
# gpt-tiny planned at batch 64 in 4 microbatches on 2 hosts x 4 GPUs (tests/data/cases).
GPT_CASE = CASES / "gpt-tiny-2x4"
GPT_PLAN = GPT_CASE / "expected.plan.json"
GPT_CLUSTER = GPT_CASE / "cluster.yaml"


def gpt_plan() -> Plan:
    return read_plan(GPT_PLAN)


def two_stages(plan: Plan) -> Plan:
    """`plan` cut in two: first half of the ops on host 0, second half on host 1, each on a
    1 x 4 mesh, one transfer between them; stage times and memory copied from stage 0."""
    ops = [op for stage in plan.stages for op in stage.ops]
    devices = sorted(device for stage in plan.stages for device in stage.devices)
    strategies = {k: v for stage in plan.stages for k, v in stage.strategies.items()}
    shardings = {k: v for stage in plan.stages for k, v in stage.shardings.items()}
    half_ops, half_devices = len(ops) // 2, len(devices) // 2
    parts = ((ops[:half_ops], devices[:half_devices]), (ops[half_ops:], devices[half_devices:]))
    layers = tuple(Layer(f"part{i}", tuple(part), 1.0, 0) for i, (part, _) in enumerate(parts))
    stages = tuple(
        replace(
            plan.stages[0],
            index=i,
            layers=(layers[i].name,),
            ops=tuple(part_ops),
            devices=tuple(part_devices),
            logical_mesh=(1, len(part_devices)),
            strategies=frozen_map({op: strategies[op] for op in part_ops if op in strategies}),
            shardings=frozen_map(shardings),
        )
        for i, (part_ops, part_devices) in enumerate(parts)
    )
    return replace(plan, layers=layers, stages=stages, transfers=())


def interleaved(plan: Plan) -> Plan:
    """`plan` cut in four stages on two groups (host 0 and host 1, each a 1 x 4 mesh), stage k
    on group k mod 2: an interleaved schedule of two virtual stages per group, four
    microbatches; stage times and memory copied from stage 0."""
    ops = [op for stage in plan.stages for op in stage.ops]
    devices = sorted(device for stage in plan.stages for device in stage.devices)
    strategies = {k: v for stage in plan.stages for k, v in stage.strategies.items()}
    shardings = {k: v for stage in plan.stages for k, v in stage.shardings.items()}
    quarter, half_devices = -(-len(ops) // 4), len(devices) // 2
    groups = (devices[:half_devices], devices[half_devices:])
    stages = tuple(
        replace(
            plan.stages[0],
            index=k,
            layers=(f"part{k}",),
            ops=tuple(ops[quarter * k : quarter * (k + 1)]),
            devices=tuple(groups[k % 2]),
            logical_mesh=(1, len(groups[k % 2])),
            strategies=frozen_map(
                {op: strategies[op] for op in ops[quarter * k : quarter * (k + 1)]}
            ),
            shardings=frozen_map(shardings),
        )
        for k in range(4)
    )
    layers = tuple(Layer(f"part{k}", stage.ops, 1.0, 0) for k, stage in enumerate(stages))
    settings = replace(plan.settings, microbatches=4, virtual_stages=2)
    return replace(plan, layers=layers, stages=stages, transfers=(), settings=settings)


def write(plan: Plan, path: Path) -> Path:
    path.write_text(plan_to_json(plan))
    return path


def write_document(document: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(document))
    return path


def document(plan: Plan) -> dict[str, Any]:
    """The plan as the JSON document its file holds."""
    result: dict[str, Any] = json.loads(plan_to_json(plan))
    return result
