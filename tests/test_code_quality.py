"""The codebase's own bars, run with the tests: ruff clean, mypy clean, import boundaries."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the test extra")
def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "--quiet", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean_on_the_typed_packages() -> None:
    pytest.importorskip("mypy")
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


# Data flows one way: plans <- cost_models <- planner <- cli, and plans <- executor.
ALLOWED_IMPORTS = {
    "plans": {"plans"},
    "cost_models": {"plans", "cost_models"},
    "planner": {"plans", "cost_models", "planner"},
    "cli": {"plans", "cost_models", "planner", "cli", "executor"},
    "executor": {"plans", "executor"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_imports_flow_one_way(package: str) -> None:
    ours = set(ALLOWED_IMPORTS)
    for path in sorted((ROOT / package).rglob("*.py")):
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(?:from|import)\s+(\w+)", line)
            if match and match.group(1) in ours:
                assert match.group(1) in ALLOWED_IMPORTS[package], f"{path}: {line.strip()}"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.match(r"# alpa-plan\n\n```bash\n(.*?)\n```\n", readme, re.DOTALL)
    assert block is not None, "README.md must open with one bash block"
    run_main, run_tests = block.group(1).splitlines()  # exactly two commands
    assert run_main.startswith("pip install . && alpa-plan examples/")
    install, _, test = run_tests.partition(" && ")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extras = re.search(r"pip install (?:--quiet )?(-e '\.\[[a-z,]+\]')", ci)
    assert extras is not None and install == f"pip install {extras.group(1)}"
    assert test == "pytest" and ci.rstrip().endswith("python -m pytest")
