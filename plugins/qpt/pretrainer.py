"""``biqabench pretrain qpt``: the QPT training loop (MoCo + QC-Loss over the degradation space).

One step: take B pristine crops, degrade each with d1 and d2 (d1 != d2; optionally more
others), cut a query and a positive patch from d1(x) and the degradation-based negatives from
d2(x) (``patches_per_negative`` each), run the query encoder and
the momentum key encoder, and minimise QC-Loss against those keys, the batch's other images
and the queue.  The query encoder's backbone is what goes into the weights store.

Long runs are safe to stop: checkpoints are written atomically every ``checkpoint_every``
steps, and Ctrl-C / SIGTERM only sets a flag, so the current step finishes, a checkpoint is
written and the process exits; ``--resume`` then continues with exactly the losses the
uninterrupted run would have had (data order, crops, degradations and shuffle-BN permutations
are functions of (seed, step), and model, optimiser, queue and RNG state are in the checkpoint).

Under ``torchrun --nproc_per_node N`` it runs DDP (gloo on CPU, NCCL on CUDA); rank 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from biqabench.plugin_api import (  # noqa: F401 - Interrupted is part of this API
    BiqaError, Interrupted, NanGuard, PretrainRequest, Runtime, StopFlag, WeightsRecord, WeightsStore,
    build_optimizer, check_policy, checkpoint as ckpt, choose_threads, distributed, get_runtime, io, loss_curve,
    results_root, threads,
)
from biqabench_plugins.qpt.data import (CropDataset, QPTBatch, StepBatches, StepSampler, ViewSpec, list_images,
                                        low_priority_worker, make_views, step_generators)
from biqabench_plugins.qpt.config import (DEGRADE_ON, RESUMABLE_CHANGES, OptimConfig, QPTConfig,  # noqa: F401
                                          config_for_request, load_config, validate_config)
from biqabench_plugins.qpt.degradations import space_size
from biqabench_plugins.qpt.recipe_log import RecipeLog
from biqabench_plugins.qpt.moco import QPTModel

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
# ------------------------------------------------------------------------------------------------
# one training step
# ------------------------------------------------------------------------------------------------
def lr_at(cfg: OptimConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))


class QPTTrainer:
    """Model, optimiser and runtime for QPT; ``make_batch`` + ``step`` is one training step.

    >>> trainer = QPTTrainer.build("tiny", QPTConfig(batch_size=4, crop_size=32, patch_size=16),
    ...                            get_runtime("cpu", "fp32"), total_steps=10)
    >>> crops = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    >>> stats = trainer.step(trainer.make_batch(crops, step=0))   # {'loss': ..., 'acc': ..., ...}
    """

    def __init__(self, model: QPTModel, cfg: QPTConfig, runtime: Runtime, total_steps: int, seed: int = 0,
                 rank: int = 0, world: int = 1):
        self.model = model
        self.cfg = cfg
        self.runtime = runtime
        self.total_steps = total_steps
        self.seed, self.rank, self.world = seed, rank, world
        params = [p for p in model.encoder_q.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(runtime, params, cfg.optim)  # optim.optimizer: sgd | lars | ...
        self.scaler = runtime.grad_scaler()
        self.forward = runtime.compiled(model)  # --compile: the same parameters, a compiled step
        self.guard = NanGuard(where="QPT", hint="lower optim.lr or use --precision fp32")
        self.kept: str | None = None  # "the last good checkpoint (step N) is kept at ...", once one exists
        # under torchrun the query encoder's gradients are all-reduced; the key encoder follows by EMA
        self.encode_query = distributed.wrap_ddp(model.encoder_q, runtime) if world > 1 else None

    @classmethod
    def build(cls, backbone: str, cfg: QPTConfig, runtime: Runtime, total_steps: int, seed: int = 0,
              rank: int = 0, world: int = 1) -> "QPTTrainer":
        from biqabench.plugin_api import create_backbone

        torch.manual_seed(seed)  # same initialisation in every process
        net = create_backbone(backbone, weights="random")
        model = QPTModel(net, embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim, queue_size=cfg.queue_size,
                         momentum=cfg.momentum, temperature=cfg.temperature,
                         in_batch_negatives=cfg.in_batch_negatives, key_bn_splits=cfg.key_bn_splits,
                         projector_bn=cfg.projector_bn, generator=torch.Generator().manual_seed(seed + 1))
        return cls(runtime.prepare(model), cfg, runtime, total_steps, seed, rank, world)

    def generators(self, step: int) -> tuple[np.random.Generator, torch.Generator, torch.Generator]:
        """(numpy rng for recipes and patches, device generator for noise, CPU generator for shuffle-BN)."""
        rng, dev_gen, _ = step_generators(self.seed, step, self.rank, self.runtime.device)
        cpu_gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, step, 5]).integers(2 ** 62)))
        return rng, dev_gen, cpu_gen

    def view_spec(self) -> ViewSpec:
        c = self.cfg
        return ViewSpec(c.degradation, c.patch_size, c.negative_degradations, c.patches_per_negative)

    def views_in_workers(self) -> bool:
        """Whether whole batches are built in the DataLoader (CPU) or degraded on the device (CUDA)."""
        if self.cfg.degrade_on == "auto":
            return self.runtime.device.type == "cpu"
        return self.cfg.degrade_on == "workers"

    def make_views(self, crops: torch.Tensor, step: int) -> QPTBatch:
        """Pristine uint8 crops (B, 3, S, S) -> uint8 views degraded on the training device."""
        rng, dev_gen, _ = self.generators(step)
        _, _, noise_seed = step_generators(self.seed, step, self.rank)
        spec = self.view_spec()
        batch = make_views(crops, spec.cfg, spec.patch_size, rng, dev_gen,
                           negative_degradations=spec.negative_degradations,
                           patches_per_negative=spec.patches_per_negative, device=self.runtime.device)
        return dataclasses.replace(batch, noise_seed=noise_seed)

    def make_batch(self, crops: torch.Tensor, step: int) -> QPTBatch:
        """Pristine uint8 crops (B, 3, S, S) -> degraded, normalised patches on the device."""
        return self.make_views(crops, step).to(self.runtime)

    def step(self, batch: QPTBatch, step: int = 0) -> dict[str, float] | None:
        """One optimiser step on ``batch``; returns loss and diagnostics as floats (None: a
        NaN/Inf loss skipped under ``--nan-policy skip``)."""
        lr = lr_at(self.cfg.optim, step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        _, _, cpu_gen = self.generators(step)
        with self.runtime.autocast():
            loss, stats = self.forward(batch.query, batch.key_pos, batch.key_deg, cpu_gen,
                                       encode_query=self.encode_query)
        if self.guard.skip(loss, f"step {step + 1}", self.kept):
            return None
        self.scaler.scale(loss).backward()
        self.guard.step(self.scaler, self.optimizer)
        return {"loss": float(loss.detach()), "lr": lr, **{k: float(v) for k, v in stats.items()}}

    # -- checkpoints --------------------------------------------------------------------------
    def state(self, step: int, losses: list[float], wall_time: float, backbone: str) -> dict:
        """Plain tensors, numbers, strings and lists only: loads with ``weights_only=True``."""
        return {
            "format": 1, "producer": "qpt", "backbone": backbone, "step": step, "seed": self.seed,
            "world": self.world, "losses": [float(v) for v in losses], "wall_time": float(wall_time),
            "config": dataclasses.asdict(self.cfg), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": json.dumps(_np_state())},
            # data order, crops and degradations are functions of (seed, step): no sampler state needed
            "data": {"next_sample": step * self.cfg.batch_size * self.world},
            "skipped": self.guard.counts(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
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


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
def default_data() -> Path:
    from biqabench.plugin_api import pristine_dir

    return pristine_dir()


def resume_meta(config: dict, backbone: str, world: int, seed: int) -> dict:
    """The settings a ``--resume`` must share with its checkpoint (all but RESUMABLE_CHANGES)."""
    kept = {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}
    return {"backbone": backbone, "processes": world, "seed": seed, **kept}


def _load_for_resume(path: Path, cfg: QPTConfig, backbone: str, world: int, seed: int, device) -> dict:
    """The verified checkpoint (or the previous one, if the newest is damaged), settings checked."""
    if not ckpt.exists(path):
        raise BiqaError(f"--resume: no checkpoint at {path}; run without --resume to start, "
                        "or pass the --run-dir of the interrupted run")
    loaded = ckpt.load(path, expect=resume_meta(dataclasses.asdict(cfg), backbone, world, seed), map_location=device)
    state = loaded.state
    if not loaded.meta:  # written before checkpoints carried their settings: compare the state's
        loaded.meta = resume_meta(state.get("config", {}), state.get("backbone"), int(state.get("world", 1)),
                                  int(state.get("seed", 0)))
        ckpt.check_meta(loaded, resume_meta(dataclasses.asdict(cfg), backbone, world, seed))
    return state


def run_qpt(request: PretrainRequest, *, on_step: Callable[[int, dict], None] | None = None) -> WeightsRecord:
    """Pretrain ``request.backbone`` with QPT and save its weights in ``request.store`` as ``qpt``.

    ``on_step(step, stats)`` is called after every step (tests use it to interrupt a run).
    """
    cfg = config_for_request(request)
    runtime = get_runtime(request.device, request.precision, compile=request.compile)
    with distributed.process_group(runtime) as runtime:
        n = choose_threads(cfg.threads) if runtime.device.type == "cpu" else None
        if n is not None and n != torch.get_num_threads():
            log.info("using %d CPU thread(s)", n)
        rank = distributed.rank()
        lock = (ckpt.exclusive(run_folder(request), "pretraining run folder") if rank == 0
                else contextlib.nullcontext())  # two runs in one folder would mix their checkpoints
        with threads(n), lock:
            return _run(request, cfg, runtime, rank, distributed.world_size(), on_step)


def run_folder(request: PretrainRequest) -> Path:
    folder = f"qpt-{request.backbone.replace('/', '--')}"  # timm/resnet50: one folder, not two
    return Path(request.run_dir) if request.run_dir else results_root() / "pretrain" / folder


def _run(request: PretrainRequest, cfg: QPTConfig, runtime: Runtime, rank: int, world: int,
         on_step: Callable[[int, dict], None] | None) -> WeightsRecord:
    from tqdm import tqdm

    t_start = time.time()
    backbone = request.backbone
    data_root = Path(request.data) if request.data else default_data()
    paths = list_images(data_root)
    total = max(1, math.ceil(cfg.epochs * len(paths) / (cfg.batch_size * world))) if cfg.epochs > 0 else cfg.steps
    run_dir = run_folder(request)
    ckpt_path = run_dir / CHECKPOINT
    trainer = QPTTrainer.build(backbone, cfg, runtime, total, request.seed, rank, world)
    trainer.guard.policy = check_policy(request.nan_policy)

    start, losses, wall_before = _start(request, cfg, trainer, ckpt_path, runtime, rank, world, total)
    in_workers = trainer.views_in_workers()
    loader = _step_loader(paths, cfg, request.seed, start, trainer, in_workers, runtime, rank, world)
    recipe_log = RecipeLog(run_dir, cfg.log_recipes_every, request.seed, paths, data_root, start, enabled=rank == 0)
    bar = tqdm(total=total, initial=start, desc=f"qpt {backbone}", unit="step",
               disable=not (request.progress and rank == 0), dynamic_ncols=True)

    def save(step: int) -> None:
        if rank == 0:
            ckpt.save(ckpt_path, trainer.state(step, losses, wall_before + time.time() - t_start, backbone),
                      resume_meta(dataclasses.asdict(cfg), backbone, world, request.seed))
        trainer.kept = f"the last good checkpoint (step {step}) is kept at {ckpt_path}"

    step = start
    shown = _Postfix(bar, cfg.batch_size * world)
    with StopFlag() as stop:
        it = iter(loader) if start < total else None
        try:
            while step < total:
                t0 = time.time()
                views = _views(next(it), in_workers, trainer, step)
                recipe_log.write(step, views, rank)
                stats = trainer.step(views.to(runtime), step)
                step += 1
                if stats is not None:  # None: a NaN/Inf loss skipped (--nan-policy skip), counted, not plotted
                    losses.append(stats["loss"])
                    shown.update(stats, time.time() - t0)
                bar.update(1)
                if on_step is not None:
                    on_step(step, stats or {})
                if distributed.any_rank(stop.signal is not None, runtime.device):
                    save(step)
                    bar.close()
                    msg = (f"interrupted at step {step}/{total}; checkpoint saved to {ckpt_path}. "
                           f"Continue with the same command plus --resume")
                    if rank == 0:
                        tqdm.write(msg)
                    raise Interrupted(msg)
                if step % cfg.checkpoint_every == 0 and step < total:
                    save(step)
        finally:
            bar.close()
            del it
    save(step)
    wall = wall_before + time.time() - t_start
    return _publish(request, cfg, trainer, losses, step, wall, run_dir, data_root, len(paths), runtime, rank, world)


def _views(item, in_workers: bool, trainer: QPTTrainer, step: int) -> QPTBatch:
    """The step's views: built in the DataLoader workers already, or degraded here from its crops."""
    if in_workers:
        return item
    samples, crops = item
    return dataclasses.replace(trainer.make_views(crops, step), samples=samples)


