"""One training / prediction loop for every head: device, precision, checkpoints, progress.

Heads differ in architecture and loss, not in how they are trained, so the loop lives here once:
``model.loss(x, mos)`` is the objective, ``model.param_groups(recipe)`` the optimiser groups, and
the :class:`~biqabench.runtime.device.Runtime` decides device and autocast.  Each epoch ends with a
validation SRCC (model selection never looks at the test split) and an atomic checkpoint, so an
interrupted fine-tune resumes at the last finished epoch and reproduces the uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from biqabench.training import checkpoint as ckpt
from biqabench.runtime import distributed
from biqabench.data.patches import normalise_batch
from biqabench.runtime.device import Runtime
from biqabench.training.divergence import NanGuard
from biqabench.components.heads import IQAHead, TrainRecipe
from biqabench.components.optimizers import build_optimizer
from biqabench.runtime.progress import ProgressBar as tqdm  # draws its final count (biqabench.runtime.progress)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch: epoch, loss, val_srcc, lr, seconds
    best_epoch: int = -1
    best_val_srcc: float = float("nan")
    best_state: dict | None = None
    skipped: dict = field(default_factory=dict)  # NanGuard.counts(): batches/steps skipped


def make_optimizer(model: IQAHead, recipe: TrainRecipe, runtime: Runtime) -> torch.optim.Optimizer:
    """The recipe's optimiser (:data:`biqabench.components.optimizers.OPTIMIZERS`) over the head's parameter groups."""
    return build_optimizer(runtime, [g for g in model.param_groups(recipe) if g["params"]], recipe)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainRecipe):
    if recipe.lr_step and recipe.lr_step > 0:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.lr_step, gamma=recipe.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def _rng_state() -> dict:
    """Generator states a resumed epoch needs to draw what the uninterrupted run would: the CPU
    generator and, once CUDA is in use, every GPU's (dropout masks on the GPU come from those)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # resumed on another machine: the CPU state still holds, GPU draws will differ
            log.warning("checkpoint holds RNG states of %d GPUs, this machine has %d: GPU random draws "
                        "(dropout) will differ from the uninterrupted run", len(cuda), torch.cuda.device_count())


def train_head(
    model: IQAHead,
    train_data,
    recipe: TrainRecipe,
    runtime: Runtime,
    *,
    validate: Callable[[IQAHead], float] | None = None,
    seed: int = 0,
    checkpoint: Path | None = None,
    workers: int = 0,
    progress: bool = True,
    desc: str = "train",
    stop_flag: Callable[[], bool] | None = None,
    nan_policy: str = "stop",
) -> TrainResult:
    """Fine-tune ``model`` on ``train_data`` (a PatchDataset, or a :class:`biqabench.training.features.FeatureSet`
    of cached frozen-backbone features: then only the head runs) for ``recipe.epochs`` epochs.

    After every epoch ``validate(model)`` (SRCC on a validation part of the train split) picks the
    best epoch; its weights are returned in ``best_state``.  With ``checkpoint`` set, the state after
    each epoch is saved atomically there and a later call continues from it.

    Checkpoints hold nothing twice, because for big heads they are most of an epoch's cost (TReS on
    ResNet-50: 150 M parameters, 2.4 GB and 8 s per naive checkpoint on CPU): the best weights are
    stored only when they are not the current ones, and after the last epoch only the best
    weights and the history are kept (a resumed run then skips straight to testing).
    Checkpoints go through :mod:`biqabench.training.checkpoint` (verified, the previous one kept); a resume
    checks that seed, recipe, data size and process count are those the checkpoint was made with.
    A NaN/Inf loss stops (``nan_policy="stop"``) or skips the batch (``"skip"``), see
    :mod:`biqabench.training.divergence`.
    """
    run = _Training(runtime.prepare(model), recipe, runtime, seed, checkpoint, desc,
                    NanGuard(nan_policy, desc, f"lower the learning rate (recipe lr={recipe.lr:g}) or use --precision fp32"),
                    _resume_meta(recipe, seed, train_data))
    torch.manual_seed(seed)
    start_epoch = run.restore()
    if start_epoch is None:  # training was over; only the best weights were kept
        return run.result
    objective = runtime.compiled(distributed.wrap_ddp(_Objective(run.model), runtime))  # --compile; else eager
    for epoch in range(start_epoch, recipe.epochs):
        loader = epoch_loader(train_data, recipe.batch_size, runtime, seed=seed, epoch=epoch, workers=workers)
        t0 = time.perf_counter()
        losses = run.train_epoch(objective, loader, epoch, progress, stop_flag)
        run.scheduler.step()
        val_srcc = float(validate(run.model)) if validate is not None else float("nan")
        run.result.history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                                   "val_srcc": val_srcc, "lr": run.optimizer.param_groups[0]["lr"],
                                   "seconds": time.perf_counter() - t0})
        best_is_model = run.select(epoch, val_srcc, validate is not None)
        run.save(epoch, best_is_model)
    return run.result


