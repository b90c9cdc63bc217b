"""Errors shared by every layer of alpa-plan.

`plans` is the bottom of the dependency order (plans <- cost_models <- planner <- cli), so the
error types that every layer raises for bad user input live here. The CLI turns each into one
line on stderr and a documented exit code (see `cli/exit_codes.py`).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from a file or flag the user gave.

    Rendered as one line: ``FILE: FIELD: expected EXPECTED, found FOUND``. ``field`` may be empty
    when the whole file is at fault (missing, not ONNX, not YAML).
    """

    def __init__(self, file: str, field: str, expected: str, found: str) -> None:
        self.file = file
        self.field = field
        self.expected = expected
        self.found = found
        location = f"{file}: {field}" if field else file
        super().__init__(f"{location}: expected {expected}, found {found}")


class InfeasibleError(RuntimeError):
    """The model cannot be planned on the cluster within the memory budget."""
