"""``biqabench pretrain NAME``: pretrain a backbone and save its weights in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from biqabench.cli import launch as cli_launch
from biqabench.components.pretrain import PretrainRequest  # the pretrain options' defaults are its fields


def pretrain_command(
    name: str = typer.Argument(..., help="Pretraining strategy, e.g. qpt (see: biqabench pretrainers list)."),
    backbone: str = typer.Option(PretrainRequest.backbone, help="Backbone to pretrain (see: biqabench backbones list)."),
    data: Optional[str] = typer.Option(None, help="Folder of unlabelled images (any depth, ImageNet layout too). Default: the embedded demo images."),
    steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    epochs: Optional[int] = typer.Option(None, help="Stop after this many passes over --data."),
    batch_size: Optional[int] = typer.Option(None, help="Images per step (default: the config's)."),
    patch_size: Optional[int] = typer.Option(None, help="Patch side in pixels (default: the config's)."),
    config: Optional[str] = typer.Option(None, help="YAML overriding the strategy's defaults (e.g. configs/qpt_pretrain_paper.yaml), or a preset it ships: cpu | paper."),
    resume: bool = typer.Option(PretrainRequest.resume, help="Continue the interrupted run from its last checkpoint."),
    device: str = typer.Option(PretrainRequest.device, help="auto | cpu | cuda | cuda:N | mps."),
    precision: str = typer.Option(PretrainRequest.precision, help="auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)."),
    seed: int = typer.Option(PretrainRequest.seed, help="Seed for degradations, patches and initialisation."),
    workers: Optional[int] = typer.Option(None, help="DataLoader worker processes (default: the config's)."),
    run_dir: Optional[Path] = typer.Option(None, help="Folder for checkpoints and logs (default: results/pretrain/NAME-BACKBONE)."),
    nan_policy: str = typer.Option(PretrainRequest.nan_policy, help="A NaN/Inf loss: stop (one line naming the step and the last good checkpoint) | skip the step (counted in the weights manifest)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
    compile: bool = typer.Option(PretrainRequest.compile, "--compile", help="Run the training step through torch.compile (first steps pay the compilation)."),
    snapshots: Optional[str] = typer.Option(None, help="Comma list of steps whose backbone is also saved, as RUN_DIR/snapshots/stepNNNNNN.safetensors (0: the initialisation), e.g. 0,250,500: usable as --weights FILE."),
    launcher: str = cli_launch.LAUNCHER,
    nodes: int = typer.Option(1, "--nodes", help="--launcher slurm: nodes of the job (one torch.distributed group across them)."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="--launcher slurm: GPUs per node, one task (process) each (default 1 unless --device cpu)."),
    tasks_per_node: Optional[int] = typer.Option(None, "--tasks-per-node", help="--launcher slurm: processes per node (default: one per GPU; CPU-only jobs: 1)."),
    wait: bool = cli_launch.WAIT,
    partition: Optional[str] = cli_launch.PARTITION,
    account: Optional[str] = cli_launch.ACCOUNT,
    qos: Optional[str] = cli_launch.QOS,
    time: Optional[str] = cli_launch.TIME,
    cpus: Optional[int] = cli_launch.CPUS,
    mem: Optional[float] = cli_launch.MEM,
    slurm_option: Optional[list[str]] = cli_launch.SLURM_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="--launcher slurm: print what would be submitted; submit nothing."),
) -> None:
    """Pretrain a backbone and save its weights in the store (then: --weights NAME).

    With --launcher slurm it runs as one SLURM job of --nodes x --gpus-per-node processes (DDP,
    rank 0 writes), which checkpoints and requeues itself near its time limit (docs/cluster.md)."""
    from biqabench.components.plugins import registry
    from biqabench.training.pretraining import pretrain as run_pretrain
    from biqabench.training.snapshots import parse_steps

    registry("backbones").get(backbone)  # fail fast on a typo
    options = dict(backbone=backbone, data=data, steps=steps, epochs=epochs, batch_size=batch_size,
                   patch_size=patch_size, config=config or None, resume=resume,
                   device=device, precision=precision, seed=seed, workers=workers, nan_policy=nan_policy,
                   compile=compile)
    if snapshots:
        options["snapshots"] = parse_steps(snapshots)  # a bad list stops here, before a job starts
    if launcher != "local":
        slurm = cli_launch.slurm_options(nodes=nodes, gpus=gpus_per_node, tasks_per_node=tasks_per_node,
                                         partition=partition, account=account, qos=qos, time=time, cpus=cpus,
                                         mem=mem, slurm_option=slurm_option)
        cli_launch.pretrain_on_slurm(name, options, run_dir, slurm, launcher=launcher, wait=wait, dry_run=dry_run)
        return
    rec = run_pretrain(name, **options, run_dir=run_dir, progress=not no_progress)
    typer.echo(f"saved {rec.name} weights for {rec.backbone}: {rec.file}")


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_command)