def epoch_loader(train_data, batch_size: int, runtime: Runtime, *, seed: int, epoch: int, workers: int) -> DataLoader:
    """The DataLoader of one epoch: its shuffle is a function of (seed, epoch), and under torchrun
    each process reads its own shard."""
    if hasattr(train_data, "set_epoch"):
        train_data.set_epoch(epoch)
    sampler = None
    if distributed.active():
        sampler = torch.utils.data.distributed.DistributedSampler(train_data, shuffle=True, seed=seed + epoch)
    return DataLoader(train_data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                      generator=torch.Generator().manual_seed(seed * 1000 + epoch), num_workers=workers,
                      drop_last=len(train_data) > batch_size, pin_memory=runtime.device.type == "cuda",
                      persistent_workers=False)


class _Training:
    """One fine-tune's state and its steps: restore from a checkpoint, train an epoch, keep the best
    epoch, checkpoint."""

    def __init__(self, model: IQAHead, recipe: TrainRecipe, runtime: Runtime, seed: int, checkpoint: Path | None,
                 desc: str, guard: NanGuard, meta: dict):
        self.model, self.recipe, self.runtime, self.seed = model, recipe, runtime, seed
        self.checkpoint, self.desc, self.guard, self.meta = checkpoint, desc, guard, meta
        self.optimizer = make_optimizer(model, recipe, runtime)
        self.scheduler = make_scheduler(self.optimizer, recipe)
        self.scaler = runtime.grad_scaler()
        self.result = TrainResult()

    def restore(self) -> int | None:
        """The first epoch to train (0 without a checkpoint); None when training had finished."""
        if self.checkpoint is None or not ckpt.exists(self.checkpoint):
            return 0
        state = ckpt.load(self.checkpoint, expect=self.meta, what=f"resuming {self.desc}").state
        guard, result = self.guard, self.result
        guard.skipped, guard.scaler_skipped = (int(state.get("skipped", {}).get(k, 0)) for k in guard.counts())
        result.history = list(state["history"])
        result.best_epoch = int(state["best_epoch"])
        result.best_val_srcc = float(state["best_val_srcc"])
        if state.get("finished"):
            result.best_state = state["best_state"]
            result.skipped = guard.counts()
            log.info("%s: training already finished (%s)", self.desc, self.checkpoint)
            return None
        load_trained_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        result.best_state = (_cpu_copy(trained_state(self.model)) if state.get("best_is_model")
                             else state["best_state"] or None)
        _set_rng_state(state["rng"])
        log.info("resuming %s from epoch %d (%s)", self.desc, int(state["epoch"]) + 1, self.checkpoint)
        return int(state["epoch"]) + 1

    def train_epoch(self, objective: torch.nn.Module, loader: DataLoader, epoch: int, progress: bool,
                    stop_flag: Callable[[], bool] | None) -> list[float]:
        """One pass over ``loader``; returns the batch losses."""
        runtime, recipe = self.runtime, self.recipe
        self.model.train()  # a frozen backbone (linear probe) stays in eval mode: IQAHead.train
        t0, seen, losses = time.perf_counter(), 0, []
        kept = (f"the last good checkpoint (epoch {epoch}) is kept at {self.checkpoint}"
                if self.checkpoint is not None and ckpt.exists(self.checkpoint) else None)
        bar = tqdm(loader, desc=f"{self.desc} epoch {epoch + 1}/{recipe.epochs}", disable=not progress, leave=False,
                   unit="batch")
        for batch, (x, mos, _) in enumerate(bar):
            x, mos = _to_device(x, runtime), mos.to(runtime.device)  # uint8 patches: normalised on the device
            with runtime.autocast():
                loss = objective(x, mos)
            if self.guard.skip(loss, f"epoch {epoch + 1}, step {batch + 1}", kept):
                continue
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.guard.step(self.scaler, self.optimizer)
            losses.append(loss.item())
            seen += mos.shape[0]
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}",
                            patches_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.1f}")
            if stop_flag is not None and stop_flag():
                raise KeyboardInterrupt
        return losses

    def select(self, epoch: int, val_srcc: float, validated: bool) -> bool:
        """Keep this epoch's weights if its validation SRCC is the best so far; True if it is."""
        result = self.result
        better = not validated or (not math.isnan(val_srcc) and
                                   (math.isnan(result.best_val_srcc) or val_srcc > result.best_val_srcc))
        best_is_model = better or result.best_state is None
        if best_is_model:
            result.best_epoch, result.best_val_srcc = epoch + 1, val_srcc
            result.best_state = _cpu_copy(trained_state(self.model))
        result.skipped = self.guard.counts()
        return best_is_model

    def save(self, epoch: int, best_is_model: bool) -> None:
        """The checkpoint after ``epoch`` (rank 0 only: under torchrun the models are identical)."""
        if self.checkpoint is None or not distributed.is_main():
            return
        result = self.result
        common = {"epoch": epoch, "history": result.history, "best_epoch": result.best_epoch,
                  "best_val_srcc": result.best_val_srcc, "skipped": result.skipped}
        if epoch + 1 == self.recipe.epochs:
            ckpt.save(self.checkpoint, {**common, "finished": True, "best_state": result.best_state}, self.meta)
        else:
            ckpt.save(self.checkpoint, {
                **common, "model": trained_state(self.model), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": _rng_state(), "best_is_model": best_is_model,
                "best_state": None if best_is_model else result.best_state,
            }, self.meta)


