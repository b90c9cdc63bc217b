"""How the planner reports progress: a callback the CLI turns into a progress bar.

The planner never prints. Long steps call `progress(what, done, total)`: `what` says what is
being done ("layer ILPs, 16 microbatches"), `done` of `total` units are finished.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, what: str, done: int, total: int) -> None: ...


def silent(what: str, done: int, total: int) -> None:
    """A `Progress` that reports nothing."""
    del what, done, total
