"""``biqabench study STUDY.yaml``: pretraining strategies x seeds x protocols, one table.

Every pretraining run and every evaluation is a *cell* with its own folder under
``results/studies/<name>/``:

* ``pretrain/<strategy>-seed<k>/``: a ``biqabench pretrain`` run folder (checkpoints, losses,
  ``run.json``) whose backbone is saved at the study's snapshot steps
  (``snapshots/step<NNNNNN>.safetensors``, :mod:`biqabench.training.snapshots`); the strategy
  ``random`` writes the seeded random initialisation as its step 0 instead;
* ``<protocol>/<strategy>-seed<k>-step<N>/``: a ``probe`` or ``eval`` run folder of that snapshot
  (``biqabench results compare`` reads any two of them).

A re-run skips finished cells and resumes interrupted ones: a pretraining from its last checkpoint
(resume is exact), an eval with ``--resume``, a probe from scratch (its features are cached).
``--jobs N`` runs cells in N processes (pretraining first, then evaluation).  Then
:func:`write_outputs` gathers every (strategy, seed, step, protocol, test set, split) SRCC into
``long.csv`` and writes ``table.md``/``table.csv`` (each strategy's last step), ``steps.csv`` (every
step) with the statistics of :mod:`biqabench.base.seed_stats`, ``study.png`` (SRCC against
pretraining step, a band over seeds) and ``study.json`` (what ran, where, how long).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from biqabench.base import io
from biqabench.base.errors import BiqaError
from biqabench.base.paths import results_root
from biqabench.evaluation.study_config import Protocol, Strategy, Study, eval_config, settings
from biqabench.runtime.jobs import eval_argv, pretrain_argv, recorded_status
from biqabench.runtime.launch import run_cell
from biqabench.training.snapshots import snapshot_path


@dataclass
class PretrainCell:
    strategy: Strategy
    seed: int
    steps: int
    snapshots: list[int]
    folder: Path

    @property
    def key(self) -> str:
        return f"{self.strategy.name}-seed{self.seed}"

    def snapshot(self, step: int) -> Path:
        return snapshot_path(self.folder, step)

    def status(self) -> str:
        done = all(self.snapshot(s).is_file() for s in self.snapshots)
        if done and (not self.strategy.pretrains or (self.folder / "run.json").is_file()):
            return "finished"
        return "interrupted" if (self.folder / "checkpoint.pt").is_file() else "pending"


@dataclass
class EvalCell:
    source: PretrainCell
    step: int
    protocol: Protocol
    folder: Path

    @property
    def key(self) -> str:
        return f"{self.protocol.name}/{self.source.key}-step{self.step}"

    def status(self) -> str:
        return recorded_status(self.folder) or "pending"


def study_folder(study: Study, root: Path | None = None) -> Path:
    return (root or results_root() / "studies") / study.name


def plan(study: Study, root: Path | None = None) -> tuple[list[PretrainCell], list[EvalCell]]:
    """Every cell of the study, in a fixed order (strategy, seed, step, protocol)."""
    folder = study_folder(study, root)
    pretrain, evals = [], []
    for strategy in study.pretrainers:
        for seed in study.seeds:
            steps = study.snapshot_steps(strategy)
            cell = PretrainCell(strategy, seed, study.steps_of(strategy), steps,
                                folder / "pretrain" / f"{strategy.name}-seed{seed}")
            pretrain.append(cell)
            for step in steps:
                for protocol in study.protocols:
                    evals.append(EvalCell(cell, step, protocol, folder / protocol.name / f"{cell.key}-step{step}"))
    return pretrain, evals


# -- pretraining cells ------------------------------------------------------------------------------
def pretrain_config(study: Study, cell: PretrainCell) -> Path:
    """The cell's strategy config (preset or file, then the study's shared settings, then the
    strategy's own), written whole to ``<cell>/pretrain.yaml``: the run reads it, a reader sees it."""
    from biqabench.components.plugins import registry

    cls = registry("pretrainers").get(cell.strategy.name).method_class()
    cfg = cls.load_config(cell.strategy.config, {**study.pretraining, **cell.strategy.options})
    path = cell.folder / "pretrain.yaml"
    io.write_text(path, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path


def pretrain_options(study: Study, cell: PretrainCell) -> dict:
    return dict(backbone=study.backbone, data=study.photos or None, steps=cell.steps,
                config=str(pretrain_config(study, cell)), seed=cell.seed, device=study.device,
                precision=study.precision, snapshots=tuple(cell.snapshots))


def write_random(study: Study, cell: PretrainCell) -> None:
    """The ``random`` strategy: the backbone's initialisation under ``torch.manual_seed(seed)``."""
    import torch

    from biqabench.components.backbones import create_backbone
    from biqabench.training.snapshots import save_snapshot

    torch.manual_seed(cell.seed)
    save_snapshot(cell.folder, 0, create_backbone(study.backbone, weights="random"))


def run_pretrain_cell(study: Study, cell: PretrainCell, progress: bool = True) -> None:
    if not cell.strategy.pretrains:
        write_random(study, cell)
        return
    from biqabench.components.plugins import registry
    from biqabench.components.pretrain import PretrainRequest
    from biqabench.components.weights import WeightsStore
    from biqabench.training.pretraining import run_spec

    request = PretrainRequest(**pretrain_options(study, cell), run_dir=cell.folder, progress=progress,
                              store=WeightsStore(cell.folder / "weights"), resume=cell.status() == "interrupted")
    run_spec(registry("pretrainers").get(cell.strategy.name), request)


def pretrain_command(study: Study, cell: PretrainCell) -> tuple[list[str], dict]:
    """The cell as a ``biqabench pretrain`` process (``--jobs``): argv and extra environment."""
    argv = pretrain_argv(cell.strategy.name, pretrain_options(study, cell), cell.folder,
                         cell.status() == "interrupted")
    return argv, {"BIQABENCH_WEIGHTS": str(cell.folder / "weights")}


# -- evaluation cells -------------------------------------------------------------------------------
def cell_config(study: Study, cell: EvalCell):
    return eval_config(study, cell.protocol, weights=str(cell.source.snapshot(cell.step).resolve()))


def run_eval_cell(study: Study, cell: EvalCell, progress: bool = True) -> None:
    cfg = cell_config(study, cell)
    if cell.protocol.kind == "probe":  # no resume: a probe re-reads its cached features
        from biqabench.evaluation.probe import run_probe

        run_probe(cfg, run_dir=cell.folder, progress=progress)
        return
    from biqabench.evaluation.runner import evaluate

    if cell.status() in ("running", "interrupted"):
        evaluate(resume=cell.folder, progress=progress)
    else:
        evaluate(cfg, run_dir=cell.folder, progress=progress)


def eval_command(study: Study, cell: EvalCell) -> tuple[list[str], dict]:
    cell.folder.mkdir(parents=True, exist_ok=True)
    cfg_file = cell.folder.parent / f"{cell.folder.name}.yaml"
    io.write_text(cfg_file, yaml.safe_dump(dataclasses.asdict(cell_config(study, cell)), sort_keys=False))
    if cell.protocol.kind == "probe":
        return [sys.executable, "-m", "biqabench", "probe", "--config", str(cfg_file), "--run-dir",
                str(cell.folder), "--no-progress"], {}
    return eval_argv(cell.folder, cfg_file), {}


# -- running ----------------------------------------------------------------------------------------
def run_study(study: Study, *, jobs: int = 1, root: Path | None = None, progress: bool = True,
              echo: Callable[[str], None] = print) -> Path:
    """Run every cell not finished (pretraining, then evaluation) and write the outputs."""
    if study.photos and not Path(study.photos).is_dir():
        raise BiqaError(f"study {study.source}: photos folder {study.photos} does not exist (a relative path is "
                        "read from the current folder); point 'photos' at a folder of unlabelled images")
    folder = study_folder(study, root)
    folder.mkdir(parents=True, exist_ok=True)
    io.write_text(folder / "study.yaml", yaml.safe_dump(settings(study), sort_keys=False))
    pretrain, evals = plan(study, root)
    phases = (("pretrain", pretrain, run_pretrain_cell, pretrain_command),
              ("evaluate", evals, run_eval_cell, eval_command))
    for phase, cells, run_here, command in phases:
        todo = [c for c in cells if c.status() != "finished"]
        echo(f"{phase}: {len(cells) - len(todo)} of {len(cells)} cells finished, {len(todo)} to run")
        failures = _run_cells(study, todo, jobs, run_here, command, progress, echo)
        if failures:
            write_outputs(study, root)
            raise BiqaError(f"{len(failures)} {phase} cell(s) failed (re-run the same command to resume): "
                            + "; ".join(failures))
    return write_outputs(study, root)


def _run_cells(study: Study, todo: list, jobs: int, run_here, command, progress: bool, echo) -> list[str]:
    if jobs <= 1:
        for i, cell in enumerate(todo, 1):
            t0 = time.time()
            echo(f"[{i}/{len(todo)}] {cell.key}: {cell.status()} -> running")
            run_here(study, cell, progress)
            echo(f"[{i}/{len(todo)}] {cell.key}: finished in {time.time() - t0:.0f} s")
        return []
    quick = [c for c in todo if isinstance(c, PretrainCell) and not c.strategy.pretrains]
    for cell in quick:  # the random initialisation: a moment's work, done here
        run_here(study, cell, progress)
    todo = [c for c in todo if c not in quick]
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for key, code, last in pool.map(functools.partial(_run_process, study, command=command, threads=threads),
                                        todo):
            echo(f"[{key}] {'finished' if code == 0 else 'FAILED: ' + last}")
            if code != 0:
                failures.append(f"{key}: {last}")
    return failures


def _run_process(study: Study, cell, command, threads: str) -> tuple[str, int, str]:
    argv, extra = command(study, cell)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", threads), **extra)
    return (cell.key, *run_cell(argv, env))


def write_outputs(study: Study, root: Path | None = None) -> Path:
    from biqabench.evaluation.study_outputs import write_study_outputs

    return write_study_outputs(study, *plan(study, root), study_folder(study, root))
