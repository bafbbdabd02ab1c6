"""Load pyiqa's ``TReS`` checkpoints (e.g. its published KonIQ-10k / FLIVE weights) into our head.

pyiqa keeps a whole torchvision ResNet under ``model.`` (including the unused ImageNet
classifier ``model.fc``, dropped here); torchvision names are our backbone's, so it maps by
prefix.  The head's own modules carry pyiqa's names (``transformer.encoder.layers.N...``,
``fc2``, ``fc``).  pyiqa stores its constant L2-pooling kernels (``L2pooling_lN.filter``); ours
are not in the state dict, so they are checked against ours and dropped.  pyiqa supports
ResNet-18/34/50 backbones; a checkpoint fits only a head on the same backbone.

Scores come out on the scale the checkpoint was trained on.  pyiqa normalises inputs with
ImageNet mean/std inside its model; our heads expect that done by the data layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from biqabench.plugin_api import BiqaError, load_foreign_state_dict, read_state_dict

RENAME = (("model.", "backbone."),)


def _ignored(key: str) -> bool:
    return key.startswith(("model.fc.", "L2pooling_"))


def backbone_of(state: Mapping[str, torch.Tensor]) -> str:
    """Which ResNet a pyiqa TReS checkpoint holds under ``model.`` (bottleneck blocks: 50; basic
    blocks: 34 or 18 by depth), since pyiqa publishes TReS on several."""
    keys = [k.removeprefix("module.") for k in state]
    if any(k.startswith("model.layer1.0.conv3.") for k in keys):
        return "resnet50"
    return "resnet34" if any(k.startswith("model.layer3.5.") for k in keys) else "resnet18"


def load_pyiqa_checkpoint(head, source: str | os.PathLike | Mapping[str, torch.Tensor]):
    """Load a pyiqa ``TReS`` state dict (file or mapping) into ``head`` (a TReSHead).

    Returns a :class:`biqabench.components.weights.LoadReport`; raises :class:`BiqaError` when tensors are
    missing, unexpected or of another shape (e.g. the checkpoint was trained on another backbone).
    """
    state = dict(source) if isinstance(source, Mapping) else read_state_dict(source)
    kernel = head.pool.kernel[0, 0]
    for key, value in state.items():
        k = key.removeprefix("module.")
        is_kernel = k.startswith("L2pooling_") and k.endswith(".filter")
        if is_kernel and (value.dim() != 4 or value.shape[-2:] != kernel.shape
                          or not torch.allclose(value[0, 0].float(), kernel, atol=1e-6)):
            raise BiqaError(f"pyiqa TReS checkpoint: {key} is not TReS's 3x3 Hann L2-pooling kernel; "
                            f"is this a TReS checkpoint?")
    what = "pyiqa TReS checkpoint" + ("" if isinstance(source, Mapping) else f" {source}")
    return load_foreign_state_dict(head, state, rename=RENAME, ignore=_ignored, what=what)
