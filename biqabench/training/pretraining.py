"""The one pretraining loop: every strategy (QPT, MoCo v2, ARNIQA, bnstats, a third party's) runs here.

A strategy is a :class:`~biqabench.training.pretrain_method.Pretrainer` subclass; this module does
the rest (issue 23):

* runtime: device, precision, CPU threads and ``--compile`` (:mod:`biqabench.runtime.device`);
* data: step-indexed batches built in DataLoader workers (:mod:`biqabench.training.pretrain_data`);
* the optimiser (:mod:`biqabench.components.optimizers`: SGD, LARS, AdamW...) with linear warm-up and cosine
  decay (:func:`~biqabench.training.pretrain_method.lr_at`);
* one step: autocast -> NaN guard -> grad scaler -> optimiser step, the same helper as the
  fine-tuning loop (:meth:`biqabench.training.divergence.NanGuard.backward_step`), then the strategy's
  ``after_step``;
* long runs are safe to stop: checkpoints are written atomically every ``checkpoint_every`` steps
  (:mod:`biqabench.training.checkpoint`: verified, the previous one kept, so even a SIGKILL mid-write loses
  nothing), and Ctrl-C / SIGTERM only set a flag (:mod:`biqabench.runtime.interrupt`): the step finishes, a
  checkpoint is written and the process exits; ``--resume`` then continues with exactly the losses
  the uninterrupted run would have had (batches are functions of (seed, step); model, optimiser,
  queues and RNG states are in the checkpoint);
* under ``torchrun --nproc_per_node N`` it runs DDP (gloo on CPU, NCCL on CUDA); rank 0 writes;
* the progress bar, ``losses.json``, the loss curve, ``run.json`` and the weights store with its
  manifest (sha256, config, data, steps, wall time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from biqabench.base import io
from biqabench.base.errors import BiqaError
from biqabench.base.paths import results_root
from biqabench.base.plots import loss_curve
from biqabench.components.optimizers import build_optimizer
from biqabench.components.plugins import registry
from biqabench.components.pretrain import PretrainerSpec, PretrainRequest
from biqabench.components.weights import WeightsRecord, WeightsStore
from biqabench.runtime import distributed
from biqabench.runtime.device import Runtime, choose_threads, get_runtime, threads
from biqabench.runtime.interrupt import Interrupted, StopFlag
from biqabench.training import checkpoint as ckpt
from biqabench.training import snapshots
from biqabench.training.divergence import NanGuard, check_policy
from biqabench.training.pretrain_data import (CropDataset, StepBatches, StepSampler, Views, default_data, list_images,
                                              low_priority_worker)
from biqabench.training.pretrain_method import Pretrainer, lr_at

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
__all__ = ["PretrainTrainer", "run_pretraining", "run_spec", "pretrain", "Interrupted", "CHECKPOINT", "resume_meta"]


class PretrainTrainer:
    """A strategy's model with the optimiser, scaler and NaN guard; ``step`` is one training step."""

    def __init__(self, method: Pretrainer, runtime: Runtime, total_steps: int):
        self.method, self.runtime, self.total_steps = method, runtime, total_steps
        self.cfg = method.cfg
        self.seed, self.rank, self.world = method.seed, method.rank, method.world
        method.model = runtime.prepare(method.model)
        self.model = method.model
        self.optimizer = build_optimizer(runtime, method.trainable(), self.cfg.optim) if method.trains else None
        self.scaler = runtime.grad_scaler()
        self.guard = NanGuard(where=method.title or method.name, hint=method.nan_hint)
        self.kept: str | None = None  # "the last good checkpoint (step N) is kept at ...", once one exists
        method.setup(runtime)

    @classmethod
    def create(cls, method_type: type[Pretrainer], backbone: str, cfg, runtime: Runtime, total_steps: int,
               seed: int = 0, rank: int = 0, world: int = 1) -> "PretrainTrainer":
        return cls(method_type.create(cfg, backbone, seed=seed, rank=rank, world=world), runtime, total_steps)

    def step(self, batch: Any, step: int = 0) -> dict[str, float] | None:
        """One optimiser step on ``batch`` (on the device); loss and diagnostics as floats (None: a
        NaN/Inf loss skipped under ``--nan-policy skip``)."""
        lr = lr_at(self.cfg.optim, step, self.total_steps)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.model.train()
        with self.runtime.autocast():
            loss, stats = self.method.loss(batch, step)
        if self.optimizer is not None and not self.guard.backward_step(
                loss, self.scaler, self.optimizer, f"step {step + 1}", self.kept):
            return None
        self.method.after_step(step)
        return {"loss": float(loss.detach()), "lr": lr, **{k: float(v) for k, v in stats.items()}}

    # -- checkpoints --------------------------------------------------------------------------------
    def state(self, step: int, losses: list[float], wall_time: float, backbone: str) -> dict:
        """Plain tensors, numbers, strings and lists only: loads with ``weights_only=True``."""
        return {
            "format": 1, "producer": self.method.name, "backbone": backbone, "step": step, "seed": self.seed,
            "world": self.world, "losses": [float(v) for v in losses], "wall_time": float(wall_time),
            "config": dataclasses.asdict(self.cfg), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else {},
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": json.dumps(_np_state())},
            # batches are functions of (seed, step): no sampler state needed
            "data": {"next_sample": step * self.cfg.batch_size * self.world},
            "skipped": self.guard.counts(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(_np_unstate(json.loads(state["rng"]["numpy"])))
        skipped = state.get("skipped", {})
        self.guard.skipped, self.guard.scaler_skipped = (int(skipped.get(k, 0)) for k in self.guard.counts())


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _np_unstate(s: list) -> tuple:
    return (s[0], np.asarray(s[1], dtype=np.uint32), s[2], s[3], s[4])


def resume_meta(config: dict, backbone: str, world: int, seed: int, resumable=()) -> dict:
    """The settings a ``--resume`` must share with its checkpoint (all but ``resumable``)."""
    kept = {k: v for k, v in config.items() if k not in resumable}
    return {"backbone": backbone, "processes": world, "seed": seed, **kept}


@dataclass
class RunContext:
    """Where a run is and what it reads: handed to a strategy's ``batch_logger``."""

    request: Any
    method: Pretrainer
    run_dir: Path
    data_root: Path
    paths: list[Path]
    total: int
    rank: int
    world: int
    start: int = 0

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def meta(self) -> dict:
        m = self.method
        return resume_meta(dataclasses.asdict(m.cfg), self.request.backbone, self.world, self.request.seed,
                           m.resumable_changes)


def run_folder(name: str, request) -> Path:
    folder = f"{name}-{request.backbone.replace('/', '--')}"  # timm/resnet50: one folder, not two
    return Path(request.run_dir) if request.run_dir else results_root() / "pretrain" / folder


def run_spec(spec: PretrainerSpec, request: PretrainRequest, **options: Any) -> WeightsRecord:
    """Run a registered pretrainer: its :class:`Pretrainer` class on the core loop, or the whole
    loop of its own (``PretrainerSpec.run``).  ``options`` go to :func:`run_pretraining`."""
    cls = spec.method_class()
    return spec.run(request) if cls is None else run_pretraining(cls, request, **options)


def pretrain(name: str = "qpt", **options) -> WeightsRecord:
    """Run pretrainer ``name`` (e.g. ``pretrain("qpt", backbone="resnet18", steps=50)``)."""
    return run_spec(registry("pretrainers").get(name), PretrainRequest(**options))


def run_pretraining(method_type: type[Pretrainer], request, *,
                    on_step: Callable[[int, dict], None] | None = None) -> WeightsRecord:
    """Pretrain ``request.backbone`` with ``method_type`` and save its weights in ``request.store``
    under ``method_type.name``.  ``on_step(step, stats)`` is called after every step (tests use it
    to interrupt a run)."""
    cfg = method_type.config_for_request(request)
    runtime = get_runtime(request.device, request.precision, compile=request.compile)
    with distributed.process_group(runtime) as runtime:
        n = choose_threads(cfg.threads) if runtime.device.type == "cpu" else None
        if n is not None and n != torch.get_num_threads():
            log.info("using %d CPU thread(s)", n)
        rank = distributed.rank()
        lock = (ckpt.exclusive(run_folder(method_type.name, request), "pretraining run folder") if rank == 0
                else contextlib.nullcontext())  # two runs in one folder would mix their checkpoints
        with threads(n), lock:
            return _run(method_type, request, cfg, runtime, rank, distributed.world_size(), on_step)


def _run(method_type: type[Pretrainer], request, cfg, runtime: Runtime, rank: int, world: int,
         on_step: Callable[[int, dict], None] | None) -> WeightsRecord:
    t_start = time.time()
    data_root = Path(request.data) if request.data else default_data()
    paths = list_images(data_root)
    total = max(1, math.ceil(cfg.epochs * len(paths) / (cfg.batch_size * world))) if cfg.epochs > 0 else cfg.steps
    trainer = PretrainTrainer.create(method_type, request.backbone, cfg, runtime, total, request.seed, rank, world)
    trainer.guard.policy = check_policy(request.nan_policy)
    run = RunContext(request, trainer.method, run_folder(method_type.name, request), data_root, paths, total,
                     rank, world)
    snapshots.check_steps(tuple(request.snapshots), total)
    run.start, losses, wall_before = _start(run, trainer, runtime)
    step = _loop(run, trainer, losses, wall_before, t_start, on_step)
    return _publish(run, trainer, losses, step, wall_before + time.time() - t_start, runtime)


def _loop(run: RunContext, trainer: PretrainTrainer, losses: list[float], wall_before: float, t_start: float,
          on_step: Callable[[int, dict], None] | None) -> int:
    """Steps ``run.start`` .. ``run.total``, checkpointing; returns the last step done."""
    from tqdm import tqdm

    method, runtime, request = run.method, trainer.runtime, run.request
    in_workers = method.builds_in_workers()
    loader = _step_loader(run, trainer, in_workers)
    batch_log = method.batch_logger(run)
    bar = tqdm(total=run.total, initial=run.start, desc=f"{method.name} {request.backbone}", unit="step",
               disable=not (request.progress and run.rank == 0), dynamic_ncols=True)

    def save(step: int) -> None:
        if run.rank == 0:
            ckpt.save(run.ckpt_path, trainer.state(step, losses, wall_before + time.time() - t_start,
                                                   request.backbone), run.meta())
        trainer.kept = f"the last good checkpoint (step {step}) is kept at {run.ckpt_path}"

    wanted = set(request.snapshots) if run.rank == 0 else set()

    def snapshot(step: int) -> None:  # before the step's checkpoint: a resumed run writes it again
        if step in wanted:
            snapshots.save_snapshot(run.run_dir, step, method.backbone())

    step = run.start
    if step == 0:
        snapshot(0)
    shown = _Postfix(bar, trainer.cfg.batch_size * run.world, method.shown)
    with StopFlag() as stop:
        it = iter(loader) if run.start < run.total else None
        try:
            while step < run.total:
                t0 = time.time()
                batch = _batch(next(it), in_workers, method, step)
                if batch_log is not None:
                    batch_log(step, batch)
                stats = trainer.step(batch.to(runtime), step)
                step += 1
                if stats is not None:  # None: a NaN/Inf loss skipped (--nan-policy skip), counted, not plotted
                    losses.append(stats["loss"])
                    shown.update(stats, time.time() - t0)
                bar.update(1)
                snapshot(step)
                if on_step is not None:
                    on_step(step, stats or {})
                if distributed.any_rank(stop.signal is not None, runtime.device):
                    save(step)
                    bar.close()
                    _interrupted(run, step)
                if step % trainer.cfg.checkpoint_every == 0 and step < run.total:
                    save(step)
        finally:
            bar.close()
            del it
    save(step)
    return step


def _interrupted(run: RunContext, step: int) -> None:
    from tqdm import tqdm

    msg = (f"interrupted at step {step}/{run.total}; checkpoint saved to {run.ckpt_path}. "
           f"Continue with the same command plus --resume")
    if run.rank == 0:
        tqdm.write(msg)
    raise Interrupted(msg)


def _batch(item, in_workers: bool, method: Pretrainer, step: int):
    """The step's batch: built in the DataLoader workers already, or built here from its crops."""
    if in_workers:
        return item
    samples, crops = item
    build = method.batch_builder()
    if build is None:
        return Views({"crops": crops}, samples=samples)
    return build(crops, step=step, rank=method.rank, samples=samples, device=method.runtime.device)


class _CropsOnly:
    """The batch of a strategy without a builder: the step's crops (picklable for workers)."""

    def __call__(self, crops, *, step: int, rank: int, samples=None, device=None) -> Views:
        return Views({"crops": crops}, samples=samples)


class _Postfix:
    """The progress bar's running loss and images/s (exponential averages), plus chosen statistics."""

    def __init__(self, bar, images_per_step: int, keys: tuple[str, ...] = ()):
        self.bar, self.images, self.keys, self.smooth, self.rate = bar, images_per_step, keys, None, None

    def update(self, stats: dict, seconds: float) -> None:
        self.smooth = stats["loss"] if self.smooth is None else 0.9 * self.smooth + 0.1 * stats["loss"]
        rate = self.images / max(seconds, 1e-9)
        self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate
        more = {k: f"{stats[k]:.2f}" for k in self.keys if k in stats}
        self.bar.set_postfix(loss=f"{self.smooth:.3f}", img_s=f"{self.rate:.1f}", **more)


def _load_for_resume(run: RunContext, device) -> dict:
    """The verified checkpoint (or the previous one, if the newest is damaged), settings checked."""
    path = run.ckpt_path
    if not ckpt.exists(path):
        raise BiqaError(f"--resume: no checkpoint at {path}; run without --resume to start, "
                        "or pass the --run-dir of the interrupted run")
    loaded = ckpt.load(path, expect=run.meta(), map_location=device)
    state = loaded.state
    if not loaded.meta:  # written before checkpoints carried their settings: compare the state's
        loaded.meta = resume_meta(state.get("config", {}), state.get("backbone"), int(state.get("world", 1)),
                                  int(state.get("seed", 0)), run.method.resumable_changes)
        ckpt.check_meta(loaded, run.meta())
    return state


def _start(run: RunContext, trainer: PretrainTrainer, runtime: Runtime) -> tuple[int, list[float], float]:
    """(first step, losses so far, seconds already spent): from the checkpoint with --resume."""
    if run.request.resume:
        state = _load_for_resume(run, runtime.device)
        trainer.load_state(state)
        start = int(state["step"])
        trainer.kept = f"the last good checkpoint (step {start}) is kept at {run.ckpt_path}"
        if start >= run.total:
            log.info("checkpoint %s is already at step %d of %d", run.ckpt_path, start, run.total)
        return start, list(state["losses"]), float(state["wall_time"])
    if run.ckpt_path.is_file() and run.rank == 0:
        log.warning("starting over: %s will be replaced (use --resume to continue it)", run.ckpt_path)
    return 0, [], 0.0


def _step_loader(run: RunContext, trainer: PretrainTrainer, in_workers: bool) -> torch.utils.data.DataLoader:
    """One item per step from ``run.start`` on: whole batches when built in the workers, else the
    step's pristine crops."""
    cfg, runtime, seed = trainer.cfg, trainer.runtime, run.request.seed
    build = (run.method.batch_builder() or _CropsOnly()) if in_workers else None
    return torch.utils.data.DataLoader(
        StepBatches(CropDataset(run.paths, cfg.crop_size, seed), cfg.batch_size, seed, run.rank, run.world,
                    build=build),
        batch_size=None, sampler=StepSampler(run.start), num_workers=cfg.workers,
        pin_memory=runtime.device.type == "cuda",
        worker_init_fn=low_priority_worker if runtime.device.type == "cpu" else None,
    )


def _publish(run: RunContext, trainer: PretrainTrainer, losses: list[float], step: int, wall: float,
             runtime: Runtime) -> WeightsRecord:
    method, request, cfg = run.method, run.request, trainer.cfg
    method.finish()
    record: WeightsRecord | None = None
    if run.rank == 0:
        tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
        plot = loss_curve(losses, run.run_dir / "loss.png",
                          method.describe_run(request.backbone, step, cfg.batch_size * run.world),
                          ylabel=method.loss_name) if losses else None
        io.write_json(run.run_dir / "losses.json", {"losses": losses})
        extra = {
            "steps": step, "final_loss": float(np.mean(tail)), "last_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None, "wall_time_s": round(wall, 1),
            "images_seen": step * cfg.batch_size * run.world, "data": str(run.data_root),
            "data_images": len(run.paths), "run_dir": str(run.run_dir), "loss_curve": str(plot) if plot else None,
            "world_size": run.world, "device": str(runtime.device), "precision": runtime.precision,
            "seed": request.seed, "loss_name": method.loss_name,
            "snapshots": {str(k): str(v) for k, v in snapshots.snapshot_files(run.run_dir).items()},
            **method.manifest(), **trainer.guard.counts(),
        }
        store: WeightsStore = request.store
        record = store.save(method.backbone().state_dict(), producer=method.name, backbone=request.backbone,
                            config=dataclasses.asdict(cfg), extra=extra)
        io.write_json(run.run_dir / "run.json", {"weights": str(record.file), **extra})
    record = distributed.broadcast(record)
    assert record is not None
    return record
