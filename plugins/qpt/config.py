"""QPT's settings: the run's config (model, data, schedule, degradation space) and its checks.

The defaults are the CPU demo (``configs/qpt_pretrain_cpu.yaml``); ``configs/qpt_pretrain_paper.yaml``
holds the paper's.  Command-line options (``PretrainRequest`` fields) are mapped onto the config
once, by the table :data:`FROM_REQUEST`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field

from biqabench.plugin_api import BiqaError, PretrainRequest, check_optimizer, load_yaml, override
from biqabench_plugins.qpt.degradations import DegradationConfig, validate

log = logging.getLogger(__name__)

#: Settings that may change between an interrupted run and its --resume (the rest must match).
RESUMABLE_CHANGES = ("steps", "epochs", "workers", "threads", "checkpoint_every", "log_recipes_every")
DEGRADE_ON = ("auto", "workers", "device")


@dataclass
class OptimConfig:
    """The query encoder's optimiser, linear warm-up then cosine decay (MoCo v2's schedule).

    ``optimizer`` is a name of :data:`biqabench.components.optimizers.OPTIMIZERS`: ``sgd`` (MoCo v2 and the
    paper) or ``lars`` (per-tensor trust ratio ``trust_coeff``; the CPU default, see docs/qpt.md).
    """

    optimizer: str = "lars"
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-6
    trust_coeff: float = 0.001  # LARS only: a tensor moves by at most ~lr * trust_coeff of its norm per step
    warmup_steps: int = 5
    schedule: str = "cosine"  # cosine | constant


@dataclass
class QPTConfig:
    """Everything a QPT run needs. The defaults are the CPU demo (configs/qpt_pretrain_cpu.yaml)."""

    steps: int = 200
    epochs: float = 0.0          # > 0: train this many passes over the data instead of `steps`
    batch_size: int = 16         # images per step per process
    crop_size: int = 128         # pristine crop that is degraded; patches are cut from it
    patch_size: int = 32
    negative_degradations: int = 2  # other degradations d2, d3... per image (paper: one, d2)
    patches_per_negative: int = 1   # patches cut from each d_k(x): the degradation-based negatives
    embed_dim: int = 128
    hidden_dim: int = 0          # projector width; 0: the backbone's output channels
    projector_bn: bool = True    # BatchNorm in the projector (MoCo v3 style)
    queue_size: int = 256
    momentum: float = 0.9        # key encoder EMA
    temperature: float = 0.2
    in_batch_negatives: bool = True
    key_bn_splits: int = 2       # shuffle-BN sub-batches in a single process
    workers: int = 1             # DataLoader processes decoding images
    threads: int = 1             # CPU intra-op threads; 0: auto (biqabench.runtime.device.choose_threads). 1 is
                                 # the robust choice for a small or shared CPU (measurements there)
    checkpoint_every: int = 20
    log_recipes_every: int = 10  # every N steps, the step's recipes go to recipes.jsonl (0: never)
    degrade_on: str = "auto"     # workers: whole batches built in DataLoader workers; device: degraded
                                 # on the training device; auto: workers on CPU, device on CUDA
    optim: OptimConfig = field(default_factory=OptimConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)


def validate_config(cfg: QPTConfig, where: str = "QPT config") -> QPTConfig:
    positive = ("batch_size", "crop_size", "patch_size", "negative_degradations", "patches_per_negative",
                "embed_dim", "key_bn_splits",
                "checkpoint_every")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise BiqaError(f"{where}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.steps < 1 and cfg.epochs <= 0:
        raise BiqaError(f"{where}: give steps >= 1 or epochs > 0")
    if cfg.queue_size < 0 or cfg.workers < 0 or cfg.hidden_dim < 0 or cfg.log_recipes_every < 0:
        raise BiqaError(f"{where}: queue_size, workers, hidden_dim and log_recipes_every must be >= 0")
    if cfg.degrade_on not in DEGRADE_ON:
        raise BiqaError(f"{where}: degrade_on must be one of {', '.join(DEGRADE_ON)}, got {cfg.degrade_on!r}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise BiqaError(f"{where}: momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.temperature <= 0:
        raise BiqaError(f"{where}: temperature must be > 0, got {cfg.temperature}")
    if cfg.optim.schedule not in ("cosine", "constant"):
        raise BiqaError(f"{where}: optim.schedule must be cosine or constant, got {cfg.optim.schedule!r}")
    if cfg.optim.lr <= 0:
        raise BiqaError(f"{where}: optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.optim.trust_coeff <= 0:
        raise BiqaError(f"{where}: optim.trust_coeff must be > 0, got {cfg.optim.trust_coeff}")
    cfg.optim.optimizer = check_optimizer(cfg.optim.optimizer, f"{where}: optim")
    validate(cfg.degradation, f"{where}: degradation")
    return cfg


def load_config(path: str | os.PathLike | None = None, values: dict | None = None) -> QPTConfig:
    """Defaults (= configs/qpt_pretrain_cpu.yaml), then a YAML file, then ``values``; validated."""
    cfg = QPTConfig()
    where = "QPT config"
    if path is not None:
        where = str(path)
        cfg = override(cfg, load_yaml(path), where=where)
    cfg = override(cfg, values, where=where)
    return validate_config(cfg, where)


#: ``PretrainRequest`` field -> the ``QPTConfig`` key it sets when given (not None): the one place
#: a common ``pretrain`` option meets QPT's config; a new option needs one line here.
FROM_REQUEST = {
    "steps": "steps",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "patch_size": "patch_size",
    "workers": "workers",
}


def request_values(request: PretrainRequest) -> dict:
    """The config keys the request's given options set (``steps`` alone also clears the file's
    ``epochs``, so the run stops after that many steps)."""
    if request.steps is not None and request.epochs is not None:
        raise BiqaError("give --steps or --epochs, not both")
    values = {key: getattr(request, name) for name, key in FROM_REQUEST.items() if getattr(request, name) is not None}
    if request.steps is not None:
        values["epochs"] = 0.0
    return values


def config_for_request(request: PretrainRequest) -> QPTConfig:
    """The run's config: file (or defaults), with the command-line options on top."""
    values = request_values(request)
    cfg = load_config(request.config, values)
    if cfg.patch_size > cfg.crop_size:
        log.info("crop_size %d < patch_size %d: degrading %d px crops instead", cfg.crop_size, cfg.patch_size,
                 2 * cfg.patch_size)
        cfg = dataclasses.replace(cfg, crop_size=2 * cfg.patch_size)
    return cfg
