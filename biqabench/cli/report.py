"""``biqabench report RUN|MATRIX|STUDY [RUN...] [-o FILE]``: a one-page HTML report (biqabench.results.report
for a run, biqabench.evaluation.report_matrix for a matrix or runs compared, report_study for a study)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    targets: Annotated[list[str], typer.Argument(
        help="A run (id, unique part of it, 'latest', or folder), a benchmark matrix folder "
             "(results/benchmarks/NAME), a study folder (results/studies/NAME), or several runs on the same splits to compare (the first is the baseline).")],
    out: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file to write (default: report.html in the "
                                                                     "run, matrix or study folder; required for several runs).")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Results folder holding runs/ (default: ./results or "
                                                             "$BIQABENCH_RESULTS).")] = None,
) -> None:
    """Write a self-contained HTML report: protocol card, results with 95% CIs, every split, scatter
    plots, training curves; for a matrix the paper table and the paired gain over the baseline; for a
    study its table (statistics over seeds), SRCC against pretraining step and the per-seed paired plot."""
    from biqabench.evaluation.report_matrix import report as write

    typer.echo(write(targets, out, root))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
