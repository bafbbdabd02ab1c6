"""pyiqa's HyperNet built offline with random weights, as the reference of the scoring benchmark.

pyiqa's constructors download ImageNet / timm / its own checkpoints.  While the model is built,
every download function is replaced by one that raises (so nothing is fetched, ever), timm and
torchvision constructors are forced to ``pretrained=False``, and the originals are restored
afterwards.  This mirrors how ``tests/plugins/test_heads_parity.py`` builds the same model.
"""

from __future__ import annotations

import contextlib
import functools
from unittest import mock

import torch


def _refuse_download(*args, **kwargs):
    raise RuntimeError(f"benchmark refused a pyiqa/timm/torchvision download: {args[:1]}")


@contextlib.contextmanager
def offline_pyiqa():
    """Within this block, pyiqa models build with random weights and cannot download."""
    import huggingface_hub
    import timm
    import timm.models._builder as timm_builder
    import torch.hub
    import torchvision.models
    import torchvision.models._api as tv_api

    import pyiqa.archs.arch_util as arch_util
    import pyiqa.archs.hypernet_arch as hypernet_arch

    real_create = timm.create_model
    with contextlib.ExitStack() as stack:
        for mod, name in [(torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file"),
                          (tv_api, "load_state_dict_from_url"), (huggingface_hub, "hf_hub_download"),
                          (timm_builder, "load_pretrained"), (arch_util, "load_file_from_url"),
                          (arch_util, "load_pretrained_network"), (hypernet_arch, "load_pretrained_network")]:
            stack.enter_context(mock.patch.object(mod, name, _refuse_download))
        stack.enter_context(mock.patch.object(
            timm, "create_model", lambda name, pretrained=False, **kw: real_create(name, pretrained=False, **kw)))
        for arch in ("resnet18", "resnet34", "resnet50"):
            ctor = getattr(torchvision.models, arch)
            stack.enter_context(mock.patch.object(
                torchvision.models, arch, functools.partial(lambda c, weights=None, **kw: c(weights=None, **kw), ctor)))
        yield hypernet_arch


def randomise_batchnorm(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BatchNorm statistics, so that every layer's parameters matter to the score."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.0, generator=g)
            m.bias.data.normal_(0.0, 0.1, generator=g)
            m.running_mean.normal_(0.0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)


def hypernet_pair(seed: int = 0, randomise_bn: bool = False):
    """(pyiqa HyperNet in eval mode, our HyperIQA head on ResNet-50) holding the same weights:
    timm's initialisation (``randomise_bn``: with random BatchNorm parameters and statistics).

    pyiqa's model keeps its own ImageNet normalisation and 25-crop test protocol (its reference
    behaviour); ours gets normalised patches from the data layer.
    """
    from biqabench_plugins.hyperiqa import RECIPE, HyperIQAHead, load_pyiqa_checkpoint
    from biqabench_plugins.torchvision_backbones.resnet import ResNetBackbone

    torch.manual_seed(seed)
    with offline_pyiqa() as hypernet_arch:
        ref = hypernet_arch.HyperNet(pretrained=False, num_crop=RECIPE.test_patches).eval()
    if randomise_bn:
        randomise_batchnorm(ref, seed + 1)
    ours = HyperIQAHead(ResNetBackbone("resnet50"), RECIPE).eval()
    load_pyiqa_checkpoint(ours, ref.state_dict())
    return ref, ours
