"""What a pretraining strategy supplies to the core loop: a config and a small :class:`Pretrainer` class.

The core (:mod:`biqabench.training.pretraining`) owns everything strategies have in common:
runtime (device, precision, threads, compile), step-indexed batches built in DataLoader workers,
the optimiser and its warm-up + cosine schedule, exact resume after Ctrl-C / SIGTERM / SIGKILL,
the NaN policy, DDP under torchrun, the progress bar, the loss curve and the weights store.

A strategy is one subclass of :class:`Pretrainer` (solo-learn style: one small class per method
on a shared base) that says

* its config: a dataclass deriving from :class:`PretrainConfig` (defaults = its CPU preset) and
  the YAML presets shipped in its package (``presets/cpu.yaml``, ``presets/paper.yaml``);
* :meth:`Pretrainer.build_model`: the model around a backbone (:meth:`Pretrainer.backbone` is what
  goes to the store);
* :meth:`Pretrainer.batch_builder`: the step's batch, built from pristine uint8 crops in a worker;
* :meth:`Pretrainer.loss`: the loss of one step (and diagnostics);
* :meth:`Pretrainer.after_step`: momentum encoders, queues.

Register it with ``PretrainerSpec(name=..., method=MyPretrainer)`` (:mod:`biqabench.components.pretrain`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from biqabench.base.config import load_yaml, override
from biqabench.base.errors import BiqaError
from biqabench.components.optimizers import check_optimizer
from biqabench.runtime import distributed

log = logging.getLogger(__name__)

#: Settings that may change between an interrupted run and its --resume (the rest must match).
RESUMABLE_CHANGES = ("steps", "epochs", "workers", "threads", "checkpoint_every")
SCHEDULES = ("cosine", "constant")


@dataclass
class OptimConfig:
    """The optimiser, linear warm-up then cosine decay (MoCo v2's schedule).

    ``optimizer`` is a name of :data:`biqabench.components.optimizers.OPTIMIZERS`: ``sgd``, ``lars`` (per-tensor
    trust ratio ``trust_coeff``), ``adamw``...  The defaults are QPT's CPU demo (LARS, docs/qpt.md).
    """

    optimizer: str = "lars"
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    trust_coeff: float = 0.001  # LARS only: a tensor moves by at most ~lr * trust_coeff of its norm per step
    warmup_steps: int = 5
    schedule: str = "cosine"  # cosine | constant


@dataclass
class PretrainConfig:
    """The settings every pretrainer has; a strategy's config derives from it."""

    steps: int = 200
    epochs: float = 0.0          # > 0: train this many passes over the data instead of `steps`
    batch_size: int = 16         # images per step per process
    crop_size: int = 128         # pristine crop each image gives (views are cut from it)
    patch_size: int = 32         # side of the views the network sees
    workers: int = 1             # DataLoader processes decoding images (and building batches)
    threads: int = 1             # CPU intra-op threads; 0: auto (biqabench.runtime.device.choose_threads)
    checkpoint_every: int = 20
    optim: OptimConfig = field(default_factory=OptimConfig)


def lr_at(cfg: OptimConfig, step: int, total: int) -> float:
    """Learning rate of ``step`` (0-based) of ``total``: linear warm-up, then cosine to 0 (or constant)."""
    import math

    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))


