"""Evaluation matrices (``biqabench benchmark``): heads x weights x training sets, one table.

A matrix YAML names the heads, the weights to swap into them, the datasets and the protocol.
Each (head, weights, train) cell becomes an eval run in ``results/benchmarks/<name>/<job>/``;
finished cells are skipped on a re-run, interrupted ones resume, ``--jobs N`` runs cells in
parallel processes (one GPU each when they run on CUDA) and ``--launcher slurm`` submits them as
SLURM jobs (:mod:`biqabench.runtime.slurm`; resources from the flags or a ``launcher:`` block).  The result is laid out like the QPT paper's main table (datasets as
columns, SRCC/PLCC, one row per head+weights) plus the per-head gain from swapping weights.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from biqabench.base import io
from biqabench.base.config import load_yaml, override
from biqabench.base.errors import BiqaError
from biqabench.base.paths import results_root
from biqabench.results.folder import RunFolder
from biqabench.evaluation.eval_config import EvalConfig, check_eval_config
from biqabench.components.weights import weights_label
from biqabench.runtime.jobs import eval_argv
from biqabench.runtime.launch import (LAUNCHERS, GpuSlots, SlurmOptions, cells_on_cuda, default_jobs, run_cell,
                                      uses_gpu, visible_gpus)


#: EvalConfig fields a matrix varies (as the lists ``heads``, ``weights``, ``train``) instead of fixing.
AXIS_FIELDS = ("head", "weights", "train")


@dataclass
class Matrix:
    """The axes of a matrix plus one base :class:`EvalConfig` that every job shares.

    In YAML the base's fields sit at the top level next to the axes (``backbone: resnet18``,
    ``splits: 3``, ``test: [...]``...), so a matrix file reads like an eval config with lists.
    """

    name: str = "benchmark"
    heads: list[str] = field(default_factory=lambda: ["hyperiqa"])
    weights: list[str] = field(default_factory=lambda: ["imagenet", "qpt"])
    train: list[str] = field(default_factory=list)   # each is trained on in turn ("" list: the embedded demo)
    baseline: str = ""                               # weights the gain is measured against ("" = first)
    base: EvalConfig = field(default_factory=EvalConfig)  # the rest of every job (test: cross-dataset sets)
    launcher: SlurmOptions = field(default_factory=SlurmOptions)  # each job's SLURM resources (--launcher slurm)


@dataclass
class Job:
    key: str
    config: EvalConfig
    folder: Path

    def status(self) -> str:
        """The job's run folder status as written ("pending" before it has a readable manifest)."""
        return RunFolder(self.folder).recorded_status() or "pending"


def load_matrix(path: str | Path) -> Matrix:
    where = f"matrix {path}"
    raw = load_yaml(path)
    axes = {f.name for f in dataclasses.fields(Matrix)} - {"base"}
    shared = {f.name for f in dataclasses.fields(EvalConfig)} - set(AXIS_FIELDS)
    for key in raw:
        if key not in axes | shared:
            close = difflib.get_close_matches(str(key), sorted(axes | shared), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(axes | shared))})"
            raise BiqaError(f"{where}: unknown key {key!r}{hint}")
    m = override(Matrix(), {k: v for k, v in raw.items() if k in axes}, where=where)
    base = override(EvalConfig(), {k: v for k, v in raw.items() if k in shared}, where=where)
    m = dataclasses.replace(m, base=check_eval_config(base, key=lambda name: f"{where}: {name}"))
    if not m.heads or not m.weights:
        raise BiqaError(f"{where}: 'heads' and 'weights' must each list at least one name")
    validate_names(m, where=where)
    return m


def validate_names(m: Matrix, where: str) -> None:
    """Catch a typo in any head, backbone, dataset or weights name before hours of jobs start."""
    from biqabench.components.plugins import registry
    from biqabench.components.registry import unknown_name_message
    from biqabench.components.weights import BUILTIN_NAMES, is_checkpoint_path

    try:
        registry("backbones").get(m.base.backbone)
        for h in m.heads:
            registry("heads").get(h)
        for d in [*m.train, *m.base.test]:
            registry("datasets").get(d)
    except BiqaError as exc:
        raise BiqaError(f"{where}: {exc}") from None
    known = [*BUILTIN_NAMES, *registry("pretrainers").names()]
    for w in m.weights:
        if w not in known and not is_checkpoint_path(w):
            raise BiqaError(f"{where}: {unknown_name_message('weights', w, known)}")
    # recipe overrides reach every job: check them once here, not in each job
    from biqabench.components.heads import head_spec

    for h in m.heads:
        override(head_spec(h).recipe, m.base.recipe_overrides, where=f"{where} recipe_overrides")


