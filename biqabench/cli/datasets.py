"""``biqabench datasets list | check``: the dataset readers; what a dataset folder holds, and what is
wrong with it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from biqabench.base.errors import BiqaError
from biqabench.cli.common import list_command


def parse_options(items: list[str] | None) -> dict[str, str]:
    """``-o key=value`` pairs -> reader options (values stay strings; readers parse them)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BiqaError(f"option {item!r} must look like key=value (e.g. -o scale=0,100)")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def register(app: typer.Typer) -> None:
    datasets_app = typer.Typer(help="Labelled IQA datasets: readers for official layouts.", no_args_is_help=True)
    app.add_typer(datasets_app, name="datasets")
    datasets_app.command("list")(list_command("datasets", lambda e: {"layout": getattr(e.obj, "layout", "")}))

    @datasets_app.command("check")
    def check(
        name: str = typer.Argument(..., help="Dataset name (see: biqabench datasets list)."),
        root: Optional[Path] = typer.Option(None, "--root", "--data-root",
                                            help="The dataset's folder (default: $BIQABENCH_DATA/<usual folder>)."),
        option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                                   help="Reader option key=value, repeatable (e.g. -o meta=FILE, -o scale=0,100)."),
        decode: bool = typer.Option(False, "--decode", help="Fully decode every image (slow) instead of checking headers."),
    ) -> None:
        """Report entries, MOS range, missing and unreadable files of a dataset (exit 1 if any are bad)."""
        from biqabench.data.loading import inspect_dataset

        report = inspect_dataset(name, root, check="decode" if decode else "header", **parse_options(option))
        width = max(len(k) for k in report)
        for key, value in report.items():
            if value is None:
                value = "-"
            elif isinstance(value, float):
                value = f"{value:.4g}"
            typer.echo(f"{key.replace('_', ' '):<{width}}  {value}")
        if report.get("problems"):
            typer.echo("fix the entries above, or load with --skip-bad to drop them (they are logged)", err=True)
            raise typer.Exit(1)
