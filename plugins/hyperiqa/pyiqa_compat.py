"""Load pyiqa's ``HyperNet`` checkpoints (e.g. its published KonIQ-10k weights) into our head.

pyiqa keeps the backbone as a timm ``features_only`` ResNet under ``base_model.``; timm's ResNet
parameter names are torchvision's, which is what our ``resnet50`` backbone (the
``torchvision_backbones`` plugin's ``ResNetBackbone``) uses, so the backbone maps by prefix.
The head's own modules carry pyiqa's names already.
pyiqa's checkpoint files wrap the state dict in ``{"params": ...}``; that is unwrapped by
:func:`biqabench.components.weights.read_state_dict`.  pyiqa's HyperNet is fixed to ResNet-50 channels, so
its checkpoints fit a ``resnet50`` backbone only.

Scores come out on the scale the checkpoint was trained on.
pyiqa normalises inputs with ImageNet mean/std inside its model; our heads expect that done by
the data layer, so feed normalised patches of 224 px.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from biqabench.plugin_api import load_foreign_state_dict

RENAME = (("base_model.", "backbone."),)


def backbone_of(state: Mapping[str, torch.Tensor]) -> str:
    """pyiqa's HyperNet is built on ResNet-50 only."""
    return "resnet50"


def load_pyiqa_checkpoint(head, source: str | os.PathLike | Mapping[str, torch.Tensor]):
    """Load a pyiqa ``HyperNet`` state dict (file or mapping) into ``head`` (a HyperIQAHead).

    Returns a :class:`biqabench.components.weights.LoadReport`; raises :class:`BiqaError` when tensors are
    missing, unexpected or of another shape (e.g. a resnet18 backbone for a ResNet-50 checkpoint).
    """
    return load_foreign_state_dict(head, source, rename=RENAME, what="pyiqa HyperNet checkpoint")
