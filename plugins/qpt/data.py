"""Unlabelled images for QPT: any folder (ImageNet's layout included), streamed, resumable.

Images are listed once (paths only) and decoded one at a time in DataLoader workers, so a
folder of a million photos costs a list of paths, never the pixels of all of them.

Order and crops are a pure function of ``(seed, sample number)``: the k-th sample of a run
is the same image with the same crop whether the run was interrupted or not, whichever worker
decoded it.  That is what lets ``--resume`` reproduce an uninterrupted run exactly, with no
sampler state beyond the step counter.

Whole step batches.  :class:`StepBatches` is indexed by *step*: item t is step t's crops and,
on CPU, the finished views (recipes drawn, crops degraded, patches cut, as uint8), built in a
DataLoader worker so that the training process only computes the model.  Recipes, patch
positions and noise depend only on (seed, step, rank) (:func:`step_generators`), never on
which worker built the batch or how many there are: 0 or 8 workers give the same batches.  On
CUDA the workers only decode and crop; :func:`make_views` then degrades on the GPU.  Patches
travel as uint8 (4x less to copy and pin than float32) and are normalised on the training
device (:meth:`QPTBatch.to`).
"""

from __future__ import annotations

import dataclasses
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

from biqabench.plugin_api import BiqaError, IMAGENET_MEAN, IMAGENET_STD, decode_array, threads
from biqabench_plugins.qpt.degradations import DegradationConfig, degrade_batch, sample_distinct

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
    """The patches of one step: query and positive from d1(x), ``key_deg`` (B, M, ...) from d2(x).

    As built (workers, :func:`make_views`) the patches are uint8; :meth:`to` moves them to the
    training device and normalises them there.  ``recipes`` (d1, d2... per image, as dicts) and
    ``samples`` (the global sample numbers of the crops) are what ``recipes.jsonl`` logs.
    """

    query: torch.Tensor
    key_pos: torch.Tensor
    key_deg: torch.Tensor
    recipes: list | None = None
    samples: list | None = None
    noise_seed: int | None = None

    def to(self, runtime) -> "QPTBatch":
        b, m = self.key_deg.shape[:2]
        deg = normalise(self.key_deg.flatten(0, 1), runtime.device)
        return QPTBatch(runtime.to(normalise(self.query, runtime.device)),
                        runtime.to(normalise(self.key_pos, runtime.device)),
                        runtime.to(deg).view(b, m, *self.key_deg.shape[2:]), self.recipes, self.samples,
                        self.noise_seed)

    def pin_memory(self) -> "QPTBatch":
        return dataclasses.replace(self, query=self.query.pin_memory(), key_pos=self.key_pos.pin_memory(),
                                   key_deg=self.key_deg.pin_memory())


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def normalise(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 (or 0..1 float) patches -> ImageNet-normalised float32 on ``device``, in two passes."""
    device = device or x.device
    x = x.to(device, non_blocking=True)  # uint8 crosses to the device: 4x less than float32
    scale = 1.0 / 255 if x.dtype == torch.uint8 else 1.0
    std, mean = _STD.to(device), _MEAN.to(device)
    return x.to(torch.float32, copy=True).mul_(scale / std).sub_(mean / std)


def cut_patches(x: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    tops = rng.integers(0, h - size + 1, b)
    lefts = rng.integers(0, w - size + 1, b)
    return torch.stack([x[i, :, t:t + size, l:l + size] for i, (t, l) in enumerate(zip(tops, lefts))])


def step_generators(seed: int, step: int, rank: int, device: torch.device | str = "cpu"
                    ) -> tuple[np.random.Generator, torch.Generator, int]:
    """(numpy rng for recipes and patch positions, noise generator on ``device``, its seed) of one
    step of one process: a function of (seed, step, rank) only."""
    rng = np.random.default_rng([seed, step, rank, 3])
    noise_seed = int(rng.integers(2 ** 62))
    return rng, torch.Generator(device=device).manual_seed(noise_seed), noise_seed


def make_views(crops: torch.Tensor, cfg: DegradationConfig, patch_size: int, rng: np.random.Generator,
               generator: torch.Generator, *, negative_degradations: int = 1, patches_per_negative: int = 1,
               device: torch.device | None = None, return_recipes: bool = False):
    """Degrade each crop with d1 and ``negative_degradations`` others (all different) and cut patches.

    Returns a :class:`QPTBatch` of uint8 patches: query and positive from d1(x); ``key_deg``
    (B, M, 3, P, P) with M = negative_degradations x patches_per_negative patches of d2(x),
    d3(x)...  ``crops`` are (B, 3, S, S) uint8; degradations run on ``device`` (batched), and
    patches are cut after the chain's final resize back to the crop size.
    """
    b, _, h, w = crops.shape
    if patch_size > min(h, w):
        raise BiqaError(f"patch_size {patch_size} is larger than the crop ({h}x{w}); lower --patch-size "
                        "or raise crop_size in the config")
    n = negative_degradations
    per_image = [sample_distinct(cfg, rng, 1 + n) for _ in range(b)]
    recipes = [per_image[i][j] for j in range(1 + n) for i in range(b)]  # d1 of all images, then d2...
    x = crops.to(device or crops.device).float().div_(255.0)
    with threads(1 if x.device.type == "cpu" else None):
        y = degrade_batch(x.repeat(1 + n, 1, 1, 1), recipes, generator, as_uint8=True).view(1 + n, b, *x.shape[1:])
    query = cut_patches(y[0], patch_size, rng)
    key_pos = cut_patches(y[0], patch_size, rng)
    key_deg = torch.stack([cut_patches(y[1 + j], patch_size, rng) for j in range(n) for _ in range(patches_per_negative)],
                          dim=1)
    batch = QPTBatch(query, key_pos, key_deg, [[r.to_dict() for r in rs] for rs in per_image])
    return (batch, per_image) if return_recipes else batch


def step_samples(step: int, batch_size: int, rank: int = 0, world: int = 1) -> range:
    """Global sample numbers of process ``rank`` at ``step`` (as :class:`StreamSampler` yields them)."""
    base = (step * world + rank) * batch_size
    return range(base, base + batch_size)


@dataclass
class ViewSpec:
    """What :func:`make_views` needs besides the crops (picklable, for DataLoader workers)."""

    cfg: DegradationConfig
    patch_size: int
    negative_degradations: int = 1
    patches_per_negative: int = 1


class StepBatches(Dataset):
    """Step number -> that step's batch for process ``rank``: crops, or finished uint8 views.

    With ``views`` (CPU training) the whole batch is built here, in a DataLoader worker: the
    training process only moves it and computes.  Without (CUDA), items are ``(samples, crops)``
    and the GPU degrades them.  Either way an item depends only on (seed, step, rank).
    """

    def __init__(self, crops: CropDataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 views: ViewSpec | None = None):
        self.crops, self.batch_size, self.seed, self.rank, self.world = crops, batch_size, seed, rank, world
        self.views = views

    def __len__(self) -> int:  # a stream: the sampler decides where it ends
        return 2 ** 62

    def __getitem__(self, step: int):
        samples = list(step_samples(int(step), self.batch_size, self.rank, self.world))
        crops = torch.stack([self.crops[s] for s in samples])
        if self.views is None:
            return samples, crops
        v = self.views
        rng, gen, noise_seed = step_generators(self.seed, int(step), self.rank)
        with threads(1):
            batch = make_views(crops, v.cfg, v.patch_size, rng, gen, negative_degradations=v.negative_degradations,
                               patches_per_negative=v.patches_per_negative)
        return dataclasses.replace(batch, samples=samples, noise_seed=noise_seed)


class StepSampler(Sampler):
    """Step numbers from ``start`` on, forever (one DataLoader item per training step)."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            yield step
            step += 1
