"""``biqabench backbones list``: registered backbones, and with ``--filter`` every on-demand name.

Model-zoo plugins (timm's) register a short curated list so that start-up stays fast, and build
any other of their names when asked (the ``resolve_backbone`` hook).  ``--filter PATTERN``
(a glob, e.g. ``'mobilevit*'``) also asks them, through ``search_backbones``, for every name of
theirs that matches, so the whole zoo is searchable without being loaded by default.
"""

from __future__ import annotations

import fnmatch
from typing import Optional

import typer

from biqabench.cli.common import echo_table


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Registered backbones (and on-demand ones: --filter).", no_args_is_help=True)

    @sub.command("list")
    def backbones_list(
        pattern: Optional[str] = typer.Option(None, "--filter", help="Glob over backbone names, e.g. 'mobilevit*' "
                                              "or 'timm/convnext_*'; also searches on-demand model zoos (timm)."),
        fmt: str = typer.Option("github", "--format", help="Table format (github, plain, latex, ...)."),
    ) -> None:
        """List backbones: name, providing plugin, description. --filter searches all of timm's names too."""
        echo_table(rows(pattern), fmt)

    app.add_typer(sub, name="backbones")


def rows(pattern: str | None) -> list[dict]:
    from biqabench.components.plugins import get_harness

    h = get_harness()
    out = [{"name": e.name, "plugin": e.plugin, "description": e.description}
           for e in h.registry("backbones").entries()
           if pattern is None or fnmatch.fnmatchcase(e.name, pattern)]
    if pattern is not None:
        seen = {r["name"] for r in out}
        for name, plugin, description in h.search_backbones(pattern):
            if name not in seen:
                seen.add(name)
                out.append({"name": name, "plugin": plugin, "description": description})
    return out
