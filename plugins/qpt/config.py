"""QPT's settings: the run's config (model, data, schedule, degradation space) and its checks.

The defaults are the CPU demo (``presets/cpu.yaml``, linked as ``configs/qpt_pretrain_cpu.yaml``);
``presets/paper.yaml`` holds the paper's and ``presets/photos.yaml`` the CPU recipe for real photos
(``--config paper``, ``--config photos``).  The settings every pretrainer has (steps, batch, crops, workers, optimiser)
are the core's :class:`~biqabench.training.pretrain_method.PretrainConfig`; command-line options
(``PretrainRequest`` fields) are mapped onto the config once, by the core's table
:data:`~biqabench.training.pretrain_method.FROM_REQUEST`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from biqabench.plugin_api import FROM_REQUEST, BiqaError, OptimConfig, PretrainConfig  # noqa: F401
from biqabench.plugin_api import PRETRAIN_RESUMABLE_CHANGES as _COMMON_RESUMABLE
from biqabench.plugin_api import fit_crop, request_values
from biqabench.plugin_api import load_pretrain_config as _load
from biqabench_plugins.qpt.degradations import DegradationConfig, validate

#: Settings that may change between an interrupted run and its --resume (the rest must match).
RESUMABLE_CHANGES = (*_COMMON_RESUMABLE, "log_recipes_every")
DEGRADE_ON = ("auto", "workers", "device")


@dataclass
class QPTConfig(PretrainConfig):
    """Everything a QPT run needs. The defaults are the CPU demo (configs/qpt_pretrain_cpu.yaml);
    steps, epochs, batch_size (16), crop_size (128), patch_size (32), workers, threads,
    checkpoint_every and optim (LARS) are the core's :class:`PretrainConfig` fields."""

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
    log_recipes_every: int = 10  # every N steps, the step's recipes go to recipes.jsonl (0: never)
    degrade_on: str = "auto"     # workers: whole batches built in DataLoader workers; device: degraded
                                 # on the training device; auto: workers on CPU, device on CUDA
    degradation: DegradationConfig = field(default_factory=DegradationConfig)


def validate_config(cfg: QPTConfig, where: str = "QPT config") -> QPTConfig:
    """QPT's own checks (the common ones: :func:`biqabench.training.pretrain_method.validate_common`)."""
    for key in ("negative_degradations", "patches_per_negative", "embed_dim", "key_bn_splits"):
        if getattr(cfg, key) < 1:
            raise BiqaError(f"{where}: {key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.queue_size < 0 or cfg.hidden_dim < 0 or cfg.log_recipes_every < 0:
        raise BiqaError(f"{where}: queue_size, workers, hidden_dim and log_recipes_every must be >= 0")
    if cfg.degrade_on not in DEGRADE_ON:
        raise BiqaError(f"{where}: degrade_on must be one of {', '.join(DEGRADE_ON)}, got {cfg.degrade_on!r}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise BiqaError(f"{where}: momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.temperature <= 0:
        raise BiqaError(f"{where}: temperature must be > 0, got {cfg.temperature}")
    validate(cfg.degradation, f"{where}: degradation")
    return cfg


def load_config(path: str | os.PathLike | None = None, values: dict | None = None) -> QPTConfig:
    """Defaults (= presets/cpu.yaml), then a YAML file or a preset name (cpu, paper, photos), then
    ``values``; validated."""
    from biqabench.plugin_api import presets_in

    presets = presets_in("biqabench_plugins.qpt")
    return _load(QPTConfig, path, values, validate=validate_config, title="QPT", presets=presets)


def config_for_request(request) -> QPTConfig:
    """The run's config: file (or defaults), with the command-line options on top."""
    return fit_crop(load_config(request.config, request_values(request)))
