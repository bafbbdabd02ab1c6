"""MoCo v2's augmentations, drawn from a numpy generator so that a batch is a function of (seed, step).

The recipe (Chen et al. 2020, Table 1 "aug+", as in SimCLR): random resized crop (scale 0.2-1,
aspect 3/4-4/3) -> colour jitter (brightness, contrast, saturation 0.4, hue 0.1) with p=0.8, in a
random order -> grayscale with p=0.2 -> Gaussian blur, sigma uniform in [0.1, 2], with p=0.5 ->
horizontal flip with p=0.5.  Applied with torchvision's tensor functions on uint8 images.

Where it differs from the reference code (``moco/loader.py`` and ``main_moco.py`` of
facebookresearch/moco, which uses torchvision transforms on PIL images and PIL's blur):

* the crop is taken from a ``crop_size`` crop of the photo (the core's crops, the same every
  pretrainer reads), not from the whole photo;
* the blur kernel is cut at 3 sigma (``2 * ceil(3 sigma) + 1`` taps, at most the view's size),
  as PIL's blur effectively is; torchvision's ``GaussianBlur`` in SimCLR uses 10% of the image;
* randomness comes from one numpy generator per step (not torch's global RNG), so 0 or 8 workers
  and an interrupted run give the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF


@dataclass
class AugmentConfig:
    """MoCo v2's augmentation parameters (the defaults are the paper's)."""

    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])     # RandomResizedCrop scale
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # and aspect ratio
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])  # brightness, contrast, saturation, hue
    jitter_prob: float = 0.8
    gray_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    flip_prob: float = 0.5


def crop_box(rng: np.random.Generator, h: int, w: int, scale, ratio) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop: torchvision's rule (10 tries, then the
    centre crop at the nearest allowed aspect ratio)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def colour_jitter(img: torch.Tensor, rng: np.random.Generator, strength) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changes in a random order (torchvision's ColorJitter)."""
    b, c, s, h = strength
    factors = [rng.uniform(1 - b, 1 + b), rng.uniform(1 - c, 1 + c), rng.uniform(1 - s, 1 + s), rng.uniform(-h, h)]
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in rng.permutation(4):
        img = ops[i](img, float(factors[i]))
    return img


def blur_kernel(sigma: float, size: int) -> int:
    """Odd kernel size covering +-3 sigma, at most ``size - 1`` taps (reflect padding needs it)."""
    k = 2 * math.ceil(3 * sigma) + 1
    cap = size - 1 if size % 2 == 0 else size - 2
    return max(3, min(k, cap))


def augment(img: torch.Tensor, size: int, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """One MoCo v2 view (3, size, size) uint8 of a uint8 crop (3, S, S)."""
    _, h, w = img.shape
    top, left, ch, cw = crop_box(rng, h, w, cfg.crop_scale, cfg.crop_ratio)
    view = TF.resized_crop(img, top, left, ch, cw, [size, size], antialias=True)
    if rng.random() < cfg.jitter_prob:
        view = colour_jitter(view, rng, cfg.jitter)
    if rng.random() < cfg.gray_prob:
        view = TF.rgb_to_grayscale(view, num_output_channels=3)
    if rng.random() < cfg.blur_prob:
        sigma = float(rng.uniform(*cfg.blur_sigma))
        k = blur_kernel(sigma, size)
        view = TF.gaussian_blur(view, [k, k], [sigma, sigma])
    if rng.random() < cfg.flip_prob:
        view = TF.horizontal_flip(view)
    return view.contiguous()


def two_views(crops: torch.Tensor, size: int, rng: np.random.Generator, cfg: AugmentConfig
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key views (B, 3, size, size) uint8: two independent augmentations of each crop."""
    q = torch.stack([augment(c, size, rng, cfg) for c in crops])
    k = torch.stack([augment(c, size, rng, cfg) for c in crops])
    return q, k
