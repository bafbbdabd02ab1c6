"""TReS head (Golestaneh et al., WACV 2022): a transformer over multi-scale features joined
with pooled CNN features, trained with L1 + relative ranking + flip self-consistency.

TrainRecipe defaults follow the paper and its reference code (isalirezag/TReS, ResNet-50 runs):
224 px patches, 50 random patches per training and per test image, Adam with lr 2e-5 for every
parameter (no head multiplier), weight decay 5e-4, batch 53, 3 epochs, lr / 10 after every
epoch, random horizontal and vertical flips, trained on the dataset's native MOS (the reference
trains on raw MOS, and its loss weights are meant for that scale).  The loss runs inside the head
(it scores the flipped batch itself), so the runner stays generic.  Presets: ``presets/{cpu,paper}.yaml``
in this package.
"""

from __future__ import annotations

from biqabench.plugin_api import HeadSpec, PyiqaCheckpoint, TrainRecipe, hookimpl, presets_in
from biqabench_plugins.tres.loss import PAPER_LOSS, ranking_loss, tres_loss
from biqabench_plugins.tres.model import TReSHead, TReSOptions
from biqabench_plugins.tres.pyiqa_compat import backbone_of, load_pyiqa_checkpoint

__all__ = ["RECIPE", "TReSHead", "TReSOptions", "build", "load_pyiqa_checkpoint", "ranking_loss", "tres_loss"]

RECIPE = TrainRecipe(
    patch_size=224, train_patches=50, test_patches=50, batch_size=53, epochs=3,
    lr=2e-5, head_lr_mult=1.0, weight_decay=5e-4, optimizer="adam", lr_step=1, lr_gamma=0.1,
    loss=PAPER_LOSS, hflip=True, vflip=True, target="native",
)


def build(backbone, recipe: TrainRecipe) -> TReSHead:
    return TReSHead(backbone, recipe)


@hookimpl
def register_heads(register):
    register(HeadSpec(
        name="tres", build=build, recipe=RECIPE, presets=presets_in(__name__),
        pyiqa=PyiqaCheckpoint(backbone=backbone_of, load=load_pyiqa_checkpoint), options=TReSOptions,
        description="TReS: transformer over multi-scale features + pooled CNN features; "
                    "L1 + relative ranking + flip self-consistency",
        reference="Golestaneh et al., No-Reference Image Quality Assessment via Transformers, Relative "
                  "Ranking, and Self-Consistency, WACV 2022; github.com/isalirezag/TReS",
    ))
