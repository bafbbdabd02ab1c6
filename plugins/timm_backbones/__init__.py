"""Bundled plugin: every timm model as a backbone (MobileViT, ConvNeXt, Swin, ViT, EfficientNet...).

* ``register_backbones`` adds a curated list (the QPT paper's MobileViTs and the families BIQA
  papers use) so ``biqabench backbones list`` shows them;
* ``resolve_backbone`` builds any other timm name on demand: ``--backbone convnext_atto``, or
  ``timm/resnet50`` where the plain name is another plugin's (torchvision's ``resnet50``);
* ``search_backbones`` lets ``biqabench backbones list --filter 'mobilevit*'`` search all of
  timm's names.

Nothing here imports timm at load time (importing it loads its whole model zoo, seconds on a
busy machine): registering is a list of names, and timm is imported when a backbone is built,
resolved or searched.  How the four maps are chosen: :mod:`.backbone`; ImageNet weights:
:mod:`.pretrained`.
"""

from __future__ import annotations

import re
from functools import partial

from biqabench.plugin_api import hookimpl

PREFIX = "timm/"

# name -> description; strides 4/8/16/32 for all (ViT: through the simple pyramid)
CURATED = {
    "mobilevit_xxs": "timm MobileViT-XXS (QPT paper), 1.0 M backbone params, maps 24/48/64/320 ch",
    "mobilevit_xs": "timm MobileViT-XS (QPT paper), 1.9 M backbone params, maps 48/64/80/384 ch",
    "mobilevit_s": "timm MobileViT-S (QPT paper), 4.9 M backbone params, maps 64/96/128/640 ch",
    "timm/resnet50": "timm ResNet-50 (same keys as torchvision's resnet50), maps 256/512/1024/2048 ch",
    "convnext_tiny": "timm ConvNeXt-T, 28 M params, maps 96/192/384/768 ch",
    "swin_tiny_patch4_window7_224": "timm Swin-T (NHWC stages as NCHW), any multiple of 32 px, maps 96/192/384/768 ch",
    "vit_small_patch16_224": "timm ViT-S/16, blocks 3/6/9/12 as a simple pyramid (strides 4-32), 384 ch",
    "efficientnet_b0": "timm EfficientNet-B0, maps 24/40/112/320 ch",
}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def timm_name(name: str) -> str:
    """Our backbone name -> timm's model name (``timm/resnet50`` -> ``resnet50``)."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def _build(model_name: str, **kwargs):
    from biqabench_plugins.timm_backbones.backbone import TimmBackbone

    return TimmBackbone(model_name, **kwargs)


def _imagenet(model_name: str):
    from biqabench_plugins.timm_backbones.pretrained import imagenet_file

    return imagenet_file(model_name)


def _add(register, name: str, description: str) -> None:
    model = timm_name(name)
    register(name, partial(_build, model), description=description, imagenet=partial(_imagenet, model))


@hookimpl
def register_backbones(register):
    for name, description in CURATED.items():
        _add(register, name, description)


@hookimpl
def resolve_backbone(name, register):
    model = timm_name(name)
    if not _NAME.match(model):
        return
    from biqabench_plugins.timm_backbones.backbone import import_timm

    if import_timm().is_model(model):
        _add(register, name, f"timm {model} (built on demand)")


@hookimpl
def search_backbones(pattern):
    from biqabench.plugin_api import registry
    from biqabench_plugins.timm_backbones.backbone import import_timm

    prefixed = pattern.startswith(PREFIX)
    taken = {e.name for e in registry("backbones").entries() if e.plugin != "timm_backbones"}
    out = []
    for model in import_timm().list_models(timm_name(pattern)):
        name = PREFIX + model if prefixed or model in taken else model
        out.append((name, "timm (built on demand)"))
    return out
