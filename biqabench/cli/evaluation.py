"""``biqabench eval``, ``probe`` and ``benchmark``: evaluations that train (or fit) and test."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from biqabench.cli import launch as cli_launch
from biqabench.data.embedded import EMBEDDED_TEST, EMBEDDED_TRAIN
from biqabench.evaluation.eval_config import EvalConfig, ProbeConfig

# Defaults quoted in the help come from the config dataclasses, which own them.
_E, _P = EvalConfig, ProbeConfig
_DEMO_TEST = ",".join(EMBEDDED_TEST)


def eval_command(
    head: Optional[str] = typer.Option(None, help=f"IQA head (see: biqabench heads list). Default {_E.head}."),
    weights: Optional[str] = typer.Option(None, help=f"Backbone weights: random | imagenet | qpt (or any pretrainer) | a checkpoint path. Default {_E.weights}."),
    backbone: Optional[str] = typer.Option(None, help=f"Backbone (see: biqabench backbones list). Default {_E.backbone}."),
    train: Optional[str] = typer.Option(None, help=f"Dataset to fine-tune on (see: biqabench datasets list). Default: the embedded {EMBEDDED_TRAIN}."),
    test: Optional[str] = typer.Option(None, help=f"Comma list of datasets for cross-dataset tests (tested in full). Default with no --train: {_DEMO_TEST}."),
    splits: Optional[int] = typer.Option(None, help=f"Number of seeded train/test splits (seed, seed+1, ...). Default {_E.splits}."),
    seed: Optional[int] = typer.Option(None, help=f"First split's seed. Default {_E.seed}."),
    splits_from: Optional[str] = typer.Option(None, "--splits-from", help="Reuse another run's split files (splits/split_<k>.csv) exactly: its id, a unique part, or its folder. Needed to compare two runs split by split."),
    official_split: Optional[bool] = typer.Option(None, "--official-split", help="Use the dataset's official train/val/test split (one split; KonIQ-10k, FLIVE) instead of seeded ones."),
    val_frac: Optional[float] = typer.Option(None, "--val-frac", help=f"Share of each split's training part held out to pick the epoch (default {_E.val_frac:g}; 0: keep the final epoch)."),
    protocol: Optional[str] = typer.Option(None, help="finetune (train everything) | linear-probe (no SGD epochs: runs `biqabench probe`, a ridge on frozen pooled features, on these splits; --head and --recipe do not apply)."),
    recipe: Optional[str] = typer.Option(None, help="auto | paper | cpu | a YAML file of recipe fields. auto: cpu on CPU, paper on GPUs."),
    config: Optional[Path] = typer.Option(None, help="YAML with any of these options (command-line options win)."),
    data_root: Optional[str] = typer.Option(None, help="Folder holding the datasets (else $BIQABENCH_DATA)."),
    skip_bad: Optional[bool] = typer.Option(None, "--skip-bad", help="Drop (and log) unreadable or badly labelled images instead of stopping."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps."),
    precision: Optional[str] = typer.Option(None, help="auto | fp32 | bf16 | fp16."),
    workers: Optional[int] = typer.Option(None, help="DataLoader workers (-1: automatic)."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic", help="torch deterministic algorithms, cuDNN autotuning off; ops with no deterministic version still run and are listed in the manifest."),
    plcc_fit: Optional[str] = typer.Option(None, "--plcc-fit", help=f"Mapping before PLCC/RMSE (logistic): logistic4 | logistic5 (VQEG). Default {_E.plcc_fit}."),
    save_all_models: Optional[bool] = typer.Option(None, "--save-all-models", help="Keep every split's fine-tuned head (splits/<k>/model.safetensors), not only split 0's, so `biqabench export --split K` works for any split."),
    compile: Optional[bool] = typer.Option(None, "--compile", help="Run the fine-tuning step through torch.compile (first steps pay the compilation)."),
    nan_policy: Optional[str] = typer.Option(None, help=f"A NaN/Inf loss: stop (one line naming the split, step and last good checkpoint) | skip the batch (counted in the manifest). Default {_E.nan_policy}."),
    resume: Optional[str] = typer.Option(None, help="Continue an interrupted run (its id, a unique prefix, or its folder). Uses the weights file the run pinned (refused if it changed)."),
    run_dir: Optional[Path] = typer.Option(None, help="Write the run here instead of results/runs/<id>."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars (logs, CI)."),
) -> None:
    """Fine-tune a head on N seeded splits and test it intra- and cross-dataset.

    Writes results/runs/<id>/ with config.yaml, manifest.json, predictions.csv, metrics.csv
    (SRCC, KRCC, PLCC raw and logistic-mapped, RMSE per split and test set), summary.md and plots.
    With no datasets named it runs on the embedded demo sets (train demo-a, test demo-b).
    """
    from biqabench.evaluation.runner import evaluate

    overrides = dict(head=head, weights=weights, backbone=backbone, train=train,
                     test=[t.strip() for t in test.split(",") if t.strip()] if test is not None else None,
                     splits=splits, seed=seed, splits_from=splits_from, official_split=official_split,
                     val_frac=val_frac, deterministic=deterministic, plcc_fit=plcc_fit, protocol=protocol,
                     recipe=recipe, data_root=data_root, skip_bad=skip_bad,
                     device=device, precision=precision, workers=workers, nan_policy=nan_policy,
                     compile=compile, save_all_models=save_all_models)
    if resume:
        run = evaluate(resume=resume, progress=not no_progress)
    else:
        run = evaluate(config, run_dir=run_dir, progress=not no_progress, **overrides)
    from biqabench.results import RunFolder

    typer.echo(RunFolder(run).summary_path.read_text())
    _echo_report(run)
    typer.echo(f"run folder: {run}")


def _echo_report(folder: Path) -> None:
    """The report's path, when the run or matrix wrote one (its last lines name its folder)."""
    if (Path(folder) / "report.html").is_file():
        typer.echo(f"report: {Path(folder) / 'report.html'}")


