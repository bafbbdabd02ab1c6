"""Patches: the unit IQA heads train and test on.

Training draws random crops (and flips) per image per epoch; testing scores a fixed set of
crops per image and averages.  Crop positions come from numpy generators seeded by
(seed, [epoch,] image index), so a run is reproducible and the same test image always gets the
same crops, whichever worker or batch it lands in.

Images smaller than the patch are upscaled (bilinear) so their shorter side equals the patch
size before cropping, rather than padded: padding would add flat borders that look like a
quality defect.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from biqabench.data.cache import ImageCache
from biqabench.data.images import IMAGENET_MEAN, IMAGENET_STD
from biqabench.data.table import IQATable

_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)

Seed = int | Sequence[int]


def crop_boxes(height: int, width: int, patch_size: int, n: int, seed: Seed,
               train: bool = False) -> list[tuple[int, int, bool]]:
    """``n`` (top, left, hflip) crop boxes for an image of this size (after any upscaling).

    Positions are drawn as uniform fractions, so they depend only on the seed and the size.
    """
    rng = np.random.default_rng(seed)
    u = rng.random((n, 3))
    span_y = max(height - patch_size, 0) + 1
    span_x = max(width - patch_size, 0) + 1
    return [(int(a * span_y), int(b * span_x), bool(train and c < 0.5)) for a, b, c in u]


def _upscale_if_small(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    _, h, w = image.shape
    if h >= patch_size and w >= patch_size:
        return image
    scale = patch_size / min(h, w)
    size = (max(patch_size, round(h * scale)), max(patch_size, round(w * scale)))
    up = F.interpolate(image.unsqueeze(0).float(), size=size, mode="bilinear", align_corners=False)
    return up.squeeze(0).round().clamp(0, 255).to(torch.uint8)


def normalise(patch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 normalised with the ImageNet mean and std."""
    return (patch_uint8.float().div_(255.0) - _MEAN) / _STD


def image_patches(image: torch.Tensor, patch_size: int, n: int, *, seed: Seed,
                  train: bool = False) -> torch.Tensor:
    """``n`` normalised crops (n, 3, p, p) of one uint8 image (3, H, W), e.g. all test crops of an
    image for one forward pass.  ``PatchDataset`` test patch j of table image i equals
    ``image_patches(img, p, n, seed=(seed, i))[j]``."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a uint8 tensor (3, H, W), got {tuple(image.shape)} {image.dtype}")
    image = _upscale_if_small(image, patch_size)
    _, h, w = image.shape
    out = torch.empty((n, 3, patch_size, patch_size), dtype=torch.uint8)
    for k, (top, left, flip) in enumerate(crop_boxes(h, w, patch_size, n, seed, train)):
        crop = image[:, top:top + patch_size, left:left + patch_size]
        out[k] = crop.flip(-1) if flip else crop
    return normalise(out)


class PatchDataset(Dataset):
    """(image, patch) pairs of a table: item k is patch ``k % n_patches`` of image
    ``indices[k // n_patches]``; yields (patch float32 (3,p,p), mos_norm float32, image_index).

    ``image_index`` is the row in ``table`` (so predictions can be averaged per image).
    ``train=True``: random crops (and horizontal flips when ``hflip``) that change with
    :meth:`set_epoch`; ``train=False``: fixed crops per (seed, image index).
    """

    def __init__(self, table: IQATable, indices: Sequence[int] | np.ndarray, patch_size: int, n_patches: int,
                 *, train: bool, seed: int = 0, cache: ImageCache | None = None, hflip: bool = True):
        self.table = table
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.patch_size = int(patch_size)
        self.n_patches = int(n_patches)
        self.train = bool(train)
        self.seed = int(seed)
        self.hflip = bool(hflip)
        self.cache = cache if cache is not None else ImageCache(resize=int(table.options.get("resize", 0) or 0))
        self.epoch = 0
        self._mos = table.mos_norm.astype(np.float32)

    def set_epoch(self, epoch: int) -> None:
        """Training crops are a function of (seed, epoch, image index): call once per epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices) * self.n_patches

    def _seed(self, image_index: int) -> tuple[int, ...]:
        return (self.seed, self.epoch, image_index) if self.train else (self.seed, image_index)

    def __getitem__(self, k: int):
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        i = int(self.indices[k // self.n_patches])
        j = k % self.n_patches
        arr = self.cache.get_array(self.table.paths[i])
        p = self.patch_size
        _, h, w = arr.shape
        if h < p or w < p:
            image = _upscale_if_small(torch.from_numpy(np.array(arr)), p)
            _, h, w = image.shape
        else:
            image = None
        top, left, flip = crop_boxes(h, w, p, self.n_patches, self._seed(i), self.train)[j]
        flip = flip and self.hflip
        if image is None:
            crop = torch.from_numpy(np.array(arr[:, top:top + p, left:left + p], copy=True))
        else:
            crop = image[:, top:top + p, left:left + p]
        if flip:
            crop = crop.flip(-1)
        return normalise(crop), torch.tensor(self._mos[i]), i