class _Postfix:
    """The progress bar's running loss and images/s (exponential averages)."""

    def __init__(self, bar, images_per_step: int):
        self.bar, self.images, self.smooth, self.rate = bar, images_per_step, None, None

    def update(self, stats: dict, seconds: float) -> None:
        self.smooth = stats["loss"] if self.smooth is None else 0.9 * self.smooth + 0.1 * stats["loss"]
        rate = self.images / seconds
        self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate
        self.bar.set_postfix(loss=f"{self.smooth:.3f}", img_s=f"{self.rate:.1f}", acc=f"{stats['acc']:.2f}")


def _start(request: PretrainRequest, cfg: QPTConfig, trainer: QPTTrainer, ckpt_path: Path, runtime: Runtime,
           rank: int, world: int, total: int) -> tuple[int, list[float], float]:
    """(first step, losses so far, seconds already spent): from the checkpoint with --resume."""
    if request.resume:
        state = _load_for_resume(ckpt_path, cfg, request.backbone, world, request.seed, runtime.device)
        trainer.load_state(state)
        start = int(state["step"])
        trainer.kept = f"the last good checkpoint (step {start}) is kept at {ckpt_path}"
        if start >= total:
            log.info("checkpoint %s is already at step %d of %d", ckpt_path, start, total)
        return start, list(state["losses"]), float(state["wall_time"])
    if ckpt_path.is_file() and rank == 0:
        log.warning("starting over: %s will be replaced (use --resume to continue it)", ckpt_path)
    return 0, [], 0.0


