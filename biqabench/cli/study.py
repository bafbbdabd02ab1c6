"""``biqabench study``: pretraining strategies x seeds x protocols, with statistics that count the seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def study_command(
    study: Path = typer.Argument(..., help="Study YAML (strategies, seeds, steps, snapshots, protocols, sets), e.g. configs/study_cpu.yaml."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Run this many cells at once, each in its own process (pretraining cells first, then evaluations); the CPU threads are shared out among them."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List every cell (pretraining and evaluation) with its status; run nothing."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    results: Optional[Path] = typer.Option(None, help="Write the study under this folder instead of results/studies/."),
    baseline: Optional[str] = typer.Option(None, help="Compare every strategy with this one instead of the YAML's baseline, e.g. bnstats (same photos, no learning).  On a finished study it only rewrites the tables: nothing is run again."),
) -> None:
    """Compare pretraining strategies: pretrain each with every seed, evaluate its snapshots with every
    protocol on the same splits, and write the table and plot (results/studies/NAME/).

    Resumable: finished cells are skipped and interrupted ones resume, so after Ctrl-C, a crash or a
    kill, run the same command again.  Every cell is an ordinary run folder (results compare works on
    any two).  The table's statistics count the pretraining seeds (docs/protocol.md, "Pretraining
    studies"); docs/studies.md explains the YAML, the folders and the CPU study's results.

    Example:  biqabench study configs/study_cpu.yaml --dry-run     (then without --dry-run)
    """
    from biqabench.evaluation.study import plan, run_study, study_folder
    from biqabench.evaluation.study_config import load_study, with_baseline

    s = load_study(study)
    if baseline is not None:
        s = with_baseline(s, baseline)
    if dry_run:
        _dry_run(s, plan(s, results), study_folder(s, results))
        return
    folder = run_study(s, jobs=jobs, root=results, progress=not no_progress, echo=typer.echo)
    table = folder / "table.md"
    typer.echo(table.read_text() if table.is_file() else "(no table)")
    typer.echo(f"study folder: {folder}")


def _dry_run(s, planned, folder: Path) -> None:
    from tabulate import tabulate

    pretrain, evals = planned
    rows = [{"cell": c.key, "kind": "pretrain" if c.strategy.pretrains else "initialise",
             "steps": c.steps, "snapshots": ",".join(map(str, c.snapshots)), "status": c.status()} for c in pretrain]
    rows += [{"cell": c.key, "kind": c.protocol.kind, "steps": c.step, "snapshots": "", "status": c.status()}
             for c in evals]
    typer.echo(tabulate(rows, headers="keys", tablefmt="github"))
    todo = sum(r["status"] != "finished" for r in rows)
    typer.echo(f"{len(rows)} cells ({len(pretrain)} pretraining, {len(evals)} evaluation), {todo} to run; "
               f"folder {folder}")


def register(app: typer.Typer) -> None:
    app.command("study")(study_command)
