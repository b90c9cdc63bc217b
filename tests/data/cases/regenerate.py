"""Regenerate the golden plans of tests/data/cases: run after a change that is meant to alter
plans, then review the diff of the `expected.plan.json` files.

    python tests/data/cases/regenerate.py            # every case
    python tests/data/cases/regenerate.py gpt-tiny-2x4  # some cases

Each case is a folder holding `args.txt` (the `alpa-plan` arguments, paths relative to the
repository root, `#` comments allowed) and the plan they give, `expected.plan.json`.
`tests/test_golden_cases.py` plans every case and compares the bytes.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path

CASES = Path(__file__).resolve().parent
ROOT = CASES.parents[2]
sys.path.insert(0, str(ROOT))  # the checkout's packages, installed or not

from cli.main import main as alpa_plan  # noqa: E402

EXPECTED = "expected.plan.json"
COMMAND = "python tests/data/cases/regenerate.py"


def case_names() -> list[str]:
    return sorted(path.parent.name for path in CASES.glob("*/args.txt"))


def case_args(name: str) -> list[str]:
    lines = (CASES / name / "args.txt").read_text(encoding="utf-8").splitlines()
    return [arg for line in lines if not line.lstrip().startswith("#") for arg in shlex.split(line)]


def plan_case(name: str, output: Path) -> int:
    """Plan case `name` into `output`; the exit code of `alpa-plan`."""
    with contextlib.chdir(ROOT):
        return alpa_plan([*case_args(name), "-o", str(output.resolve())])


def main(names: list[str]) -> int:
    for name in names or case_names():
        code = plan_case(name, CASES / name / EXPECTED)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
