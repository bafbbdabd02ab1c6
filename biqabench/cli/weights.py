"""``biqabench weights list``: what ``--weights NAME`` can resolve to."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from biqabench.cli.common import echo_table


def weights_list(
    store: Optional[Path] = typer.Option(None, help="Weights store folder (default: results/weights or $BIQABENCH_WEIGHTS)."),
) -> None:
    """List usable weights: built-in names (random, imagenet) and every pretrainer output in the store."""
    from biqabench.components.weights import WeightsStore, describe_store

    echo_table(describe_store(WeightsStore(store) if store else None))


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="The weights store: what --weights NAME can resolve to.", no_args_is_help=True)
    sub.command("list")(weights_list)
    app.add_typer(sub, name="weights")
