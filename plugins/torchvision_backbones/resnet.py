"""torchvision ResNets as :class:`~biqabench.components.backbones.Backbone`: the classifier dropped, the four
stages (layer1..layer4) exposed, so HyperIQA/TReS heads get their multi-scale maps.

Built with random weights (``weights=None``: nothing downloads); ImageNet or pretrainer weights
are put in afterwards by :func:`biqabench.components.weights.resolve_weights`.  Lives in the plugin that
registers it: the core only knows the Backbone protocol and reaches ResNets by name
(``create_backbone("resnet50")``).
"""

from __future__ import annotations

import torch

from biqabench.plugin_api import Backbone


class ResNetBackbone(Backbone):
    """A torchvision ResNet without its classifier, exposing layer1..layer4.

    Parameter names are torchvision's (``conv1.weight``, ``layer3.2.bn1.running_mean``...), so
    torchvision/ImageNet and MoCo checkpoints load without renaming beyond prefix stripping.
    """

    strides = (4, 8, 16, 32)

    def __init__(self, arch: str = "resnet50"):
        super().__init__()
        import torchvision.models as tvm

        ctor = getattr(tvm, arch)
        net = ctor(weights=None)
        self.name = arch
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if arch in ("resnet50", "resnet101", "resnet152") or "resnext" in arch or "wide" in arch else 1
        self.channels = tuple(c * expansion for c in (64, 128, 256, 512))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]