def probe_command(
    weights: Optional[str] = typer.Option(None, help=f"Backbone weights: random | imagenet | qpt (or any pretrainer) | a checkpoint path. Default {_P.weights}."),
    backbone: Optional[str] = typer.Option(None, help=f"Backbone (see: biqabench backbones list). Default {_P.backbone}."),
    train: Optional[str] = typer.Option(None, help=f"Dataset to fit the ridge on, split by --splits (default: the embedded {EMBEDDED_TRAIN})."),
    test: Optional[str] = typer.Option(None, help="Comma list of datasets scored in full by each split's ridge (cross-dataset)."),
    splits: Optional[int] = typer.Option(None, help=f"Number of seeded content-aware splits, as in eval. Default {_P.splits}."),
    seed: Optional[int] = typer.Option(None, help=f"First split's seed (and the seed of random weights). Default {_P.seed}."),
    splits_from: Optional[str] = typer.Option(None, "--splits-from", help="Reuse another run's split files (eval's or probe's) exactly: its id, a unique part, or its folder. Pairs the probe with that run in `results compare`."),
    official_split: Optional[bool] = typer.Option(None, "--official-split", help="Use the dataset's official split (one split; KonIQ-10k, FLIVE) instead of seeded ones."),
    size: Optional[int] = typer.Option(None, help=f"Shorter side (px) of the whole image fed to the backbone; 0: native. Default {_P.size}."),
    half_scale: Optional[bool] = typer.Option(None, "--half-scale/--no-half-scale", help=f"Add the features of a half-scale copy (CONTRIQUE). Default {'on' if _P.half_scale else 'off'}."),
    folds: Optional[int] = typer.Option(None, help=f"Inner CV folds on the training part that choose alpha. Default {_P.folds}."),
    config: Optional[Path] = typer.Option(None, help="YAML with any of these options (command-line options win)."),
    data_root: Optional[str] = typer.Option(None, help="Folder holding the datasets (else $BIQABENCH_DATA)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps."),
    precision: Optional[str] = typer.Option(None, help=f"fp32 | bf16 | fp16 | auto. Default {_P.precision}."),
    run_dir: Optional[Path] = typer.Option(None, help="Write the run here instead of results/runs/<id>."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars (logs, CI)."),
) -> None:
    """Linear probe: ridge regression on frozen backbone features (how CONTRIQUE/Re-IQA/ARNIQA judge
    pretrained weights).

    Each whole image and a half-scale copy go through the frozen backbone once; the mean and std
    of every stage are cached under $BIQABENCH_CACHE/features (keyed on the weights' sha256), so
    probing the same weights again extracts nothing. Ridge alpha is chosen by inner CV on each
    split's training part only. Same splits (written as splits/split_<k>.csv, equal to eval's for
    the same seed and dataset) and run folder as eval: compare with
    `biqabench results compare RUN_A RUN_B`.

    Example:  biqabench probe --weights random --backbone resnet18 --train clive --data-root ../shared/data
    """
    from biqabench.evaluation.probe import run_probe

    overrides = dict(weights=weights, backbone=backbone, train=train,
                     test=[t.strip() for t in test.split(",") if t.strip()] if test is not None else None,
                     splits=splits, seed=seed, splits_from=splits_from, official_split=official_split,
                     size=size, half_scale=half_scale, folds=folds,
                     data_root=data_root, device=device, precision=precision)
    run = run_probe(config, run_dir=run_dir, progress=not no_progress, **overrides)
    typer.echo((run / "summary.md").read_text())
    _echo_report(run)
    typer.echo(f"run folder: {run}")


def benchmark_command(
    matrix: Path = typer.Argument(..., help="Matrix YAML (heads x weights x datasets), e.g. configs/cpu_demo.yaml."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs and their status (and, with --launcher slurm, what would be submitted); run nothing."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Run this many jobs in parallel local processes, each pinned to its own GPU when the cells run on CUDA (default: one per GPU then, else 1)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    launcher: str = cli_launch.LAUNCHER,
    wait: bool = cli_launch.WAIT,
    partition: Optional[str] = cli_launch.PARTITION,
    account: Optional[str] = cli_launch.ACCOUNT,
    qos: Optional[str] = cli_launch.QOS,
    time: Optional[str] = cli_launch.TIME,
    gpus: Optional[int] = typer.Option(None, "--gpus", help="--launcher slurm: GPUs per job (default 1 when the cells use CUDA: device auto or cuda)."),
    cpus: Optional[int] = cli_launch.CPUS,
    mem: Optional[float] = cli_launch.MEM,
    slurm_option: Optional[list[str]] = cli_launch.SLURM_OPTION,
) -> None:
    """Run a benchmark matrix (resumable: finished jobs are skipped) and write the paper-style table.

    Cells run here (--jobs N processes, one GPU each), or as SLURM jobs with --launcher slurm
    (resources from these flags or the matrix's launcher: block; docs/cluster.md)."""
    from biqabench.evaluation.benchmark import load_matrix, matrix_folder, plan, run_matrix

    m = load_matrix(matrix)
    m.launcher = cli_launch.slurm_options(m.launcher, partition=partition, account=account, qos=qos, time=time,
                                          gpus=gpus, cpus=cpus, mem=mem, slurm_option=slurm_option)
    if dry_run:
        _benchmark_dry_run(m, plan(m), launcher, jobs)
        return
    run_matrix(m, jobs=jobs, progress=not no_progress, echo=typer.echo, launcher=launcher, wait=wait)
    folder = matrix_folder(m)
    typer.echo((folder / "table.md").read_text() if (folder / "table.md").is_file() else "(no finished jobs)")
    _echo_report(folder)


def _benchmark_dry_run(m, planned: list, launcher: str, jobs: Optional[int]) -> None:
    from tabulate import tabulate

    from biqabench.evaluation.benchmark import matrix_folder
    from biqabench.runtime.launch import cells_on_cuda, default_jobs, uses_gpu, visible_gpus

    rows = [{"job": j.key, "head": j.config.head, "weights": j.config.weights,
             "train": j.config.datasets()[0], "test": ",".join(j.config.datasets()[1]),
             "status": j.status()} for j in planned]
    typer.echo(tabulate(rows, headers="keys", tablefmt="github"))
    todo = sum(j.status() != "finished" for j in planned)
    typer.echo(f"{len(planned)} jobs, {todo} to run")
    if launcher == "slurm":
        from biqabench.runtime.slurm import dry_run_text

        typer.echo(dry_run_text(m.launcher, f"biqabench-{m.name}", uses_gpu(m.base.device),
                                matrix_folder(m) / "slurm", todo))
    else:
        n = default_jobs(m.base.device) if jobs is None else jobs
        gpus = visible_gpus() if cells_on_cuda(m.base.device) and n > 1 else []
        typer.echo(f"local: {n} process(es)" + (f", each on its own GPU of {','.join(gpus)}" if gpus else ""))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("probe")(probe_command)
    app.command("benchmark")(benchmark_command)
