"""Pretraining strategies: the spec a pretrainer plugin registers, and the ``pretrain`` call.

A pretrainer takes unlabelled images and a backbone name, trains, and saves backbone weights in
the weights store under its own name (so ``--weights <name>`` finds them).  The options every
pretrainer understands are the fields of :class:`PretrainRequest`; anything specific to one
strategy lives in its YAML config (or one of its presets: ``--config cpu``, ``--config paper``).

A strategy is a small :class:`~biqabench.training.pretrain_method.Pretrainer` subclass run by the
core loop (:func:`biqabench.training.pretraining.run_pretraining`): register it with
``PretrainerSpec(name, method=MyPretrainer)`` (or ``method="my_pkg.module:MyPretrainer"``, imported
only when a run starts, so that loading the plugin stays cheap).  A spec may instead give
``run(request) -> WeightsRecord`` and own its whole loop (the contract before issue 23; still
honoured, but then checkpoints, resume, DDP and the manifest are its own business).
The ``pretrain`` call that runs a spec lives with the loop, one layer up
(:func:`biqabench.training.pretraining.pretrain`).
See docs/pretraining.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from biqabench.base.errors import BiqaError
from biqabench.components.weights import WeightsRecord, WeightsStore


@dataclass
class PretrainRequest:
    backbone: str = "resnet50"
    data: str | None = None            # image folder; None: the embedded default images
    steps: int | None = None           # stop after this many optimiser steps...
    epochs: int | None = None          # ...or this many passes over the data
    batch_size: int | None = None      # None: the config's value
    patch_size: int | None = None
    config: str | None = None          # YAML overriding the pretrainer's defaults, or a preset name (cpu, paper)
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
    snapshots: tuple[int, ...] = ()    # steps whose backbone is saved (biqabench.training.snapshots)


@dataclass
class PretrainerSpec:
    """A registered pretraining strategy.

    ``method``: its :class:`Pretrainer` subclass, or ``"module:Class"`` naming it (imported on first
    use); the core loop runs it.  ``run``: a whole loop of its own instead (``request -> record``).
    """

    name: str
    run: Callable[[PretrainRequest], WeightsRecord] | None = None
    description: str = ""
    reference: str = ""
    method: type | str | None = None

    def __post_init__(self) -> None:
        if (self.run is None) == (self.method is None):
            raise BiqaError(f"pretrainer {self.name!r}: give its Pretrainer class (method=) or a run function "
                            "(run=), exactly one")

    def method_class(self) -> type | None:
        """The :class:`Pretrainer` subclass (imported now if ``method`` names it)."""
        if isinstance(self.method, str):
            module, _, attr = self.method.partition(":")
            self.method = getattr(importlib.import_module(module), attr)
        return self.method

    def presets(self) -> dict[str, Path]:
        cls = self.method_class()
        return cls.presets() if cls is not None else {}
