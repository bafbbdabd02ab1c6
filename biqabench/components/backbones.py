"""The backbone protocol: an image batch in, four feature maps out.

IQA heads need multi-scale features (HyperIQA's local distortion-aware modules, TReS's
transformer over stages), so a backbone returns one map per stage and says their channels and
strides up front, the way timm's ``features_only`` models expose ``feature_info``.  Heads size
themselves from ``channels``; nothing in a head hard-codes ResNet-50's 2048.

Backbones are created with random weights and never download: weights are put in afterwards by
:func:`biqabench.components.weights.resolve_weights`, which is the one place that knows about ImageNet,
pretrainer outputs and checkpoint files.

The concrete backbones live in the plugins that register them (``torchvision_backbones``: the
ResNets; ``timm_backbones``); core code reaches them by name through :func:`create_backbone`.
:class:`TinyBackbone` stays here: a few-thousand-parameter reference of the protocol that tests
and smoke runs build directly.
"""

from __future__ import annotations


import torch
from torch import nn

from biqabench.components.plugins import registry


class Backbone(nn.Module):
    """Base class. Subclasses set ``channels``/``strides`` and implement ``forward`` -> list of maps."""

    channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    name: str = ""

    @property
    def out_channels(self) -> int:
        """Channels of the last (deepest) stage, the usual input of a pooled head."""
        return self.channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled last-stage features, (B, out_channels)."""
        return self(x)[-1].mean(dim=(2, 3))

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Translate a foreign checkpoint's keys into this backbone's before loading (default: as is).

        :func:`biqabench.components.weights.remap_state_dict` calls it first, so a backbone wrapping another
        library's model (timm's) can accept that library's checkpoints unchanged."""
        return state


class TinyBackbone(Backbone):
    """A four-stage conv net of a few thousand parameters, for tests and smoke runs."""

    strides = (4, 8, 16, 32)

    def __init__(self, width: int = 8):
        super().__init__()
        self.name = "tiny"
        chans = (width, width * 2, width * 4, width * 8)
        self.channels = chans
        layers = []
        c_in = 3
        for i, c in enumerate(chans):
            stride = 4 if i == 0 else 2
            layers.append(nn.Sequential(
                nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ))
            c_in = c
        self.stages = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def create_backbone(name: str, weights: str | None = "random", **kwargs) -> Backbone:
    """Build a registered backbone and (optionally) load weights into it.

    ``weights`` is resolved by :func:`biqabench.components.weights.resolve_weights`: ``random``,
    ``imagenet``, a pretrainer name such as ``qpt``, or a checkpoint path.
    """
    factory = registry("backbones").get(name)
    model = factory(**kwargs)
    if not getattr(model, "name", ""):
        model.name = name
    _check_once(model, name, factory, kwargs)
    if weights not in (None, "random"):
        from biqabench.components.weights import resolve_weights

        resolve_weights(weights, name).load_into(model)
    return model


_CHECKED: set[tuple] = set()


def _check_once(model: nn.Module, name: str, factory, kwargs: dict) -> None:
    """The protocol check (:mod:`biqabench.components.backbone_check`) for the first build of each
    (name, factory, options) in a process: a run builds the same architecture once per split."""
    try:
        key = (name, factory, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        hash(key)
    except TypeError:  # an unhashable factory: check every build
        key = None
    if key is not None and key in _CHECKED:
        return
    from biqabench.components.backbone_check import check_backbone

    check_backbone(model, name)
    if key is not None:
        _CHECKED.add(key)

