"""QPT's step batches: query, positive and degradation-negative patches, as uint8.

The photos, crops and step-indexed loading are the core's (:mod:`biqabench.training.pretrain_data`,
re-exported here); this module adds what is QPT's own: :func:`make_views` degrades each crop with
d1 and other degradations d2, d3... and cuts the patches, and :class:`QPTViews` is the batch
builder the core loop runs in its DataLoader workers (CPU) or on the training device (CUDA).
Recipes, patch positions and noise depend only on (seed, step, rank)
(:func:`~biqabench.training.pretrain_data.step_generators`), never on which worker built the
batch or how many there are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from biqabench.plugin_api import (IMAGE_SUFFIXES, BiqaError, CropDataset, StepSampler, StreamSampler,  # noqa: F401
                                  image_at, list_images, low_priority_worker, normalise, random_patches,
                                  step_generators, step_samples, threads)
from biqabench.plugin_api import StepBatches as _CoreStepBatches
from biqabench_plugins.qpt.degradations import DegradationConfig, degrade_batch, sample_distinct

#: one patch per image at a random position (the core's; QPT's name for it)
cut_patches = random_patches


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


@dataclass
class ViewSpec:
    """What :func:`make_views` needs besides the crops (picklable, for DataLoader workers)."""

    cfg: DegradationConfig
    patch_size: int
    negative_degradations: int = 1
    patches_per_negative: int = 1


class QPTViews:
    """The core loop's batch builder for QPT: a step's crops -> its :class:`QPTBatch` (picklable)."""

    def __init__(self, spec: ViewSpec, seed: int):
        self.spec, self.seed = spec, seed

    def __call__(self, crops: torch.Tensor, *, step: int, rank: int, samples=None, device=None) -> QPTBatch:
        v = self.spec
        rng, gen, noise_seed = step_generators(self.seed, int(step), rank, device or "cpu")
        batch = make_views(crops, v.cfg, v.patch_size, rng, gen, negative_degradations=v.negative_degradations,
                           patches_per_negative=v.patches_per_negative, device=device)
        return dataclasses.replace(batch, samples=samples, noise_seed=noise_seed)


class StepBatches(_CoreStepBatches):
    """Step number -> that step's batch: finished uint8 views with ``views`` (built in a worker),
    else ``(samples, crops)`` (the core's :class:`~biqabench.training.pretrain_data.StepBatches`)."""

    def __init__(self, crops: CropDataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 views: ViewSpec | None = None):
        super().__init__(crops, batch_size, seed, rank, world, build=QPTViews(views, seed) if views else None)
        self.views = views
