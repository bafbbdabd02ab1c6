"""CLI commands of the runner: ``eval``, ``benchmark``, ``predict`` (and ``results``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        head: Optional[str] = typer.Option(None, help="IQA head (see: biqabench heads list). Default hyperiqa."),
        weights: Optional[str] = typer.Option(None, help="Backbone weights: random | imagenet | qpt (or any pretrainer) | a checkpoint path. Default imagenet."),
        backbone: Optional[str] = typer.Option(None, help="Backbone (see: biqabench backbones list). Default resnet50."),
        train: Optional[str] = typer.Option(None, help="Dataset to fine-tune on (see: biqabench datasets list). Default: the embedded demo-a."),
        test: Optional[str] = typer.Option(None, help="Comma list of datasets for cross-dataset tests (tested in full). Default with no --train: demo-b."),
        splits: Optional[int] = typer.Option(None, help="Number of seeded train/test splits (seed, seed+1, ...). Default 10."),
        seed: Optional[int] = typer.Option(None, help="First split's seed. Default 0."),
        protocol: Optional[str] = typer.Option(None, help="finetune (train everything) | linear-probe (frozen backbone)."),
        recipe: Optional[str] = typer.Option(None, help="auto | paper | cpu | a YAML file of recipe fields. auto: cpu on CPU, paper on GPUs."),
        config: Optional[Path] = typer.Option(None, help="YAML with any of these options (command-line options win)."),
        data_root: Optional[str] = typer.Option(None, help="Folder holding the datasets (else $BIQABENCH_DATA)."),
        skip_bad: Optional[bool] = typer.Option(None, "--skip-bad", help="Drop (and log) unreadable or badly labelled images instead of stopping."),
        device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps."),
        precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 | fp16."),
        workers: Optional[int] = typer.Option(None, help="DataLoader workers (-1: automatic)."),
        compile: Optional[bool] = typer.Option(None, "--compile", help="Run the fine-tuning step through torch.compile (first steps pay the compilation)."),
        resume: Optional[str] = typer.Option(None, help="Continue an interrupted run (its id, a unique prefix, or its folder)."),
        run_dir: Optional[Path] = typer.Option(None, help="Write the run here instead of results/runs/<id>."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars (logs, CI)."),
    ) -> None:
        """Fine-tune a head on N seeded splits and test it intra- and cross-dataset.

        Writes results/runs/<id>/ with config.yaml, manifest.json, predictions.csv, metrics.csv
        (SRCC, KRCC, PLCC raw and logistic-mapped, RMSE per split and test set), summary.md and plots.
        With no datasets named it runs on the embedded demo sets (train demo-a, test demo-b).
        """
        from biqabench.runner import evaluate

        overrides = dict(head=head, weights=weights, backbone=backbone, train=train,
                         test=[t.strip() for t in test.split(",") if t.strip()] if test is not None else None,
                         splits=splits, seed=seed, protocol=protocol, recipe=recipe, data_root=data_root, skip_bad=skip_bad,
                         device=device, precision=precision, workers=workers, compile=compile)
        if resume:
            run = evaluate(resume=resume, progress=not no_progress)
        else:
            run = evaluate(config, run_dir=run_dir, progress=not no_progress, **overrides)
        from biqabench.results import RunFolder

        typer.echo(RunFolder(run).summary_path.read_text())
        typer.echo(f"run folder: {run}")

    @app.command("benchmark")
    def benchmark_command(
        matrix: Path = typer.Argument(..., help="Matrix YAML (heads x weights x datasets), e.g. configs/cpu_demo.yaml."),
        dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs and their status; run nothing."),
        jobs: int = typer.Option(1, "--jobs", "-j", help="Run this many jobs in parallel processes."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Run a benchmark matrix (resumable: finished jobs are skipped) and write the paper-style table."""
        from tabulate import tabulate

        from biqabench.benchmark import load_matrix, plan, run_matrix

        m = load_matrix(matrix)
        planned = plan(m)
        if dry_run:
            rows = [{"job": j.key, "head": j.config.head, "weights": j.config.weights,
                     "train": j.config.datasets()[0], "test": ",".join(j.config.datasets()[1]),
                     "status": j.status()} for j in planned]
            typer.echo(tabulate(rows, headers="keys", tablefmt="github"))
            typer.echo(f"{len(planned)} jobs, {sum(j.status() != 'finished' for j in planned)} to run")
            return
        run_matrix(m, jobs=jobs, progress=not no_progress, echo=typer.echo)
        folder = planned[0].folder.parent
        typer.echo((folder / "table.md").read_text() if (folder / "table.md").is_file() else "(no finished jobs)")

    @app.command("predict")
    def predict_command(
        inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
        run: str = typer.Option(..., help="A finished eval run (id, unique prefix or folder) whose model to use."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the CSV here (default: print it)."),
        device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps."),
        precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
    ) -> None:
        """Score images with a fine-tuned model (CSV: image, predicted MOS on the training set's scale)."""
        from biqabench import io
        from biqabench.predict import predict

        df = predict(run, [str(p) for p in inputs], device=device, precision=precision, progress=not no_progress)
        if output:
            io.write_text(output, df.to_csv(index=False))
            typer.echo(f"wrote {len(df)} scores to {output}")
        else:
            typer.echo(df.to_csv(index=False), nl=False)

    try:
        from biqabench import cli_results
    except ImportError:
        return
    cli_results.register(app)
