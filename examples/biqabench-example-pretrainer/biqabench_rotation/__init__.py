"""Rotation prediction (Gidaris et al., ICLR 2018) as a third-party biqabench pretrainer.

The whole strategy: a batch builder (patches rotated by 0/90/180/270 degrees, the rotation as the
label), a model (backbone + a 4-way linear classifier) and a loss.  The core loop does the rest:
workers, optimiser and schedule, checkpoints and --resume, NaN policy, DDP, the weights store.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from biqabench.plugin_api import (PretrainConfig, Pretrainer, PretrainerSpec, Views, hookimpl, random_patches,
                                  step_generators)


@dataclass
class RotationConfig(PretrainConfig):
    """The core's settings (steps, batch, crops, patches, optim) are all it needs."""


class Rotations:
    """Batch builder (runs in DataLoader workers): one patch per crop, rotated k x 90 degrees."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed

    def __call__(self, crops, *, step, rank, samples=None, device=None):
        rng, _, _ = step_generators(self.seed, step, rank)  # randomness from (seed, step, rank) only
        patches = random_patches(crops, self.size, rng)
        k = torch.from_numpy(rng.integers(0, 4, len(patches)))
        rotated = torch.stack([torch.rot90(p, int(r), (1, 2)) for p, r in zip(patches, k)])
        return Views({"images": rotated, "labels": k}, samples=samples)


class RotationModel(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone  # what goes to the weights store
        self.classify = nn.Linear(backbone.out_channels, 4)

    def forward(self, x):
        return self.classify(self.backbone.pooled(x))


class Rotation(Pretrainer):
    name = "rotation"
    title = "rotation"
    loss_name = "cross-entropy"
    config_type = RotationConfig
    shown = ("acc",)

    @classmethod
    def build_model(cls, cfg, backbone, seed):
        return RotationModel(backbone)

    def setup(self, runtime):
        super().setup(runtime)
        self.net = self.ddp(self.model)  # under torchrun: gradients all-reduced

    def batch_builder(self):
        return Rotations(self.cfg.patch_size, self.seed)

    def loss(self, batch, step):
        logits = self.net(batch["images"]).float()
        labels = batch["labels"]
        return nn.functional.cross_entropy(logits, labels), {"acc": (logits.argmax(1) == labels).float().mean()}


@hookimpl
def register_pretrainers(register):
    register(PretrainerSpec(name="rotation", method=Rotation, description="predict a patch's rotation (example)",
                            reference="S. Gidaris, P. Singh, N. Komodakis. ICLR 2018"))