def plan(matrix: Matrix, root: Path | None = None) -> list[Job]:
    root = matrix_folder(matrix, root)
    trains = matrix.train or [""]
    jobs = []
    for head in matrix.heads:
        for weights in matrix.weights:
            for train in trains:
                cross = [t for t in matrix.base.test if t != train]
                cfg = dataclasses.replace(copy.deepcopy(matrix.base), head=head, weights=weights, train=train,
                                          test=cross)
                key = f"{head}__{weights_label(weights)}__{train or 'default'}"
                jobs.append(Job(key, cfg, root / key))
    return jobs


def matrix_folder(matrix: Matrix, root: Path | None = None) -> Path:
    return (root or results_root() / "benchmarks") / matrix.name


def prepare_cell(job: Job) -> Path:
    """The cell's folder and its config file (``<matrix>/<job>.yaml``), which its eval runs."""
    job.folder.mkdir(parents=True, exist_ok=True)
    cfg_file = job.folder.parent / f"{job.key}.yaml"
    io.write_text(cfg_file, yaml.safe_dump(dataclasses.asdict(job.config), sort_keys=False))
    return cfg_file


def cell_command(job: Job) -> list[str]:
    """The cell's ``biqabench eval`` command line (``--resume`` when it was interrupted)."""
    return eval_argv(job.folder, job.folder.parent / f"{job.key}.yaml")


def _run_job_subprocess(job: Job, slots: GpuSlots) -> tuple[str, int, str]:
    prepare_cell(job)
    cmd = cell_command(job)
    with slots.take() as placed:  # its own GPU (CUDA_VISIBLE_DEVICES) when the cells run on CUDA
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), **placed)
        code, last = run_cell(cmd, env)
    return job.key, code, last


