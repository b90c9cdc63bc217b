"""`ops`: the op types the planner knows, from its registry (`planner/ops/`).

`alpa-plan ops` prints one row per group of op types that share a family, a kernel class, a
memory-traffic class and a saved-tensor rule; `--markdown` prints the same as the Markdown table
that README.md carries between its `ops` markers (a test keeps the two equal).
"""

from __future__ import annotations

import click
from rich.table import Table

from cli import exit_codes
from cli.render import no_color_option, output_console
from planner.ops import registered

COLUMNS = ("family", "op types", "kernel class", "memory traffic", "backward keeps")


def op_groups() -> list[tuple[str, str, str, str, str]]:
    """(family, op types, kernel class, traffic, saved) rows, by family then first op type."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for op_type, info in registered().items():
        key = (info.family, str(info.cost), str(info.traffic), str(info.saved))
        groups.setdefault(key, []).append(op_type)
    rows = [
        (family, ", ".join(types), cost, traffic, saved)
        for (family, cost, traffic, saved), types in groups.items()
    ]
    return sorted(rows, key=lambda row: (row[0], row[1]))


def markdown_table() -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in op_groups()]
    return "\n".join(lines) + "\n"


@click.command("ops", epilog=exit_codes.EPILOG)
@click.option("--markdown", is_flag=True, help="Print the table README.md carries.")
@no_color_option
def ops_command(markdown: bool, no_color: bool) -> int:
    """List the ONNX op types the planner has rules for: their sharding rule's family, kernel
    class, memory traffic and what their backward keeps. Any other op type runs replicated and
    is priced by its elements."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return exit_codes.OK
    table = Table(show_edge=False, pad_edge=False)
    for column in COLUMNS:
        table.add_column(column)
    for row in op_groups():
        table.add_row(*row)
    output_console(no_color).print(table)
    click.echo(f"{len(registered())} op types")
    return exit_codes.OK


def register(group: click.Group) -> None:
    """Add this module's commands to `group`."""
    group.add_command(ops_command)
