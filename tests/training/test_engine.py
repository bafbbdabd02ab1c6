"""predict_images: per-image scores do not depend on how crops are grouped into forward passes."""

from __future__ import annotations

import numpy as np
import torch

from biqabench.components.backbones import TinyBackbone
from biqabench.runtime.device import get_runtime
from biqabench.training.engine import predict_images
from biqabench.components.heads import create_head


def test_scores_are_per_image_means_whatever_the_batching():
    rt = get_runtime("cpu", "fp32")
    torch.manual_seed(0)
    head = rt.prepare(create_head("linear", TinyBackbone(8))).eval()
    g = torch.Generator().manual_seed(1)
    stacks = [torch.randn(n, 3, 32, 32, generator=g) for n in (1, 3, 2, 5, 1, 4)]  # crops per image vary
    with torch.no_grad():
        expected = np.array([head(rt.to(s)).mean().item() for s in stacks])
    for kw in ({}, {"batch_patches": 1}, {"batch_patches": 4}, {"batch_patches": 0, "batch_images": 2},
               {"batch_patches": 1000}):
        got = predict_images(head, iter(stacks), rt, progress=False, **kw)
        assert got.shape == (len(stacks),)
        assert np.allclose(got, expected, atol=1e-6), kw
