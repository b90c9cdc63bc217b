"""What changed between two plans (`alpa-plan diff`), and the CI regression gates.

`diff_plans` is pure: two plans in, one `PlanDiff` value out. Plans compare as their files do
(after rounding), so two plans are identical exactly when their JSON files are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from plans.io import json_ready, plan_to_dict
from plans.plan import Plan, Stage

# The header sections whose fields are compared one by one, as dotted JSON paths.
_FIELD_SECTIONS = ("model", "cluster", "settings", "planner")
ESTIMATES = ("iteration_time_s", "samples_per_s", "tflops_per_gpu", "peak_memory_bytes")


@dataclass(frozen=True)
class FieldChange:
    path: str  # e.g. "settings.microbatches"
    old: str  # JSON text; "" when absent
    new: str


@dataclass(frozen=True)
class StageOutline:
    """Where a stage cuts the model and which devices it runs on."""

    op_count: int
    first_op: str
    last_op: str
    layers: tuple[str, ...]
    devices: tuple[tuple[int, int], ...]
    logical_mesh: tuple[int, int]
    recompute: str = "none"

    @staticmethod
    def of(stage: Stage) -> StageOutline:
        first, last = (stage.ops[0], stage.ops[-1]) if stage.ops else ("", "")
        return StageOutline(
            len(stage.ops), first, last, stage.layers, stage.devices, stage.logical_mesh,
            stage.recompute,
        )  # fmt: skip


@dataclass(frozen=True)
class StageChange:
    index: int
    old: StageOutline | None  # None: the stage is new
    new: StageOutline | None  # None: the stage is gone


@dataclass(frozen=True)
class NameChanges:
    """Per-name string values (op -> strategy, tensor -> spec) that differ."""

    changed: tuple[tuple[str, str, str], ...]  # (name, old, new), by stage, then by name
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.changed) + len(self.added) + len(self.removed)


@dataclass(frozen=True)
class QuantityChange:
    name: str  # an `Estimate` field, such as "iteration_time_s"
    old: float
    new: float

    @property
    def relative(self) -> float | None:
        """(new - old) / old; None when old is 0 and new is not (an unbounded change)."""
        if self.old == self.new:
            return 0.0
        return None if self.old == 0 else (self.new - self.old) / self.old


@dataclass(frozen=True)
class PlanDiff:
    identical: bool
    changed_sections: tuple[str, ...]  # top-level sections of the file that differ
    fields: tuple[FieldChange, ...]
    stages: tuple[StageChange, ...]
    strategies: NameChanges
    shardings: NameChanges
    estimate: tuple[QuantityChange, ...]  # every field of ESTIMATES, changed or not

    def quantity(self, name: str) -> QuantityChange:
        return next(q for q in self.estimate if q.name == name)


@dataclass(frozen=True)
class Gates:
    """Regression limits as fractions (0.05 is 5 %); None: not gated."""

    max_slowdown: float | None = None
    max_memory_growth: float | None = None


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    old_dict, new_dict = plan_to_dict(old), plan_to_dict(new)
    return PlanDiff(
        identical=old_dict == new_dict,
        changed_sections=tuple(
            key for key in sorted({*old_dict, *new_dict}) if old_dict.get(key) != new_dict.get(key)
        ),
        fields=tuple(_field_changes(old_dict, new_dict)),
        stages=tuple(_stage_changes(old, new)),
        strategies=_name_changes(_merged(old, "strategies"), _merged(new, "strategies")),
        shardings=_name_changes(_merged(old, "shardings"), _merged(new, "shardings")),
        estimate=tuple(
            QuantityChange(name, old_dict["estimate"][name], new_dict["estimate"][name])
            for name in ESTIMATES
        ),
    )


def gate_failures(diff: PlanDiff, gates: Gates) -> tuple[str, ...]:
    """One sentence per gate the new plan exceeds."""
    failures = []
    limits = (
        ("iteration_time_s", "iteration time", gates.max_slowdown),
        ("peak_memory_bytes", "peak memory per GPU", gates.max_memory_growth),
    )
    for name, what, limit in limits:
        change = diff.quantity(name).relative
        if limit is not None and (change is None or change > limit):
            shown = "from zero" if change is None else f"by {change:+.2%}"
            failures.append(f"{what} grew {shown}, more than the allowed {limit:.2%}")
    return tuple(failures)


def _flatten(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _flatten(value[key], f"{path}.{key}")
    else:
        yield path, json.dumps(value)


def _field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[FieldChange]:
    for section in _FIELD_SECTIONS:
        before = dict(_flatten(old[section], section))
        after = dict(_flatten(new[section], section))
        for path in sorted({*before, *after}):
            if before.get(path) != after.get(path):
                yield FieldChange(path, before.get(path, ""), after.get(path, ""))


def _stage_changes(old: Plan, new: Plan) -> Iterator[StageChange]:
    for index in range(max(len(old.stages), len(new.stages))):
        before = StageOutline.of(old.stages[index]) if index < len(old.stages) else None
        after = StageOutline.of(new.stages[index]) if index < len(new.stages) else None
        if before != after:
            yield StageChange(index, before, after)


def _merged(plan: Plan, section: str) -> dict[str, str]:
    """Every stage's `strategies` or `shardings` in one mapping, in stage order."""
    merged: dict[str, str] = {}
    for stage in plan.stages:
        merged.update(getattr(stage, section))
    return merged


def _name_changes(old: Mapping[str, str], new: Mapping[str, str]) -> NameChanges:
    return NameChanges(
        changed=tuple(
            (name, old[name], value)
            for name, value in new.items()
            if name in old and old[name] != value
        ),
        added=tuple(name for name in new if name not in old),
        removed=tuple(name for name in old if name not in new),
    )


def diff_to_dict(diff: PlanDiff, failures: tuple[str, ...] = ()) -> dict[str, Any]:
    """The diff as JSON-ready values (`diff --json`), with the gates' failures."""
    result: dict[str, Any] = json_ready(
        {
            "identical": diff.identical,
            "changed_sections": list(diff.changed_sections),
            "fields": [
                {"path": c.path, "old": _decoded(c.old), "new": _decoded(c.new)}
                for c in diff.fields
            ],
            "stages": [
                {"index": c.index, "old": _outline(c.old), "new": _outline(c.new)}
                for c in diff.stages
            ],
            "strategies": _names_to_dict(diff.strategies),
            "shardings": _names_to_dict(diff.shardings),
            "estimate": {
                q.name: {"old": q.old, "new": q.new, "relative": q.relative} for q in diff.estimate
            },
            "gate_failures": list(failures),
        }
    )
    return result


def _decoded(text: str) -> Any:
    return json.loads(text) if text else None


def _outline(outline: StageOutline | None) -> dict[str, Any] | None:
    return None if outline is None else asdict(outline)


def _names_to_dict(changes: NameChanges) -> dict[str, Any]:
    return {
        "changed": [{"name": n, "old": old, "new": new} for n, old, new in changes.changed],
        "added": list(changes.added),
        "removed": list(changes.removed),
    }
