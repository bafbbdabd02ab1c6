"""Bundled backbones: torchvision ResNets (random init; weights come from the weights store)
and a tiny conv net for tests and smoke runs."""

from functools import partial

from biqabench.plugin_api import TinyBackbone, hookimpl
from biqabench_plugins.torchvision_backbones.resnet import ResNetBackbone

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


@hookimpl
def register_backbones(register):
    for arch in RESNETS:
        register(arch, partial(ResNetBackbone, arch), description=f"torchvision {arch}, 4 stages, strides 4-32")
    register("tiny", TinyBackbone, description="4-stage toy conv net (tests, smoke runs); no pretrained weights")
