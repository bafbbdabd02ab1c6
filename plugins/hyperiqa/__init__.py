"""HyperIQA head (Su et al., CVPR 2020): a hyper network generates a content-adaptive target
network that maps multi-scale local distortion features to quality.

TrainRecipe defaults are the paper's and its reference code's (SSL92/hyperIQA): 224 px patches,
25 random patches per training image, 25 per test image (scores averaged), Adam, lr 2e-5 for
the backbone and 10x for the rest, weight decay 5e-4, L1 loss, batch 96, 16 epochs, lr / 10
every 6 epochs.  CPU-scale and paper-scale presets: ``presets/{cpu,paper}.yaml`` in this package.
"""

from __future__ import annotations

from biqabench.plugin_api import HeadSpec, PyiqaCheckpoint, TrainRecipe, hookimpl, presets_in
from biqabench_plugins.hyperiqa.model import HyperIQAHead, HyperIQAOptions
from biqabench_plugins.hyperiqa.pyiqa_compat import backbone_of, load_pyiqa_checkpoint

__all__ = ["RECIPE", "HyperIQAHead", "HyperIQAOptions", "build", "load_pyiqa_checkpoint"]

RECIPE = TrainRecipe(
    patch_size=224, train_patches=25, test_patches=25, batch_size=96, epochs=16,
    lr=2e-5, head_lr_mult=10.0, weight_decay=5e-4, optimizer="adam", lr_step=6, lr_gamma=0.1,
    loss="l1", hflip=True,
)


def build(backbone, recipe: TrainRecipe) -> HyperIQAHead:
    return HyperIQAHead(backbone, recipe)


@hookimpl
def register_heads(register):
    register(HeadSpec(
        name="hyperiqa", build=build, recipe=RECIPE, presets=presets_in(__name__),
        pyiqa=PyiqaCheckpoint(backbone=backbone_of, load=load_pyiqa_checkpoint), options=HyperIQAOptions,
        description="HyperIQA: hyper network generating a content-adaptive quality regressor over "
                    "multi-scale local distortion features",
        reference="Su et al., Blindly Assess Image Quality in the Wild Guided by a Self-Adaptive Hyper "
                  "Network, CVPR 2020; github.com/SSL92/hyperIQA",
    ))
