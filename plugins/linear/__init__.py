"""The linear head: global average pooling of the last stage + one fully connected layer.

This is the plain fine-tuning baseline of the QPT paper (Zhao et al., CVPR 2023): it shows what
the backbone's features are worth without a quality-specific head.  With
``freeze_backbone: true`` in the recipe it becomes a linear probe (only the FC layer learns;
the frozen backbone stays in eval mode).  TrainRecipe defaults follow the HyperIQA protocol the QPT
paper fine-tunes with (224 px, 25/25 patches, Adam 2e-5 with 10x on the head, 16 epochs).
"""

from __future__ import annotations

import torch
from torch import nn

from biqabench.plugin_api import HeadSpec, IQAHead, TrainRecipe, hookimpl, presets_in

__all__ = ["RECIPE", "LinearHead", "build"]

RECIPE = TrainRecipe(
    patch_size=224, train_patches=25, test_patches=25, batch_size=96, epochs=16,
    lr=2e-5, head_lr_mult=10.0, weight_decay=5e-4, optimizer="adam", lr_step=6, lr_gamma=0.1,
    loss="l1", hflip=True,
)


class LinearHead(IQAHead):
    """score = w . GAP(last stage) + b."""

    standardizes_features = True  # recipe standardize_features: the pooled last stage, per channel

    def __init__(self, backbone, recipe: TrainRecipe | None = None):
        super().__init__(backbone, recipe or RECIPE)  # the loss (l1 | mse) is the base class's
        self.fc = nn.Linear(backbone.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_features(self.cache_features(self.backbone(x)))

    def cache_features(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Only the pooled last stage is read."""
        return [maps[-1].mean(dim=(2, 3))]

    def feature_channels(self) -> list[int]:
        return [self.backbone.out_channels]

    def score_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.standardize(list(feats))[-1]).reshape(-1)


def build(backbone, recipe: TrainRecipe) -> LinearHead:
    return LinearHead(backbone, recipe)


@hookimpl
def register_heads(register):
    register(HeadSpec(
        name="linear", build=build, recipe=RECIPE, presets=presets_in(__name__),
        description="GAP + FC on the last stage: the QPT paper's plain fine-tuning baseline "
                    "(freeze_backbone: true makes it a linear probe)",
        reference="Zhao et al., Quality-aware Pre-trained Models for Blind Image Quality Assessment, CVPR 2023",
    ))
