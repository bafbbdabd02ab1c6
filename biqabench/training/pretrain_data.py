"""Unlabelled images for pretraining: any folder (ImageNet's layout included), streamed, resumable.

Every pretrainer reads its photos through this module (it was QPT's own until issue 23).

Images are listed once (paths only) and decoded one at a time in DataLoader workers, so a
folder of a million photos costs a list of paths, never the pixels of all of them.

Order and crops are a pure function of ``(seed, sample number)``: the k-th sample of a run
is the same image with the same crop whether the run was interrupted or not, whichever worker
decoded it.  That is what lets ``--resume`` reproduce an uninterrupted run exactly, with no
sampler state beyond the step counter.

Whole step batches.  :class:`StepBatches` is indexed by *step*: item t is step t's crops and,
when the pretrainer gives a batch builder, the finished batch (views cut, degraded, as uint8),
built in a DataLoader worker so that the training process only computes the model.  A builder
draws its randomness from (seed, step, rank) only (:func:`step_generators`), never from which
worker built the batch or how many there are: 0 or 8 workers give the same batches.  Without a
builder in the workers (QPT on CUDA degrades on the GPU) items are ``(samples, crops)`` and the
training process builds the batch on its device.  Views travel as uint8 (4x less to copy and pin
than float32) and are normalised on the training device (:func:`normalise`, :meth:`Views.to`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from biqabench.base.errors import BiqaError
from biqabench.data.images import IMAGENET_MEAN, IMAGENET_STD, decode_array
from biqabench.runtime.device import threads

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def default_data() -> Path:
    """The embedded photos: what ``pretrain`` trains on without ``--data``."""
    from biqabench.data.embedded import pristine_dir

    return pristine_dir()


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


def step_samples(step: int, batch_size: int, rank: int = 0, world: int = 1) -> range:
    """Global sample numbers of process ``rank`` at ``step``: step t of a run uses samples
    ``t*B*W .. (t+1)*B*W - 1`` (B per process, W processes); process r takes its block of B."""
    base = (step * world + rank) * batch_size
    return range(base, base + batch_size)


class StreamSampler(Sampler):
    """Yields global sample numbers for this process, from ``start_step`` on, forever
    (:func:`step_samples` of each step in turn)."""

    def __init__(self, batch_size: int, start_step: int = 0, rank: int = 0, world: int = 1):
        self.batch_size, self.start_step, self.rank, self.world = batch_size, start_step, rank, world

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            yield from step_samples(step, self.batch_size, self.rank, self.world)
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


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def normalise(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (or 0..1 float) images (N, 3, H, W) -> ImageNet-normalised float32 on ``device``, in two passes."""
    device = device or x.device
    x = x.to(device, non_blocking=True)  # uint8 crosses to the device: 4x less than float32
    scale = 1.0 / 255 if x.dtype == torch.uint8 else 1.0
    std, mean = _STD.to(device), _MEAN.to(device)
    return x.to(torch.float32, copy=True).mul_(scale / std).sub_(mean / std)


def step_generators(seed: int, step: int, rank: int, device: torch.device | str = "cpu"
                    ) -> tuple[np.random.Generator, torch.Generator, int]:
    """(numpy rng, torch generator on ``device``, that generator's seed) of one step of one
    process: a function of (seed, step, rank) only, so a batch does not depend on who builds it."""
    rng = np.random.default_rng([seed, step, rank, 3])
    noise_seed = int(rng.integers(2 ** 62))
    return rng, torch.Generator(device=device).manual_seed(noise_seed), noise_seed


def random_patches(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One ``size`` x ``size`` patch of each image of ``x`` (N, C, H, W), at a random position."""
    b, _, h, w = x.shape
    tops = rng.integers(0, h - size + 1, b)
    lefts = rng.integers(0, w - size + 1, b)
    return torch.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(tops, lefts))])


@dataclass
class Views:
    """A step's batch as most pretrainers build it: named uint8 image tensors (..., 3, H, W) and
    whatever else the step or its log needs (``info``).  :meth:`to` normalises every uint8 tensor
    on the training device, keeping its leading shape."""

    images: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    samples: list | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.images[name]

    def to(self, runtime) -> "Views":
        moved = {}
        for name, t in self.images.items():
            if t.dtype == torch.uint8 and t.dim() >= 4:
                flat = normalise(t.flatten(0, t.dim() - 4), runtime.device)
                moved[name] = runtime.to(flat).view(*t.shape)
            else:
                moved[name] = t.to(runtime.device)
        return Views(moved, self.info, self.samples)

    def pin_memory(self) -> "Views":
        return dataclasses.replace(self, images={k: v.pin_memory() for k, v in self.images.items()})


#: What a pretrainer's batch builder is called with: ``builder(crops, step=..., rank=..., samples=...,
#: device=...)`` -> the step's batch (an object with ``.to(runtime)``, e.g. :class:`Views`).  It must
#: be picklable (it runs in DataLoader workers) and draw its randomness from (seed, step, rank) only.
BatchBuilder = Callable[..., Any]


class StepBatches(Dataset):
    """Step number -> that step's batch for process ``rank``: the finished batch when ``build`` is
    given (built here, in a DataLoader worker), else ``(samples, crops)``.

    Either way an item depends only on (seed, step, rank).
    """

    def __init__(self, crops: CropDataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 build: BatchBuilder | None = None):
        self.crops, self.batch_size, self.seed, self.rank, self.world = crops, batch_size, seed, rank, world
        self.build = build

    def __len__(self) -> int:  # a stream: the sampler decides where it ends
        return 2 ** 62

    def __getitem__(self, step: int):
        samples = list(step_samples(int(step), self.batch_size, self.rank, self.world))
        crops = torch.stack([self.crops[s] for s in samples])
        if self.build is None:
            return samples, crops
        with threads(1):
            return self.build(crops, step=int(step), rank=self.rank, samples=samples)


class StepSampler(Sampler):
    """Step numbers from ``start`` on, forever (one DataLoader item per training step)."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            yield step
            step += 1