def validate_common(cfg: PretrainConfig, where: str) -> None:
    """The checks every pretrainer's config gets (its own come from :meth:`Pretrainer.validate`)."""
    for key in ("batch_size", "crop_size", "patch_size", "checkpoint_every"):
        if getattr(cfg, key) < 1:
            raise BiqaError(f"{where}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.steps < 1 and cfg.epochs <= 0:
        raise BiqaError(f"{where}: give steps >= 1 or epochs > 0")
    if cfg.workers < 0:
        raise BiqaError(f"{where}: workers must be >= 0")
    if cfg.optim.schedule not in SCHEDULES:
        raise BiqaError(f"{where}: optim.schedule must be cosine or constant, got {cfg.optim.schedule!r}")
    if cfg.optim.lr <= 0:
        raise BiqaError(f"{where}: optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.optim.trust_coeff <= 0:
        raise BiqaError(f"{where}: optim.trust_coeff must be > 0, got {cfg.optim.trust_coeff}")
    cfg.optim.optimizer = check_optimizer(cfg.optim.optimizer, f"{where}: optim")


#: ``PretrainRequest`` field -> the config key it sets when given (not None): the one place a common
#: ``pretrain`` option meets a strategy's config; a new option needs one line here.
FROM_REQUEST = {
    "steps": "steps",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "patch_size": "patch_size",
    "workers": "workers",
}


def request_values(request) -> dict:
    """The config keys the request's given options set (``steps`` alone also clears the file's
    ``epochs``, so the run stops after that many steps)."""
    if request.steps is not None and request.epochs is not None:
        raise BiqaError("give --steps or --epochs, not both")
    values = {key: getattr(request, name) for name, key in FROM_REQUEST.items() if getattr(request, name) is not None}
    if request.steps is not None:
        values["epochs"] = 0.0
    return values


class Pretrainer:
    """One pretraining strategy: subclass it, set the class attributes, implement the methods.

    An instance holds the config, the model (``self.model``, an ``nn.Module``: everything in its
    state_dict, queues included, is checkpointed) and, once the core calls :meth:`setup`, the
    runtime.  ``seed``, ``rank`` and ``world`` say which process of which run it is.
    """

    name: ClassVar[str] = ""                 # the store name: --weights NAME
    title: ClassVar[str] = ""                # in messages and plots, e.g. "QPT"
    loss_name: ClassVar[str] = "loss"        # the loss curve's y label
    config_type: ClassVar[type] = PretrainConfig
    presets_package: ClassVar[str | None] = None   # package with presets/<name>.yaml (importlib.resources)
    resumable_changes: ClassVar[tuple[str, ...]] = RESUMABLE_CHANGES
    trains: ClassVar[bool] = True            # False: no optimiser, no backward (bnstats)
    shown: ClassVar[tuple[str, ...]] = ()    # step statistics shown on the progress bar
    nan_hint: ClassVar[str] = "lower optim.lr or use --precision fp32"

    def __init__(self, cfg: PretrainConfig, model: nn.Module, *, seed: int = 0, rank: int = 0, world: int = 1):
        self.cfg, self.model = cfg, model
        self.seed, self.rank, self.world = seed, rank, world
        self.runtime = None

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: PretrainConfig, backbone: str, *, seed: int = 0, rank: int = 0, world: int = 1) -> "Pretrainer":
        """A fresh random ``backbone`` (same initialisation in every process) in this strategy's model."""
        from biqabench.components.backbones import create_backbone

        torch.manual_seed(seed)
        net = create_backbone(backbone, weights="random")
        return cls(cfg, cls.build_model(cfg, net, seed), seed=seed, rank=rank, world=world)

    @classmethod
    def build_model(cls, cfg: PretrainConfig, backbone: nn.Module, seed: int) -> nn.Module:
        """The model around ``backbone`` (encoders, heads, queues).  Default: the backbone alone."""
        return backbone

    def setup(self, runtime) -> None:
        """Called once the model is on the runtime's device: build DDP wrappers, compiled forwards."""
        self.runtime = runtime

    def ddp(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped for DDP under torchrun (gradients all-reduced), else as it is."""
        return distributed.wrap_ddp(module, self.runtime) if self.world > 1 else module

    # -- what a step needs ------------------------------------------------------------------------
    def backbone(self) -> nn.Module:
        """The backbone whose weights go to the store."""
        return self.model.backbone if hasattr(self.model, "backbone") else self.model

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters the optimiser steps."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def batch_builder(self) -> Callable[..., Any] | None:
        """A picklable ``builder(crops, step=, rank=, samples=, device=None)`` -> the step's batch
        (see :data:`biqabench.training.pretrain_data.BatchBuilder`); None: the step gets the crops
        (as :class:`~biqabench.training.pretrain_data.Views` with one entry, ``crops``)."""
        return None

    def builds_in_workers(self) -> bool:
        """Whether batches are built in the DataLoader workers (else on the training device)."""
        return True

    def loss(self, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one step on ``batch`` (on the device, normalised) and diagnostics."""
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """After the optimiser step: momentum encoders, queues.  Default: nothing."""

    def finish(self) -> None:
        """Before the weights are saved (e.g. average statistics across processes)."""

    # -- records ----------------------------------------------------------------------------------
    def manifest(self) -> dict:
        """Extra fields for the weights manifest."""
        return {}

    def batch_logger(self, run) -> Callable[[int, Any], None] | None:
        """Something that records a step's batch (``log(step, batch)``), e.g. QPT's recipes.jsonl."""
        return None

    def describe_run(self, backbone: str, steps: int, images_per_step: int) -> str:
        return f"{self.title or self.name} {backbone}: {steps} steps x {images_per_step} images, patch {self.cfg.patch_size}"

    # -- config -----------------------------------------------------------------------------------
    @classmethod
    def validate(cls, cfg: PretrainConfig, where: str) -> PretrainConfig:
        """Check the strategy's own settings (the common ones are checked by the core)."""
        return cfg

    @classmethod
    def presets(cls) -> dict[str, Path]:
        if not cls.presets_package:
            return {}
        from biqabench.components.heads import presets_in

        return presets_in(cls.presets_package)

    @classmethod
    def load_config(cls, path: str | Path | None = None, values: dict | None = None) -> PretrainConfig:
        """Defaults (= the CPU preset), then a YAML file or a preset name, then ``values``; validated."""
        return load_config(cls.config_type, path, values, validate=cls.validate, title=cls.title or cls.name,
                           presets=cls.presets())

    @classmethod
    def config_for_request(cls, request) -> PretrainConfig:
        """The run's config: file, preset or defaults, with the command-line options on top."""
        return fit_crop(cls.load_config(request.config, request_values(request)))


def load_config(config_type: type, path: str | Path | None = None, values: dict | None = None, *,
                validate: Callable | None = None, title: str = "pretrainer",
                presets: dict[str, Path] | None = None):
    """``config_type()`` defaults, then a YAML file (or the name of one of ``presets``), then
    ``values``; the common checks and ``validate``'s."""
    cfg = config_type()
    where = f"{title} config"
    if path is not None:
        presets = presets or {}
        path = presets[str(path)] if str(path) in presets and not Path(path).is_file() else Path(path)
        where = str(path)
        cfg = override(cfg, load_yaml(path), where=where)
    cfg = override(cfg, values, where=where)
    validate_common(cfg, where)
    return validate(cfg, where) if validate is not None else cfg


def fit_crop(cfg):
    """Crops at least as large as the views: a ``patch_size`` above ``crop_size`` doubles the patch."""
    if cfg.patch_size > cfg.crop_size:
        log.info("crop_size %d < patch_size %d: using %d px crops instead", cfg.crop_size, cfg.patch_size,
                 2 * cfg.patch_size)
        cfg = dataclasses.replace(cfg, crop_size=2 * cfg.patch_size)
    return cfg
