"""What several command groups share: printing a table, and a ``NAME list`` command over a registry."""

from __future__ import annotations

import typer
from tabulate import tabulate


def echo_table(rows: list[dict], fmt: str = "github") -> None:
    if not rows:
        typer.echo("(none)")
        return
    typer.echo(tabulate(rows, headers="keys", tablefmt=fmt))


def list_command(kind: str, extra=None):
    """A ``list`` command printing registry ``kind``: name, providing plugin, description, and
    the columns ``extra(entry)`` adds."""
    def command(fmt: str = typer.Option("github", "--format", help="Table format (github, plain, latex, ...).")) -> None:
        from biqabench.components.plugins import registry

        rows = []
        for entry in registry(kind).entries():
            row = {"name": entry.name, "plugin": entry.plugin, "description": entry.description}
            if extra is not None:
                row.update(extra(entry))
            rows.append(row)
        echo_table(rows, fmt)

    command.__doc__ = f"List registered {kind} (name, providing plugin, description)."
    return command
