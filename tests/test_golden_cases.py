"""Golden plans: each case in tests/data/cases plans to exactly its `expected.plan.json`.

A change that alters plans shows up here; if it is meant to, regenerate the files with
`python tests/data/cases/regenerate.py` and review their diff.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import jsonschema
import pytest

from cli import exit_codes
from plans.io import read_plan
from plans.schema import load_schema
from plans.timeline import pipeline_timeline
from tests.data.cases.regenerate import CASES, COMMAND, EXPECTED, case_names, plan_case

DIFF_LINES = 40


@pytest.mark.parametrize("name", case_names())
def test_the_case_plans_to_its_expected_file(tmp_path: Path, name: str) -> None:
    out = tmp_path / "plan.json"
    assert plan_case(name, out) == exit_codes.OK
    expected, actual = (CASES / name / EXPECTED).read_text(), out.read_text()
    if actual != expected:
        lines = difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), "expected", "planned", lineterm=""
        )
        shown = "\n".join(list(lines)[:DIFF_LINES])
        pytest.fail(
            f"case {name} plans differently (first {DIFF_LINES} lines of the diff):\n{shown}\n"
            f"If the change is intended, run `{COMMAND} {name}` and review the diff.",
            pytrace=False,
        )
    jsonschema.Draft202012Validator(load_schema()).validate(json.loads(actual))


def test_there_are_cases() -> None:
    assert len(case_names()) >= 3


@pytest.mark.parametrize("name", case_names())
def test_the_estimate_is_the_makespan_of_the_schedule_the_plan_prescribes(name: str) -> None:
    # One model of a schedule's time (plans/timeline.py): what the plan says an iteration
    # takes is what `show` simulates for the plan as written.
    plan = read_plan(CASES / name / EXPECTED)
    makespan_s = pipeline_timeline(plan).makespan_s
    assert plan.estimate.iteration_time_s == pytest.approx(makespan_s, rel=1e-3)
