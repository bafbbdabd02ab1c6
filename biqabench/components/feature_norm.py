"""Per-channel standardisation of a frozen backbone's features (recipe ``standardize_features``).

Why: a head trained on a *frozen* backbone sees its stage maps at whatever scale the backbone
produces them, and those scales differ by orders of magnitude between channels, stages and
weights.  A randomly initialised ResNet-50 never measured its BatchNorm statistics (they are 0
and 1, so in eval mode every BatchNorm passes its input through), and its deeper channels come
out far larger than its first stage's.  HyperIQA's head is initialised for inputs of unit scale.
On the embedded demo (docs/qpt.md, "The CPU demo") standardising lifted QPT weights from demo-b
SRCC 0.455 to 0.671 and lowered random ones from 0.177 to 0.058: it is a recipe choice that the
run records, not a free gain.  Fine-tuned backbones do not need it: their BatchNorm layers
normalise in train mode.

What it is: a fixed affine map per channel, ``(x - mean) / std``, with mean and std of each
channel over the training split's cached features (every crop and every position of the map),
fitted once before the head trains and then stored with the head (buffers: exported models and
``load_model`` apply the same map).  Because it is per channel, it commutes with average
pooling, so applying it to pooled cached features or to the full maps gives the same scores.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: Added to a channel's standard deviation: a constant channel (dead ReLU) maps to 0, not to NaN.
EPS = 1e-6


class StageStandardizer(nn.Module):
    """``(x - mean_c) / std_c`` for each channel ``c`` of each stage's map (channel dimension 1).

    Until :meth:`fit` is called it is the identity (means 0, scales 1)."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        self.stages = len(channels)
        for i, c in enumerate(channels):
            self.register_buffer(f"mean{i}", torch.zeros(int(c)))
            self.register_buffer(f"std{i}", torch.ones(int(c)))

    def _stats(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"mean{i}"), getattr(self, f"std{i}")

    @torch.no_grad()
    def fit(self, feats: Sequence[torch.Tensor]) -> None:
        """Mean and standard deviation per channel of ``feats`` (one (N, C, ...) tensor per stage:
        the training split's cached features), over crops and positions, in float64."""
        if len(feats) != self.stages:
            raise ValueError(f"StageStandardizer for {self.stages} stages got {len(feats)} feature tensors")
        for i, f in enumerate(feats):
            mean, std = self._stats(i)
            flat = f.detach().to(torch.float64).transpose(0, 1).reshape(f.shape[1], -1)
            if flat.shape[0] != mean.numel():
                raise ValueError(f"stage {i}: {flat.shape[0]} channels, the standardizer was built for {mean.numel()}")
            mean.copy_(flat.mean(1).to(mean))
            std.copy_((flat.std(1, unbiased=False) + EPS).to(std))

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, m in enumerate(maps):
            mean, std = self._stats(i)
            shape = (1, -1) + (1,) * (m.dim() - 2)
            out.append((m - mean.to(m.dtype).view(shape)) / std.to(m.dtype).view(shape))
        return out
