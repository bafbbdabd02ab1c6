"""``biqabench plugins list``: every installed plugin, what it registers, and why a broken one broke."""

from __future__ import annotations

import typer

from biqabench.cli.common import echo_table


def plugins_list() -> None:
    """Show each plugin: name, what it registers, distribution and version, and errors of broken ones."""
    from biqabench.components.plugins import get_harness

    h = get_harness()
    for kind in ("backbones", "pretrainers", "heads", "datasets"):
        h.registry(kind)
    rows = []
    for info in sorted(h.plugins.values(), key=lambda p: (p.distribution != "biqabench", p.name)):
        rows.append({
            "plugin": info.name,
            "registers": ", ".join(info.kinds) or "-",
            "distribution": info.distribution,
            "version": info.version,
            "status": f"BROKEN: {info.error}" if info.broken else "ok",
        })
    echo_table(rows)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Installed plugins (bundled and third-party).", no_args_is_help=True)
    sub.command("list")(plugins_list)
    app.add_typer(sub, name="plugins")
