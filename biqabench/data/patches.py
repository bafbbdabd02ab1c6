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

import functools

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from biqabench.data.cache import ImageCache
from biqabench.data.images import IMAGENET_MEAN, IMAGENET_STD
from biqabench.data.table import IQATable

# normalised = uint8 * _SCALE + _OFFSET, per channel: one fused pass, in numpy on purpose (torch's
# intra-op threads cost more than they save on one 224px patch, ~30x more on a busy machine)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
_SCALE = (1.0 / (255.0 * _STD)).astype(np.float32)
_OFFSET = (-np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1) / _STD).astype(np.float32)

Seed = int | Sequence[int]


def crop_boxes(height: int, width: int, patch_size: int, n: int, seed: Seed,
               train: bool = False) -> Sequence[tuple[int, int, bool]]:
    """``n`` (top, left, hflip) crop boxes for an image of this size (after any upscaling).

    Positions are drawn as uniform fractions, so they depend only on the seed and the size.
    ``n = 0`` asks for the grid that covers the whole image (:func:`grid_boxes`; no seed, no flip).
    Cached: a PatchDataset asks for the same image's boxes once per patch (25 times an epoch).
    """
    if n == 0:
        return grid_boxes(height, width, patch_size)
    key = tuple(int(v) for v in seed) if isinstance(seed, (list, tuple, np.ndarray)) else int(seed)
    return _crop_boxes(height, width, patch_size, n, key, train)


@functools.lru_cache(maxsize=4096)
def _crop_boxes(height: int, width: int, patch_size: int, n: int, seed, train: bool) -> tuple:
    rng = np.random.default_rng(seed)
    u = rng.random((n, 3))
    span_y = max(height - patch_size, 0) + 1
    span_x = max(width - patch_size, 0) + 1
    return tuple((int(a * span_y), int(b * span_x), bool(train and c < 0.5)) for a, b, c in u)


