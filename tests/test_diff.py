"""`alpa-plan diff`: what changed, and the regression gates CI relies on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from plan_helpers import GPT_PLAN, gpt_plan, two_stages, write

from cli import exit_codes
from cli.main import main
from plans.diff import FieldChange, Gates, diff_plans, gate_failures
from plans.plan import Plan, frozen_map


def _slower(plan: Plan, factor: float) -> Plan:
    estimate = replace(plan.estimate, iteration_time_s=plan.estimate.iteration_time_s * factor)
    return replace(plan, estimate=estimate)


def _bigger(plan: Plan, factor: float) -> Plan:
    peak = round(plan.estimate.peak_memory_bytes * factor)
    return replace(plan, estimate=replace(plan.estimate, peak_memory_bytes=peak))


def test_identical_plans_exit_0_and_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(GPT_PLAN), str(GPT_PLAN), "--max-slowdown", "0%"]) == exit_codes.OK
    assert "are identical" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("gate", "code"), [("5%", exit_codes.CHECK_FAILED), ("20%", exit_codes.OK)]
)
def test_the_slowdown_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gate: str, code: int
) -> None:
    new = write(_slower(gpt_plan(), 1.10), tmp_path / "new.json")
    assert main(["diff", str(GPT_PLAN), str(new), "--max-slowdown", gate]) == code
    out = capsys.readouterr().out
    assert "+10.00%" in out
    assert ("regression: iteration time grew by +10.00%" in out) == (code != exit_codes.OK)


@pytest.mark.parametrize(
    ("gate", "code"), [("10%", exit_codes.CHECK_FAILED), ("30%", exit_codes.OK)]
)
def test_the_memory_growth_gate(tmp_path: Path, gate: str, code: int) -> None:
    new = write(_bigger(gpt_plan(), 1.25), tmp_path / "new.json")
    assert main(["diff", str(GPT_PLAN), str(new), "--max-memory-growth", gate]) == code


def test_a_faster_plan_passes_the_slowdown_gate(tmp_path: Path) -> None:
    new = write(_slower(gpt_plan(), 0.5), tmp_path / "new.json")
    assert main(["diff", str(GPT_PLAN), str(new), "--max-slowdown", "0%"]) == exit_codes.OK


def test_json_lists_every_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = gpt_plan()
    new = write(_slower(two_stages(old), 1.10), tmp_path / "new.json")
    code = main(["diff", str(GPT_PLAN), str(new), "--json", "--max-slowdown", "5%"])
    assert code == exit_codes.CHECK_FAILED
    result = json.loads(capsys.readouterr().out)
    assert result["identical"] is False
    assert {"estimate", "layers", "stages"} <= set(result["changed_sections"])
    assert result["estimate"]["iteration_time_s"]["relative"] == pytest.approx(0.10, rel=1e-4)
    assert [stage["index"] for stage in result["stages"]] == [0, 1]
    assert result["stages"][1]["old"] is None
    assert len(result["gate_failures"]) == 1


def test_strategy_changes_are_counted_and_the_first_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = gpt_plan()
    stage = old.stages[0]
    changed = dict(stage.strategies)
    names = sorted(changed)[:7]
    for name in names:
        changed[name] = "made up"
    new_plan = replace(old, stages=(replace(stage, strategies=frozen_map(changed)),))
    assert main(["diff", str(GPT_PLAN), str(write(new_plan, tmp_path / "n.json"))]) == 0
    out = capsys.readouterr().out
    assert "strategies: 7 changed, 0 added, 0 removed" in out
    assert f"{names[0]}: {stage.strategies[names[0]]} → made up" in out
    assert "... and 2 more" in out


def test_settings_changes_are_listed_by_path() -> None:
    old = gpt_plan()
    new = replace(old, settings=replace(old.settings, microbatches=8, schedule="gpipe"))
    diff = diff_plans(old, new)
    assert diff.fields == (
        FieldChange("settings.microbatches", "4", "8"),
        FieldChange("settings.schedule", '"1f1b"', '"gpipe"'),
    )
    assert diff.changed_sections == ("settings",)


def test_growth_from_zero_exceeds_any_gate() -> None:
    old = _bigger(gpt_plan(), 0.0)
    diff = diff_plans(old, gpt_plan())
    assert gate_failures(diff, Gates(max_memory_growth=10.0)) == (
        "peak memory per GPU grew from zero, more than the allowed 1000.00%",
    )


def test_a_gate_needs_a_percent_sign(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["diff", str(GPT_PLAN), str(GPT_PLAN), "--max-slowdown", "5"])
    assert code == exit_codes.BAD_INPUT
    assert "expected a percentage such as '5%', found '5'" in capsys.readouterr().err
