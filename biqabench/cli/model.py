"""CLI commands that use a trained model: ``score`` (alias ``predict``), ``export``, ``test``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

MODEL_HELP = ("A finished eval run (id, unique prefix or folder), a file from `biqabench export`, "
              "pyiqa:NAME (a pyiqa NR metric, weights from the local cache only) or pyiqa:hyperiqa:FILE / "
              "pyiqa:tres:FILE (pyiqa's checkpoint in our head).")


def _score(inputs: list[str], model: str, output: Optional[Path], skip_bad: bool, device: str, precision: str,
           split: int, progress: bool) -> None:
    from biqabench.base import io
    from biqabench.model.load import load_model
    from biqabench.model.scoring import score_paths

    m = load_model(model, device=device, precision=precision, split=split)
    df = score_paths(m, inputs, skip_bad=skip_bad, progress=progress)
    if output:
        io.write_text(output, df.to_csv(index=False))
        typer.echo(f"wrote {len(df)} rows to {output}")
    else:
        typer.echo(df.to_csv(index=False), nl=False)
    typer.echo(df.attrs["report"], err=True)


def score_command(
    inputs: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) and glob patterns ('shots/**/*.jpg')."),
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the CSV here (default: print it)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Give unreadable files an empty score and the reason (error column) instead of stopping."),
    split: int = typer.Option(0, help="Which split's model of a run (eval keeps split 0's; every split's with --save-all-models)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
) -> None:
    """Score images with a model: CSV of image, pred (native scale), pred_norm, scale, note, error.

    Test-time crops and normalisation are those of evaluation (same image, same score as in the
    run's predictions.csv).  A summary on stderr counts skipped and upscaled images and the
    predictions that fall outside the model's scale.

    Example:  biqabench score photos/ --model latest -o scores.csv
    """
    _score(inputs, model, output, skip_bad, device, precision, split, not no_progress)


def predict_command(
    inputs: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) and glob patterns."),
    run: Optional[str] = typer.Option(None, help="A finished eval run (id, unique prefix or folder): same as --model RUN."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the CSV here (default: print it)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Score the readable files, list the others."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
) -> None:
    """Alias of `biqabench score` (kept for scripts): --run RUN is --model RUN."""
    from biqabench.base.errors import BiqaError

    if not (run or model):
        raise BiqaError("predict needs --model SOURCE (or --run RUN); see: biqabench score --help")
    _score(inputs, model or run, output, skip_bad, device, precision, 0, not no_progress)


def export_command(
    run: str = typer.Argument(..., help="A finished eval run (id, unique prefix or folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="The model file to write (.safetensors)."),
    split: int = typer.Option(0, help="Which split's model (eval keeps split 0's; every finished split's with eval --save-all-models)."),
) -> None:
    """Write a run's model as one file: weights + a header (head, backbone, recipe, test crops,
    scale, training set, version).  Load it with --model FILE or biqabench.load_model(FILE)."""
    from biqabench.base.errors import BiqaError
    from biqabench.model.export import export_run

    if output.suffix != ".safetensors":
        raise BiqaError(f"-o {output}: model files end in .safetensors (e.g. -o model.safetensors)")
    path, info = export_run(run, output, split)
    typer.echo(f"wrote {path}: {info.head} on {info.backbone}, trained on {info.train_set}, "
               f"scale {info.scale_text()}, {info.test_patches or 'the covering grid of'} test crops of "
               f"{info.patch_size} px")


def test_command(
    model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    test: str = typer.Option(..., help="Comma list of datasets, each tested in full (see: biqabench datasets list)."),
    data_root: Optional[str] = typer.Option(None, help="Folder holding the datasets (else $BIQABENCH_DATA)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Drop (and log) unreadable or badly labelled images."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16."),
    run_dir: Optional[Path] = typer.Option(None, help="Write the run here instead of results/runs/<id>."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars (logs, CI)."),
) -> None:
    """Zero-shot cross-dataset test of an existing model (no training); writes a run folder like
    eval's, so `results show` / `results compare` work on it.

    Example:  biqabench test --model pyiqa:piqe --test demo-a,demo-b
    """
    from biqabench.evaluation.zeroshot import test_model

    run = test_model(model, test, data_root=data_root, skip_bad=skip_bad, device=device, precision=precision,
                     run_dir=run_dir, progress=not no_progress)
    typer.echo((run / "summary.md").read_text())
    typer.echo(f"run folder: {run}")


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)
    app.command("predict")(predict_command)
    app.command("export")(export_command)
    app.command("test")(test_command)
