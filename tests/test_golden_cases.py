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
from plans.schema import load_schema
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