def run_matrix(matrix: Matrix, *, jobs: int | None = None, root: Path | None = None, progress: bool = True,
               echo=print, launcher: str = "local", slurm: SlurmOptions | None = None,
               wait: bool = True) -> pd.DataFrame:
    """Run every pending cell and write the tables: in this process (``jobs`` 1), in ``jobs``
    local processes (default: one per GPU when the cells run on CUDA, each pinned to its GPU), or
    as SLURM jobs (``launcher="slurm"``, resources ``slurm`` or the matrix's ``launcher:`` block;
    ``wait=False`` returns once they are submitted: call again to gather)."""
    if launcher not in LAUNCHERS:
        raise BiqaError(f"--launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    todo = [j for j in plan(matrix, root) if j.status() != "finished"]
    if launcher == "slurm":
        failures = _run_on_slurm(matrix, todo, root, slurm or matrix.launcher, wait, echo)
    else:
        failures = _run_local(matrix, todo, default_jobs(matrix.base.device) if jobs is None else jobs,
                              progress, echo)
    table = write_tables(matrix, root)
    if failures:
        raise BiqaError(f"{len(failures)} job(s) failed (re-run to resume): " + "; ".join(failures))
    return table


def _run_local(matrix: Matrix, todo: list[Job], jobs: int, progress: bool, echo) -> list[str]:
    from biqabench.evaluation.runner import evaluate

    failures = []
    if jobs <= 1:
        for job in todo:
            echo(f"[{job.key}] running")
            if job.status() in ("running", "interrupted"):
                evaluate(resume=job.folder, progress=progress)
            else:
                evaluate(job.config, run_dir=job.folder, progress=progress)
        return failures
    slots = GpuSlots(visible_gpus() if cells_on_cuda(matrix.base.device) else [], jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for key, rc, last in pool.map(functools.partial(_run_job_subprocess, slots=slots), todo):
            echo(f"[{key}] {'done' if rc == 0 else 'FAILED: ' + last}")
            if rc != 0:
                failures.append(f"{key}: {last}")
    return failures


def _run_on_slurm(matrix: Matrix, todo: list[Job], root: Path | None, options: SlurmOptions, wait: bool,
                  echo) -> list[str]:
    """Submit the cells not already in flight (one job array), then wait and gather, or return."""
    from biqabench.runtime import slurm

    folder = matrix_folder(matrix, root) / "slurm"
    states = slurm.queue_states()
    flying = slurm.in_flight([j.key for j in todo], folder, states)
    fresh = [j for j in todo if j.key not in flying]
    ledger, commands = slurm.read_ledger(folder), {}
    for job in fresh:
        if job.key in ledger:  # its job ended without finishing it: resubmitted, the cell resumes
            echo(f"[{job.key}] resubmitting (job {ledger[job.key]} ended: {slurm.log_tail(folder, ledger[job.key])})")
        # eval_argv itself, not cell_command: the job's own process then imports neither torch nor pandas
        commands[job.key] = functools.partial(eval_argv, job.folder, prepare_cell(job))
    ids = slurm.submit(commands, folder, options, f"biqabench-{matrix.name}", uses_gpu(matrix.base.device))
    for key, jid in ids.items():
        echo(f"[{key}] submitted: SLURM job {jid}")
    jobs = {**flying, **ids}
    if not wait:
        echo(f"{len(jobs)} job(s) on SLURM (logs in {folder}); run the same command again to gather the tables")
        return []
    by_key = {j.key: j for j in todo}
    return slurm.gather(jobs, lambda key: by_key[key].status() == "finished", folder, echo)


def collect(matrix: Matrix, root: Path | None = None) -> pd.DataFrame:
    """All finished cells' per-split metrics with head/weights columns."""
    frames = []
    for job in plan(matrix, root):
        if job.status() == "finished":
            df = RunFolder(job.folder).read_metrics()
            frames.append(df.assign(head=job.config.head, weights=job.config.weights))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


GAIN_NOTE = ("\n\nmedian of per-split deltas; 95% CI: percentile bootstrap (scipy.stats.bootstrap); "
             "Wilcoxon: two-sided signed-rank p-value of the per-split deltas (biqabench.base.stats); "
             "splits up: on how many splits the weights scored higher.\n")


def write_tables(matrix: Matrix, root: Path | None = None) -> pd.DataFrame:
    from biqabench.evaluation.compare import paired_gain
    from biqabench.evaluation.report_matrix import matrix_report, write_report_quietly
    from biqabench.results import paper_table, render

    folder = matrix_folder(matrix, root)
    df = collect(matrix, root)
    if df.empty:
        return df
    table = paper_table(df)
    baseline = matrix.baseline or matrix.weights[0]
    gain = paired_gain(df, baseline)
    gain_text = render(gain, "markdown") + GAIN_NOTE if not gain.empty else \
        f"(not available: no finished jobs of the baseline weights {baseline} to pair with)\n"
    parts = [f"# {matrix.name}\n", f"Median over {matrix.base.splits} splits; backbone {matrix.base.backbone}; "
             f"protocol {matrix.base.protocol}.\n", render(table, "markdown"),
             f"\n\n## Gain from swapping weights, paired by split (vs {baseline})\n", gain_text]
    io.write_text(folder / "table.md", "\n".join(parts))
    io.write_text(folder / "table.tex", render(table, "latex"))
    io.write_text(folder / "table.csv", render(table, "csv"))
    io.write_text(folder / "metrics.csv", df.to_csv(index=False))
    write_info(matrix, root)
    write_report_quietly(matrix_report, folder)
    return table


def write_info(matrix: Matrix, root: Path | None = None) -> Path:
    """``matrix.json``: the axes, the baseline and every job's folder, so that the folder alone
    says what it holds (``biqabench report`` reads it)."""
    folder = matrix_folder(matrix, root)
    jobs = [{"key": j.key, "head": j.config.head, "weights": j.config.weights, "train": j.config.train}
            for j in plan(matrix, root)]
    return io.write_json(folder / "matrix.json", {
        "name": matrix.name, "heads": matrix.heads, "weights": matrix.weights, "train": matrix.train,
        "baseline": matrix.baseline or matrix.weights[0], "backbone": matrix.base.backbone,
        "splits": matrix.base.splits, "protocol": matrix.base.protocol, "test": matrix.base.test, "jobs": jobs})