def _step_loader(paths: list, cfg: QPTConfig, seed: int, start: int, trainer: QPTTrainer, in_workers: bool,
                 runtime: Runtime, rank: int, world: int) -> torch.utils.data.DataLoader:
    """One item per step from ``start`` on: whole degraded batches when built in the workers,
    else the step's pristine crops."""
    return torch.utils.data.DataLoader(
        StepBatches(CropDataset(paths, cfg.crop_size, seed), cfg.batch_size, seed, rank, world,
                    views=trainer.view_spec() if in_workers else None),
        batch_size=None, sampler=StepSampler(start), num_workers=cfg.workers,
        pin_memory=runtime.device.type == "cuda",
        worker_init_fn=low_priority_worker if runtime.device.type == "cpu" else None,
    )


def _publish(request: PretrainRequest, cfg: QPTConfig, trainer: QPTTrainer, losses: list[float], step: int,
             wall: float, run_dir: Path, data_root: Path, n_images: int, runtime: Runtime, rank: int,
             world: int) -> WeightsRecord:
    backbone = request.backbone
    store: WeightsStore = request.store
    record: WeightsRecord | None = None
    if rank == 0:
        tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
        plot = loss_curve(losses, run_dir / "loss.png",
                          f"QPT {backbone}: {step} steps x {cfg.batch_size * world} images, "
                          f"patch {cfg.patch_size}", ylabel="QC-Loss") if losses else None
        io.write_json(run_dir / "losses.json", {"losses": losses})
        extra = {
            "steps": step, "final_loss": float(np.mean(tail)), "last_loss": losses[-1] if losses else None,
            "first_loss": losses[0] if losses else None, "wall_time_s": round(wall, 1),
            "images_seen": step * cfg.batch_size * world, "data": str(data_root), "data_images": n_images,
            "run_dir": str(run_dir), "loss_curve": str(plot) if plot else None, "world_size": world,
            "device": str(runtime.device), "precision": runtime.precision, "seed": request.seed,
            # operator kinds and their orders (the paper's way of counting, ~10^7); see docs/qpt.md
            "degradation_space_size": f"{float(space_size(cfg.degradation, 'types')):.3e}",
            "degradation_space_level": "kinds",
            "degradation_space_params": f"{float(space_size(cfg.degradation, 'params')):.3e}",
            "recipes_log": str(run_dir / "recipes.jsonl") if cfg.log_recipes_every else None,
            **trainer.guard.counts(),
        }
        record = store.save(trainer.model.backbone.state_dict(), producer="qpt", backbone=backbone,
                            config=dataclasses.asdict(cfg), extra=extra)
        io.write_json(run_dir / "run.json", {"weights": str(record.file), **extra})
    record = distributed.broadcast(record)
    assert record is not None
    return record
