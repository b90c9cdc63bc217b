"""`profile`: registered on the main group (see the module's issue)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    del group
