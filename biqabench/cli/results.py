"""``biqabench results list | show RUN | compare RUN RUN...``: read run folders back as tables.

A thin layer over :mod:`biqabench.results`; every table can be printed as markdown (GitHub),
LaTeX or CSV so it can go straight into a README, a paper or a spreadsheet.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

results_app = typer.Typer(help="Evaluation runs in results/runs: list them, show one, compare several.",
                          no_args_is_help=True)


class TableFormat(str, Enum):
    markdown = "markdown"
    latex = "latex"
    csv = "csv"


Format = Annotated[TableFormat, typer.Option("--format", help="Table format: markdown (GitHub), latex or csv.")]
Root = Annotated[Path | None, typer.Option("--root", help="Results folder holding runs/ (default: ./results or "
                                                          "$BIQABENCH_RESULTS).")]


def _echo_table(df, fmt: TableFormat) -> None:
    from biqabench.results import render

    typer.echo(render(df, fmt.value).rstrip("\n"))


@results_app.command("list")
def results_list(fmt: Format = TableFormat.markdown, root: Root = None) -> None:
    """Every run: id, kind, head, weights, backbone, train/test sets, median SRCC per test set, status."""
    from biqabench.results import list_runs, runs_root

    runs = list_runs(root)
    if runs.empty:
        typer.echo(f"(no runs in {runs_root(root)})", err=fmt is not TableFormat.markdown)
        return
    _echo_table(runs, fmt)


@results_app.command("show")
def results_show(
    run: Annotated[str, typer.Argument(help="Run id, a unique part of it, 'latest', or a run folder path.")],
    fmt: Format = TableFormat.markdown,
    root: Root = None,
    splits: Annotated[bool, typer.Option("--splits", help="Also show every split's metrics.")] = False,
) -> None:
    """One run: what it was, then per test set the median SRCC/PLCC over splits with 95% CI."""
    import pandas as pd
    from tabulate import tabulate

    from biqabench.results import load_run, meta_rows, summarize, summary_table

    r = load_run(run, root)
    if fmt is TableFormat.markdown:
        typer.echo(f"# {r.id}\n\npath: {r.path}\nstatus: {r.status}\n")
        rows = [row for row in meta_rows(r.manifest) if row[0] != "status"]
        if rows:
            typer.echo(tabulate(rows, headers=["field", "value"], tablefmt="github") + "\n")
        table = summary_table(r.metrics)
        if table.empty:
            typer.echo("No finished splits yet.")
        else:
            typer.echo(tabulate(table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True))
    else:  # machine-readable: the numbers only
        _echo_table(summarize(r.metrics), fmt)
    if splits and not r.metrics.empty:
        typer.echo("")
        _echo_table(pd.DataFrame(r.metrics), fmt)


@results_app.command("compare")
def results_compare(
    runs: Annotated[list[str], typer.Argument(help="Run ids (unique parts are enough); the first is the baseline.")],
    fmt: Format = TableFormat.markdown,
    root: Root = None,
    unpaired: Annotated[bool, typer.Option("--unpaired", help="Only medians side by side (runs on different "
                                                              "splits; no deltas per split, no test).")] = False,
    per_split: Annotated[bool, typer.Option("--per-split", help="csv/latex: print the per-split deltas instead of "
                                                                "the summary (markdown prints both).")] = False,
) -> None:
    """Runs on the same splits, split by split: per test set the median delta vs the first run, its
    95% bootstrap CI, the Wilcoxon signed-rank p-value, and every split's delta.

    Refuses (naming what differs) when the runs were not tested on the same splits; make the
    second run with `biqabench eval --splits-from FIRST ...`.  Columns are named head/weights/backbone.
    """
    from biqabench.evaluation.compare import split_based
    from biqabench.results import load_run

    if not unpaired and not all(split_based(load_run(r, root)) for r in runs):
        unpaired = True  # a zero-shot `test` run has no splits to pair: medians side by side
        if fmt is TableFormat.markdown:
            typer.echo("(a run without training splits, e.g. `biqabench test`: medians side by side, unpaired)\n")
    if unpaired:
        from biqabench.results import compare_runs

        _echo_table(compare_runs(runs, root), fmt)
        return
    from biqabench.evaluation.compare import compare_paired

    summary, deltas = compare_paired(runs, root)
    if fmt is not TableFormat.markdown:  # one machine-readable table per call
        _echo_table(deltas if per_split else summary, fmt)
        return
    _echo_table(summary, fmt)
    typer.echo("\nPer-split deltas (paired by seed):\n")
    _echo_table(deltas, fmt)
    if fmt is TableFormat.markdown:
        typer.echo("\ndelta = run - baseline (first run), median over splits; 95% CI: percentile bootstrap of the "
                   "median (scipy.stats.bootstrap, 2000 resamples, seed 0); Wilcoxon: two-sided signed-rank "
                   "test of the per-split deltas (with 5 splits p >= 0.0625 whatever the deltas).")


def register(app: typer.Typer) -> None:
    app.add_typer(results_app, name="results")
