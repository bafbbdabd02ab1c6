"""Evaluation matrices (``biqabench benchmark``): heads x weights x training sets, one table.

A matrix YAML names the heads, the weights to swap into them, the datasets and the protocol.
Each (head, weights, train) cell becomes an eval run in ``results/benchmarks/<name>/<job>/``;
finished cells are skipped on a re-run, interrupted ones resume, and ``--jobs N`` runs cells in
parallel processes.  The result is laid out like the QPT paper's main table (datasets as
columns, SRCC/PLCC, one row per head+weights) plus the per-head gain from swapping weights.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from biqabench import io
from biqabench.config import load_yaml, override
from biqabench.errors import BiqaError
from biqabench.paths import results_root
from biqabench.results.folder import RunFolder
from biqabench.eval_config import EvalConfig, check_eval_config
from biqabench.weights import weights_label


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
    from biqabench.plugins import registry
    from biqabench.registry import unknown_name_message
    from biqabench.weights import BUILTIN_NAMES, is_checkpoint_path

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
    from biqabench.heads import head_spec

    for h in m.heads:
        override(head_spec(h).recipe, m.base.recipe_overrides, where=f"{where} recipe_overrides")


def plan(matrix: Matrix, root: Path | None = None) -> list[Job]:
    root = (root or results_root() / "benchmarks") / matrix.name
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


def _run_job_subprocess(job: Job) -> tuple[str, int, str]:
    job.folder.mkdir(parents=True, exist_ok=True)
    cfg_file = job.folder.parent / f"{job.key}.yaml"
    io.write_text(cfg_file, yaml.safe_dump(dataclasses.asdict(job.config), sort_keys=False))
    cmd = [sys.executable, "-m", "biqabench", "eval"]
    cmd += ["--resume", str(job.folder)] if job.status() in ("running", "interrupted") else \
        ["--config", str(cfg_file), "--run-dir", str(job.folder)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(cmd + ["--no-progress"], capture_output=True, text=True, env=env)
    return job.key, proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]


def run_matrix(matrix: Matrix, *, jobs: int = 1, root: Path | None = None, progress: bool = True,
               echo=print) -> pd.DataFrame:
    """Run every pending cell (in ``jobs`` parallel processes) and write the tables."""
    from biqabench.runner import evaluate

    todo = [j for j in plan(matrix, root) if j.status() != "finished"]
    failures = []
    if jobs <= 1:
        for job in todo:
            echo(f"[{job.key}] running")
            if job.status() in ("running", "interrupted"):
                evaluate(resume=job.folder, progress=progress)
            else:
                evaluate(job.config, run_dir=job.folder, progress=progress)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for key, rc, last in pool.map(_run_job_subprocess, todo):
                echo(f"[{key}] {'done' if rc == 0 else 'FAILED: ' + last}")
                if rc != 0:
                    failures.append(f"{key}: {last}")
    table = write_tables(matrix, root)
    if failures:
        raise BiqaError(f"{len(failures)} job(s) failed (re-run to resume): " + "; ".join(failures))
    return table


def collect(matrix: Matrix, root: Path | None = None) -> pd.DataFrame:
    """All finished cells' per-split metrics with head/weights columns."""
    frames = []
    for job in plan(matrix, root):
        if job.status() == "finished":
            df = RunFolder(job.folder).read_metrics()
            frames.append(df.assign(head=job.config.head, weights=job.config.weights))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def paired_gain_text(df: pd.DataFrame, baseline: str) -> str:
    """The gain split by split (every job of a matrix uses the same seeds, hence the same splits):
    median delta, its bootstrap CI and the Wilcoxon p-value (:mod:`biqabench.compare`)."""
    from biqabench.compare import paired_gain
    from biqabench.results import render

    table = paired_gain(df, baseline)
    if table.empty:
        return ""
    return (f"\n## Paired gain per split (vs {baseline})\n\n" + render(table, "markdown")
            + "\n\nmedian of per-split deltas; 95% CI: percentile bootstrap (scipy.stats.bootstrap); "
              "Wilcoxon: two-sided signed-rank p-value of the per-split deltas.\n")


def write_tables(matrix: Matrix, root: Path | None = None) -> pd.DataFrame:
    from biqabench.results import paper_table, render, weight_gain

    folder = (root or results_root() / "benchmarks") / matrix.name
    df = collect(matrix, root)
    if df.empty:
        return df
    table = paper_table(df)
    baseline = matrix.baseline or matrix.weights[0]
    try:
        gain_text = render(weight_gain(df, baseline=baseline), "markdown")
    except BiqaError as exc:  # e.g. the baseline's jobs have not finished (yet)
        gain_text = f"(not available: {exc})"
    parts = [f"# {matrix.name}\n", f"Median over {matrix.base.splits} splits; backbone {matrix.base.backbone}; "
             f"protocol {matrix.base.protocol}.\n", render(table, "markdown"),
             f"\n\n## Gain from swapping weights (vs {baseline})\n", gain_text, "\n", paired_gain_text(df, baseline)]
    io.write_text(folder / "table.md", "\n".join(parts))
    io.write_text(folder / "table.tex", render(table, "latex"))
    io.write_text(folder / "table.csv", render(table, "csv"))
    io.write_text(folder / "metrics.csv", df.to_csv(index=False))
    write_info(matrix, root)
    from biqabench.results.report import matrix_report, write_report_quietly

    write_report_quietly(matrix_report, folder)
    return table


def write_info(matrix: Matrix, root: Path | None = None) -> Path:
    """``matrix.json``: the axes, the baseline and every job's folder, so that the folder alone
    says what it holds (``biqabench report`` reads it)."""
    folder = (root or results_root() / "benchmarks") / matrix.name
    jobs = [{"key": j.key, "head": j.config.head, "weights": j.config.weights, "train": j.config.train}
            for j in plan(matrix, root)]
    return io.write_json(folder / "matrix.json", {
        "name": matrix.name, "heads": matrix.heads, "weights": matrix.weights, "train": matrix.train,
        "baseline": matrix.baseline or matrix.weights[0], "backbone": matrix.base.backbone,
        "splits": matrix.base.splits, "protocol": matrix.base.protocol, "test": matrix.base.test, "jobs": jobs})
