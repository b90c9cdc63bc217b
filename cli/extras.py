"""The optional `executor` extra: what `run` and `profile` say when it is not installed."""

from __future__ import annotations

from plans.errors import InputError

INSTALL_HINT = "pip install 'alpa-plan[executor]'"
EXECUTOR_MODULES = ("jax", "jaxlib", "optax", "onnxruntime")


def missing_executor_extra(command: str, error: ModuleNotFoundError) -> InputError:
    """The one-line error for `command` when `error` is a missing executor dependency; any other
    missing module is a bug and is raised as it is."""
    if (error.name or "").split(".")[0] not in EXECUTOR_MODULES:
        raise error
    return InputError(
        f"alpa-plan {command}",
        "",
        f"the executor extra ({INSTALL_HINT})",
        f"no module named {error.name!r}",
    )
