"""The launcher flags ``benchmark`` and ``pretrain`` share: ``--launcher slurm`` and each job's
resources (see docs/cluster.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from biqabench.runtime.launch import SlurmOptions, minutes, parse_slurm_options

LAUNCHER = typer.Option("local", "--launcher", help="local (this machine) | slurm (each job submitted through submitit; docs/cluster.md).")
WAIT = typer.Option(True, "--wait/--no-wait", help="--launcher slurm: wait for the jobs and gather (default), or return once they are submitted and gather on a later call.")
PARTITION = typer.Option(None, "--partition", help="SLURM partition (default: the cluster's).")
ACCOUNT = typer.Option(None, "--account", help="SLURM account to charge.")
QOS = typer.Option(None, "--qos", help="SLURM quality of service.")
TIME = typer.Option(None, "--time", help="SLURM time limit of each job: minutes or [D-]HH:MM:SS (default 4:00:00). Near it a job checkpoints and requeues itself.")
CPUS = typer.Option(None, "--cpus", help="CPUs per task (default 8 with a GPU, else 2).")
MEM = typer.Option(None, "--mem", help="Memory per node in GB (default: the partition's).")
SLURM_OPTION = typer.Option(None, "--slurm-option", help="Any other sbatch option as KEY=VALUE (repeatable): constraint=a100, exclude=node7, mail-user=me@lab.org.")


def slurm_options(base: SlurmOptions | None = None, *, slurm_option: list[str] | None = None, **flags) -> SlurmOptions:
    """``base`` (a matrix's ``launcher:`` block) with the flags given on the command line on top."""
    base = base or SlurmOptions()
    changes = {k: v for k, v in flags.items() if v is not None}
    extra = parse_slurm_options(slurm_option or [])
    if extra:
        changes["options"] = {**base.options, **extra}
    out = dataclasses.replace(base, **changes)
    minutes(out.time)  # a malformed time limit stops here, before anything is submitted
    return out


def pretrain_on_slurm(name: str, options: dict, run_dir: Path | None, slurm: SlurmOptions, *, launcher: str,
                      wait: bool, dry_run: bool) -> None:
    """``biqabench pretrain NAME --launcher slurm``: one job, one task per GPU, into ``run_dir``
    (default ``results/pretrain/NAME-BACKBONE``, the folder a local run uses)."""
    from biqabench.base.errors import BiqaError
    from biqabench.base.paths import results_root
    from biqabench.runtime.slurm import submit_pretraining

    if launcher != "slurm":
        raise BiqaError(f"--launcher {launcher!r}: use local or slurm")
    for key in ("config", "data"):  # the job may start elsewhere: absolute paths
        if options.get(key) and Path(options[key]).exists():
            options = {**options, key: str(Path(options[key]).resolve())}
    folder = Path(run_dir) if run_dir else results_root() / "pretrain" / f"{name}-{options['backbone'].replace('/', '--')}"
    submit_pretraining(name, options, folder.resolve(), slurm, wait=wait, dry_run=dry_run, echo=typer.echo)
