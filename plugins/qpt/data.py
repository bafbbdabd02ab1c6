"""Unlabelled images for QPT: any folder (ImageNet's layout included), streamed, resumable.

Images are listed once (paths only) and decoded one at a time in DataLoader workers, so a
folder of a million photos costs a list of paths, never the pixels of all of them.

Order and crops are a pure function of ``(seed, sample number)``: the k-th sample of a run
is the same image with the same crop whether the run was interrupted or not, whichever worker
decoded it.  That is what lets ``--resume`` reproduce an uninterrupted run exactly, with no
sampler state beyond the step counter.

Degradations are *not* applied here: they run batched on the training device
(:func:`make_views`), where one grouped conv serves the whole batch.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from biqabench.data.images import IMAGENET_MEAN, IMAGENET_STD, decode_array
from biqabench.errors import BiqaError
from biqabench_plugins.qpt.degradations import DegradationConfig, degrade_batch, sample_distinct, torch_threads

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` at any depth (sorted; hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise BiqaError(f"--data {root}: not a folder; give a folder of images (any depth, e.g. ImageNet's train/)")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames
                     if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("."))
    if not found:
        raise BiqaError(f"--data {root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} at any depth)")
    return sorted(found)


def image_at(n_images: int, seed: int, sample: int) -> int:
    """Which image the global ``sample``-th draw is: epoch ``sample // n`` is a fresh permutation."""
    epoch, pos = divmod(sample, n_images)
    return int(np.random.default_rng([seed, epoch, 7]).permutation(n_images)[pos])


class StreamSampler(Sampler):
    """Yields global sample numbers for this process, from ``start_step`` on, forever.

    Step t of a run uses samples ``t*B*W .. (t+1)*B*W - 1`` (B per process, W processes);
    process r takes its block of B of them.
    """

    def __init__(self, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.batch_size, self.start_step, self.rank, self.world = batch_size, start_step, rank, world

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        b = self.batch_size
        while True:
            base = (step * self.world + self.rank) * b
            yield from range(base, base + b)
            step += 1


class CropDataset(Dataset):
    """Sample number -> (3, crop, crop) uint8 crop of the image it designates (random position, flip).

    Decoded images are kept in a small LRU cache (``cache_mb`` per process): a folder of a few
    dozen photos (the embedded default) is decoded once instead of every step, while a large
    folder simply misses the cache; memory stays bounded either way.
    """

    def __init__(self, paths: Sequence[Path], crop_size: int, seed: int = 0, cache_mb: float = 256.0):
        self.paths = list(paths)
        self.crop_size = crop_size
        self.seed = seed
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._cached = 0

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, index: int) -> torch.Tensor:
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        img = self._decode_file(index)
        if img.numel() <= self.cache_bytes:
            self._cache[index] = img
            self._cached += img.numel()
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.numel()
        return img

    def _decode_file(self, index: int) -> torch.Tensor:
        for attempt in range(10):  # a corrupt file in a big folder must not end a long run
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                return torch.from_numpy(decode_array(path))
            except BiqaError as exc:
                log.warning("skipping unreadable image: %s", exc)
        raise BiqaError(f"10 unreadable images in a row from {self.paths[index]} on; check the --data folder")

    def __getitem__(self, sample: int) -> torch.Tensor:
        img = self._decode(image_at(len(self.paths), self.seed, int(sample)))
        s = self.crop_size
        _, h, w = img.shape
        if h < s or w < s:  # upscale rather than pad: flat borders would look like a defect
            scale = s / min(h, w)
            size = (max(s, round(h * scale)), max(s, round(w * scale)))
            img = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            img = img.round().clamp(0, 255).to(torch.uint8)
            _, h, w = img.shape
        rng = np.random.default_rng([self.seed, int(sample), 11])
        top, left = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
        crop = img[:, top:top + s, left:left + s]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        return crop.contiguous()


def low_priority_worker(worker_id: int) -> None:
    """DataLoader worker init: lower the decoding process's CPU priority.

    On a small CPU the training threads use every core; an equal-priority decoder would
    preempt them mid-step and leave the other OpenMP threads spinning at a barrier.  Niced,
    it runs when the trainer waits instead.
    """
    try:
        os.nice(10)
    except (OSError, AttributeError):  # not permitted or not POSIX: keep the default priority
        pass


@dataclass
class QPTBatch:
    """The patches of one step: query and positive from d1(x), ``key_deg`` (B, M, ...) from d2(x)."""

    query: torch.Tensor
    key_pos: torch.Tensor
    key_deg: torch.Tensor

    def to(self, runtime) -> "QPTBatch":
        b, m = self.key_deg.shape[:2]
        return QPTBatch(runtime.to(self.query), runtime.to(self.key_pos),
                        runtime.to(self.key_deg.flatten(0, 1)).view(b, m, *self.key_deg.shape[2:]))


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _patches(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    tops = rng.integers(0, h - size + 1, b)
    lefts = rng.integers(0, w - size + 1, b)
    return torch.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(tops, lefts))])


def make_views(crops: torch.Tensor, cfg: DegradationConfig, patch_size: int, rng: np.random.Generator,
               generator: torch.Generator, *, negative_degradations: int = 1, patches_per_negative: int = 1,
               device: torch.device | None = None, return_recipes: bool = False):
    """Degrade each crop with d1 and ``negative_degradations`` others (all different) and cut patches.

    Returns a :class:`QPTBatch`: query and positive from d1(x); ``key_deg`` (B, M, 3, P, P) with
    M = negative_degradations x patches_per_negative patches of d2(x), d3(x)...  ``crops`` are
    (B, 3, S, S) uint8; degradations run on ``device`` (batched), patches are normalised with
    the ImageNet mean and std (the convention every head here uses).
    """
    b, _, h, w = crops.shape
    if patch_size > min(h, w):
        raise BiqaError(f"patch_size {patch_size} is larger than the crop ({h}x{w}); lower --patch-size "
                        "or raise crop_size in the config")
    n = negative_degradations
    per_image = [sample_distinct(cfg, rng, 1 + n) for _ in range(b)]
    recipes = [per_image[i][j] for j in range(1 + n) for i in range(b)]  # d1 of all images, then d2...
    x = crops.to(device or crops.device).float() / 255.0
    with torch_threads(1 if x.device.type == "cpu" else None):
        y = degrade_batch(x.repeat(1 + n, 1, 1, 1), recipes, generator).view(1 + n, b, *x.shape[1:])
    query = _patches(y[0], patch_size, rng)
    key_pos = _patches(y[0], patch_size, rng)
    key_deg = torch.stack([_patches(y[1 + j], patch_size, rng) for j in range(n) for _ in range(patches_per_negative)],
                          dim=1)
    mean, std = _MEAN.to(y.device), _STD.to(y.device)
    batch = QPTBatch((query - mean) / std, (key_pos - mean) / std, (key_deg - mean.unsqueeze(1)) / std.unsqueeze(1))
    return (batch, per_image) if return_recipes else batch
