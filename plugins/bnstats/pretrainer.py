"""``biqabench pretrain bnstats``: measure BatchNorm statistics, learn nothing.

Each step takes the step's pristine crops (the core's photos, crops and step indexing, exactly as
QPT reads them), cuts one ``patch_size`` patch of each at a random position, and runs the backbone
forward in training mode under ``no_grad``.  Every BatchNorm layer was reset (running mean 0,
variance 1, count 0) and set to ``momentum=None``: PyTorch then keeps the *cumulative* average of
the per-batch statistics (the batch mean, and the unbiased batch variance), so after N steps the
running statistics are the plain average over the N batches of what a forward pass measured.
Nothing else changes: no optimiser, no backward; every weight is the seed's initialisation.

The step's "loss" is a diagnostic, not an objective: the relative change of the running statistics
in that step (it falls like 1/N as the average settles).  Under torchrun each process averages its
own batches and :meth:`BNStats.finish` averages the processes (all batches have the same size, so
that is the average over every batch of the run).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from biqabench.plugin_api import PretrainConfig, Pretrainer, Views, distributed, random_patches, step_generators


@dataclass
class BNStatsConfig(PretrainConfig):
    """As the other pretrainers' CPU presets: 200 steps of 16 photos, 32 px patches of 128 px crops
    (``optim`` is unused: nothing is optimised)."""


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer that keeps running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


class PatchViews:
    """Batch builder: one random ``size`` px patch of each crop (picklable, for DataLoader workers)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed

    def __call__(self, crops: torch.Tensor, *, step: int, rank: int, samples=None, device=None) -> Views:
        rng, _, _ = step_generators(self.seed, step, rank)
        return Views({"patches": random_patches(crops, self.size, rng)}, samples=samples)


class BNStats(Pretrainer):
    """The null pretrainer: BatchNorm statistics as a cumulative average, no gradient step."""

    name = "bnstats"
    title = "bnstats"
    loss_name = "relative change of the BatchNorm statistics"
    config_type = BNStatsConfig
    presets_package = "biqabench_plugins.bnstats"
    trains = False

    @classmethod
    def build_model(cls, cfg: BNStatsConfig, backbone: nn.Module, seed: int) -> nn.Module:
        for bn in batch_norms(backbone):
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: the plain mean over batches
        return backbone

    def trainable(self) -> list:
        return []

    def batch_builder(self) -> PatchViews:
        return PatchViews(self.cfg.patch_size, self.seed)

    @torch.no_grad()
    def loss(self, batch: Views, step: int):
        stats = [t for bn in batch_norms(self.model) for t in (bn.running_mean, bn.running_var)]
        before = [t.clone() for t in stats]
        self.model(batch["patches"])
        change = sum(float((a - b).abs().sum()) for a, b in zip(stats, before))
        size = sum(float(b.abs().sum()) for b in before)
        return torch.tensor(change / max(size, 1e-12)), {}

    def finish(self) -> None:
        if not distributed.active():
            return
        world = distributed.world_size()
        for bn in batch_norms(self.model):
            for t in (bn.running_mean, bn.running_var):
                torch.distributed.all_reduce(t)
                t.div_(world)

    def manifest(self) -> dict:
        return {"learning": "none: random initialisation (seed), BatchNorm statistics measured on the data",
                "bn_layers": len(batch_norms(self.model))}