def trained_state(model: IQAHead) -> dict:
    """The part of ``model``'s state a fine-tune changes: all of it, or without the backbone when the
    backbone is frozen.  Why: a frozen ResNet-50 is 100 MB that never changes (it is rebuilt from the
    run's pinned weights file), and writing it into every epoch's checkpoint and every best-epoch copy
    cost the CPU demo about a quarter of its head training time."""
    state = model.state_dict()
    if getattr(model, "frozen_backbone", False):
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    return state


def load_trained_state(model: IQAHead, state: dict) -> None:
    """Load what :func:`trained_state` saved: strictly, the frozen backbone's keys aside."""
    if not getattr(model, "frozen_backbone", False):
        model.load_state_dict(state)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise RuntimeError(f"trained state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _resume_meta(recipe: TrainRecipe, seed: int, train_data) -> dict:
    """What a resumed fine-tune must share with the checkpoint, or it would not reproduce the run."""
    return {"seed": seed, "recipe": asdict(recipe), "train_items": len(train_data),
            "world": distributed.world_size()}


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class _Objective(torch.nn.Module):
    """``head.loss`` as a module's forward, so DDP can wrap it and all-reduce the gradients."""

    def __init__(self, head: IQAHead):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor | list[torch.Tensor], mos: torch.Tensor) -> torch.Tensor:
        if isinstance(x, (list, tuple)):  # cached backbone features (biqabench.training.features.FeatureSet)
            return self.head.loss_features(list(x), mos)
        return self.head.loss(x, mos)


def _to_device(x, runtime: Runtime):
    """A uint8 patch batch (normalised on the device), or a list of cached feature batches, on the run's device."""
    if isinstance(x, (list, tuple)):
        return [runtime.to(t) for t in x]
    return normalise_batch(runtime.to(x))


