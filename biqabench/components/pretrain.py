"""Pretraining strategies: the spec a pretrainer plugin registers, and the ``pretrain`` call.

A pretrainer takes unlabelled images and a backbone name, trains, and saves backbone weights in
the weights store under its own name (so ``--weights <name>`` finds them).  The options every
pretrainer understands are the fields of :class:`PretrainRequest`; anything specific to one
strategy lives in its YAML config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from biqabench.components.plugins import registry
from biqabench.components.weights import WeightsRecord, WeightsStore


@dataclass
class PretrainRequest:
    backbone: str = "resnet50"
    data: str | None = None            # image folder; None: the embedded default images
    steps: int | None = None           # stop after this many optimiser steps...
    epochs: int | None = None          # ...or this many passes over the data
    batch_size: int | None = None      # None: the config's value
    patch_size: int | None = None
    config: str | None = None          # YAML overriding the pretrainer's defaults
    resume: bool = False               # continue from the run's last checkpoint
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    workers: int | None = None
    run_dir: Path | None = None        # checkpoints and logs; None: results/pretrain/<name>-<backbone>
    store: WeightsStore = field(default_factory=WeightsStore)
    progress: bool = True
    nan_policy: str = "stop"           # a NaN/Inf loss: stop | skip the step (see biqabench.training.divergence)
    compile: bool = False              # torch.compile the training step (see biqabench.runtime.device)


@dataclass
class PretrainerSpec:
    name: str
    run: Callable[[PretrainRequest], WeightsRecord]
    description: str = ""
    reference: str = ""


def pretrain(name: str = "qpt", **options) -> WeightsRecord:
    """Run pretrainer ``name`` (e.g. ``pretrain("qpt", backbone="resnet18", steps=50)``)."""
    spec: PretrainerSpec = registry("pretrainers").get(name)
    return spec.run(PretrainRequest(**options))