def _grid_starts(size: int, patch_size: int) -> list[int]:
    if size <= patch_size:
        return [0]
    k = -(-(size - patch_size) // patch_size) + 1  # crops needed to reach the far edge
    return [round(i * (size - patch_size) / (k - 1)) for i in range(k)]


@functools.lru_cache(maxsize=1024)
def grid_boxes(height: int, width: int, patch_size: int) -> tuple[tuple[int, int, bool], ...]:
    """The fewest ``patch_size`` crops on an even grid that together cover the whole image, row by
    row (what ``train_patches: 0`` / ``test_patches: 0`` ask for): ``ceil((side - p) / p) + 1``
    crops per side, first and last at the edges, evenly spaced (overlapping where the side is not
    a multiple of ``p``).  A 500 px side takes 4 crops of 128 px; an image of the crop's size, one."""
    return tuple((t, left, False) for t in _grid_starts(height, patch_size) for left in _grid_starts(width, patch_size))


def upscale_if_small(image: np.ndarray, patch_size: int) -> np.ndarray:
    """uint8 (3, H, W) scaled up (bilinear) so both sides are at least ``patch_size``."""
    _, h, w = image.shape
    if h >= patch_size and w >= patch_size:
        return image
    scale = patch_size / min(h, w)
    size = (max(patch_size, round(h * scale)), max(patch_size, round(w * scale)))
    up = F.interpolate(torch.from_numpy(np.array(image, dtype=np.float32))[None], size=size,
                       mode="bilinear", align_corners=False)[0]
    return up.round().clamp(0, 255).to(torch.uint8).numpy()


def normalise(patch_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 tensor normalised with the ImageNet mean and std."""
    arr = patch_uint8.numpy() if isinstance(patch_uint8, torch.Tensor) else patch_uint8
    out = arr.astype(np.float32)
    out *= _SCALE
    out += _OFFSET
    return torch.from_numpy(out)


def normalise_batch(x: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (B, 3, H, W) on any device -> normalised float32 there (float input: as is).

    Training patches travel as uint8 (``PatchDataset(as_uint8=True)``): 4x less to copy, collate
    and pin than float32; the step normalises them on its own device.
    """
    if x.dtype != torch.uint8:
        return x
    scale = torch.from_numpy(_SCALE).to(x.device)
    offset = torch.from_numpy(_OFFSET).to(x.device)
    return torch.addcmul(offset, x.float(), scale)


def _crop(image: np.ndarray, box: tuple[int, int, bool], p: int) -> np.ndarray:
    top, left, flip = box
    crop = image[:, top:top + p, left:left + p]
    return crop[:, :, ::-1] if flip else crop


def image_patches(image: torch.Tensor | np.ndarray, patch_size: int, n: int, *, seed: Seed,
                  train: bool = False) -> torch.Tensor:
    """``n`` normalised crops (n, 3, p, p) of one uint8 image (3, H, W), e.g. all test crops of an
    image for one forward pass (``n = 0``: the grid that covers it, :func:`grid_boxes`).  ``PatchDataset`` test patch j of table image i equals
    ``image_patches(img, p, n, seed=(seed, i))[j]``."""
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"expected a uint8 image (3, H, W), got {tuple(arr.shape)} {arr.dtype}")
    arr = upscale_if_small(arr, patch_size)
    _, h, w = arr.shape
    boxes = crop_boxes(h, w, patch_size, n, seed, train)
    return normalise(np.stack([_crop(arr, b, patch_size) for b in boxes]))


class PatchDataset(Dataset):
    """(image, patch) pairs of a table: item k is patch ``k % n_patches`` of image
    ``indices[k // n_patches]``; yields (patch float32 (3,p,p), mos_norm float32, image_index).

    ``image_index`` is the row in ``table`` (so predictions can be averaged per image).
    ``train=True``: random crops (and horizontal/vertical flips when ``hflip``/``vflip``) that change with
    :meth:`set_epoch`; ``train=False``: fixed crops per (seed, image index).  ``as_uint8``: patches
    stay uint8 (normalise them where they are used: :func:`normalise_batch`; ``train_head`` does).
    """

    def __init__(self, table: IQATable, indices: Sequence[int] | np.ndarray, patch_size: int, n_patches: int,
                 *, train: bool, seed: int = 0, cache: ImageCache | None = None, hflip: bool = True,
                 vflip: bool = False, as_uint8: bool = False, targets: np.ndarray | None = None):
        self.table = table
        self.as_uint8 = bool(as_uint8)
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.patch_size = int(patch_size)
        self.n_patches = int(n_patches)
        if self.n_patches < 1:  # a covering grid has as many crops as the image's size asks for
            raise ValueError("PatchDataset needs n_patches >= 1; the covering grid (0) is for test crops and "
                             "cached training features (recipe cache_features)")
        self.train = bool(train)
        self.seed = int(seed)
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)  # TReS's recipe also flips training patches vertically
        self.cache = cache if cache is not None else ImageCache(resize=int(table.options.get("resize", 0) or 0))
        # in shared memory, so DataLoader workers (persistent ones too) see set_epoch() calls
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        # per-row training targets: normalised MOS unless the head trains on another scale (biqabench.components.targets)
        self._mos = np.asarray(table.mos_norm if targets is None else targets, dtype=np.float32)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Training crops are a function of (seed, epoch, image index): call once per epoch,
        before iterating the DataLoader (persistent workers follow, the epoch is in shared memory)."""
        self._epoch.fill_(int(epoch))

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
        arr = upscale_if_small(self.cache.get_array(self.table.paths[i]), self.patch_size)
        _, h, w = arr.shape
        seed = self._seed(i)
        top, left, flip = crop_boxes(h, w, self.patch_size, self.n_patches, seed, self.train)[j]
        vflip = self.train and self.vflip and np.random.default_rng((*seed, j, 1)).random() < 0.5
        if self.as_uint8:  # copy the rows as they are (fast), flip as a tensor (numpy's reversed copy is slow)
            t = torch.from_numpy(np.ascontiguousarray(_crop(arr, (top, left, False), self.patch_size)))
            dims = [d for d, on in ((-1, flip and self.hflip), (-2, vflip)) if on]
            return (t.flip(dims) if dims else t), torch.tensor(self._mos[i]), i
        patch = _crop(arr, (top, left, flip and self.hflip), self.patch_size)
        if vflip:
            patch = patch[:, ::-1, :]
        return normalise(patch), torch.tensor(self._mos[i]), i


def test_crop_seed(name: str, seed: int) -> int:
    """The seed of an image's test crops: a function of its file name and the run's seed only, so
    the same image gets the same crops in every split, in cross-dataset tests and in
    ``biqabench predict``."""
    import zlib
    from pathlib import Path

    return (zlib.crc32(Path(name).name.encode()) + 7919 * seed) % (2**31)


test_crop_seed.__test__ = False  # not a pytest test, whatever its name