def inference_model(model: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """An eval-mode copy of ``model`` for scoring, with every BatchNorm that directly follows a
    convolution folded into it (one pass over the activations fewer per layer: ~15% of a bf16
    ResNet-50 forward on CPU).

    fp32 runs use the model unchanged: that is the exact reference path.  The caller's model is
    never modified.  A model this function already built is returned as is (no second copy), so
    a caller scoring many small batches (``biqabench.model.load.Model``) builds it once.
    """
    if runtime.amp_dtype is None or getattr(model, "_biqa_inference_ready", False):
        return model
    copy_ = copy.deepcopy(model).eval()
    folded = 0
    for part in (copy_, getattr(copy_, "backbone", None)):  # the whole head, else its backbone
        if isinstance(part, torch.nn.Module):
            try:
                folded = fold_batchnorms(part)
                break
            except Exception as exc:  # noqa: BLE001 - not traceable: try the backbone alone
                log.debug("no BatchNorm folding in %s: %s", type(part).__name__, exc)
    out = runtime.prepare(copy_) if folded else model
    if folded:
        out._biqa_inference_ready = True
    return out


def fold_batchnorms(module: torch.nn.Module) -> int:
    """Fold, in place, each eval-mode BatchNorm2d into the Conv2d whose output only it reads.

    Pairs are found on the traced graph (``torch.fx``), so a fold happens only where it is exact
    in real arithmetic; a module called more than once is left alone.  The BatchNorm becomes an
    ``Identity`` and module classes stay as they are (methods such as ``Backbone.pooled`` keep
    working).  Returns the number of folds; raises if ``module`` cannot be traced.
    """
    from collections import Counter

    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = fx.symbolic_trace(module).graph
    mods = dict(module.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        bn = mods.get(node.target) if node.op == "call_module" else None
        if not (isinstance(bn, torch.nn.BatchNorm2d) and bn.track_running_stats and calls[node.target] == 1):
            continue
        src = node.args[0] if node.args else None
        conv = mods.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if isinstance(conv, torch.nn.Conv2d) and len(src.users) == 1 and calls[src.target] == 1:
            pairs.append((src.target, node.target))
    for conv_name, bn_name in pairs:
        for name, new in ((conv_name, fuse_conv_bn_eval(mods[conv_name], mods[bn_name])),
                          (bn_name, torch.nn.Identity())):
            parent_name, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, attr, new)
    return len(pairs)


@torch.inference_mode()
def predict_images(
    model: IQAHead,
    images,
    runtime: Runtime,
    *,
    batch_patches: int = 64,
    batch_images: int = 0,
    progress: bool = True,
    desc: str = "predict",
    total: int | None = None,
) -> np.ndarray:
    """Score images: ``images`` yields ``(n, 3, p, p)`` patch stacks, one per image; returns the
    per-image mean of the patch scores (normalised scale).

    The crops of several images go through one forward pass, as soon as ``batch_patches`` crops
    (or ``batch_images`` images, when > 0) are waiting: a budget in crops, not images, keeps
    memory flat with 25 crops per image and still fills the batch with one or two (TReS's 120 M
    transformer weights are read once per forward, so 4-crop batches ran it at a fraction of its
    speed).  With reduced precision the model runs as :func:`inference_model` builds it
    (BatchNorm folded into the convolutions); fp32 runs the model as it is, the exact reference.

    The progress bar counts images *scored* (it moves when a forward pass returns), out of
    ``total`` (default: ``len(images)`` when it has one): counting images queued showed
    ``0img`` for the whole run on sets smaller than one batch."""
    model.eval()
    net = inference_model(model, runtime)
    scores: list[float] = []
    pending: list[torch.Tensor] = []
    waiting = 0
    if total is None and hasattr(images, "__len__"):
        total = len(images)
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="img")

    def flush():
        nonlocal waiting
        if not pending:
            return
        sizes = [p.shape[0] for p in pending]
        batch = runtime.to(torch.cat(pending))
        with runtime.autocast():
            out = net(batch).float().cpu()
        for chunk in torch.split(out, sizes):
            scores.append(float(chunk.mean()))
        bar.update(len(pending))
        pending.clear()
        waiting = 0

    for patches in images:
        pending.append(patches)
        waiting += patches.shape[0]
        if (batch_patches > 0 and waiting >= batch_patches) or (batch_images > 0 and len(pending) >= batch_images):
            flush()
    flush()
    bar.close()
    return np.asarray(scores, dtype=np.float64)


def default_workers() -> int:
    """DataLoader workers: none on small CPUs (the patch cache makes loading cheap), some on GPUs."""
    if torch.cuda.is_available():
        return min(8, os.cpu_count() or 1)
    return 0

