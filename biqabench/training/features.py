"""Cached backbone features: a frozen backbone is run once per crop, not once per crop per epoch.

Why: with ``freeze_backbone: true`` the backbone's output for a given crop never changes, yet a
plain fine-tune recomputes it every epoch of every split.  On a CPU that forward pass is nearly
all of the cost (ResNet-50 at 128 px: ~90 ms of CPU per crop, the HyperIQA head's step ~15 ms),
so a recipe with ``cache_features: true`` computes the features of a *fixed* set of crops per
image once per run and trains the head on them for as many cheap epochs as it likes.

What is fixed, so that every split and epoch reuses one computation:

* training crops: ``train_patches`` crops per image (plus their mirror images when the recipe
  has ``hflip``), drawn from the image's file name and the run seed, not the split seed, each
  distinct crop once (an image of the crop's size has one); ``train_patches: 0`` takes the grid
  of crops that covers the image (:func:`biqabench.data.grid_boxes`);
* test crops: exactly the crops :func:`biqabench.evaluation.runner.score_table` scores (same seed
  rule; with ``test_patches: 0`` the covering grid), so scoring from the cache equals scoring the
  images;
* the backbone: one frozen backbone for the whole run (the runner builds it with the run seed in
  every split; the store refuses a different one).

The head reads the features through ``head.cache_features`` (what of the stage maps to keep,
reduced where that is exact) and ``head.score_features`` (the rest of its forward pass).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from biqabench.data.patches import crop_boxes, normalise, test_crop_seed, upscale_if_small
from biqabench.runtime.device import Runtime
from biqabench.base.errors import BiqaError
from biqabench.components.heads import IQAHead, TrainRecipe as Recipe
from biqabench.runtime.progress import ProgressBar as tqdm  # draws its final count (biqabench.runtime.progress)

Box = tuple[int, int, bool]  # (top, left, hflip)


def backbone_fingerprint(model: IQAHead) -> tuple[float, ...]:
    """A cheap identity of the backbone's weights and BatchNorm statistics (sums per tensor).

    Summed in one memory layout (``contiguous``): ``train_head`` moves the model to channels_last,
    which must not look like another backbone (the summation order would change the last bits)."""
    return tuple(float(t.detach().cpu().contiguous().double().sum()) for t in model.backbone.state_dict().values()
                 if t.is_floating_point())


def train_seed(name: str, seed: int) -> int:
    """Training crops depend on the file name and the run seed only: the same in every split."""
    return (zlib.crc32(b"train:" + Path(name).name.encode()) + 104729 * seed) % (2**31)


class FeatureSet(Dataset):
    """Cached features of some crops with their labels: ``(features, mos, image index)`` items,
    where ``features`` is the head's list of per-crop tensors."""

    def __init__(self, feats: list[torch.Tensor], mos: torch.Tensor, image: torch.Tensor):
        self.feats, self.mos, self.image = feats, mos, image

    def __len__(self) -> int:
        return int(self.mos.shape[0])

    def __getitem__(self, i):
        return [f[i] for f in self.feats], self.mos[i], self.image[i]


class FeatureStore:
    """Features of crops, keyed by (dataset, image, crop box, patch size), for one frozen backbone."""

    def __init__(self, runtime: Runtime, *, batch_patches: int = 32, progress: bool = True):
        self.runtime = runtime
        self.batch_patches = batch_patches
        self.progress = progress
        self.fingerprint: tuple[float, ...] | None = None
        self._feats: dict[tuple, list[torch.Tensor]] = {}
        self.computed = 0  # crops run through the backbone (a test asserts each runs once)

    def _check(self, model: IQAHead) -> None:
        if not model.scores_features:
            raise BiqaError(f"recipe cache_features: head {type(model).__name__} cannot score from cached "
                            "backbone features (it does not implement score_features); set cache_features: false")
        fp = backbone_fingerprint(model)
        if self.fingerprint is None:
            self.fingerprint = fp
        elif fp != self.fingerprint:
            raise BiqaError("cached features belong to another backbone; a frozen backbone must be the same "
                            "in every split (build it with the run seed)")

    def _boxes(self, img: np.ndarray, name: str, recipe: Recipe, seed: int, train: bool) -> list[Box]:
        _, h, w = img.shape
        p = recipe.patch_size
        if not train:
            return [(t, left, False) for t, left, _ in crop_boxes(h, w, p, recipe.test_patches, test_crop_seed(name, seed))]
        drawn = crop_boxes(h, w, p, recipe.train_patches, train_seed(name, seed))
        boxes = list(dict.fromkeys((t, left, False) for t, left, _ in drawn))  # distinct crops: an image
        # the crop's size has one, however many are asked for (the demo's 128 px images)
        return boxes + [(t, left, True) for t, left, _ in boxes] if recipe.hflip else boxes

    def ensure(self, model: IQAHead, table, indices, image_cache, recipe: Recipe, *, seed: int, train: bool,
               desc: str = "features") -> list[list[tuple]]:
        """Compute what is missing; return, per image, the keys of its crops."""
        self._check(model)
        keys, todo = [], []
        for i in np.asarray(indices, dtype=int):
            img = upscale_if_small(image_cache.get_array(table.paths[i]), recipe.patch_size)
            mine = []
            for box in self._boxes(img, table.names[i], recipe, seed, train):
                key = (table.name, table.names[i], box, recipe.patch_size)
                mine.append(key)
                if key not in self._feats:
                    todo.append((key, img, box))
                    self._feats[key] = []  # placeholder: a crop shared by two images' lists runs once
            keys.append(mine)
        self._run(model, todo, recipe.patch_size, desc)
        return keys

    @torch.inference_mode()
    def _run(self, model: IQAHead, todo: list, p: int, desc: str) -> None:
        if not todo:
            return
        backbone = model.backbone.eval()
        bar = tqdm(total=len(todo), desc=desc, disable=not self.progress, leave=False, unit="crop")
        for start in range(0, len(todo), self.batch_patches):
            chunk = todo[start:start + self.batch_patches]
            crops = np.stack([_cut(img, box, p) for _, img, box in chunk])
            x = self.runtime.to(normalise(crops))
            with self.runtime.autocast():
                feats = [f.float().cpu() for f in model.cache_features(backbone(x))]
            for j, (key, _, _) in enumerate(chunk):
                self._feats[key] = [f[j].clone() for f in feats]
            self.computed += len(chunk)
            bar.update(len(chunk))
        bar.close()

    def train_set(self, model: IQAHead, table, indices, image_cache, recipe: Recipe, *, seed: int) -> FeatureSet:
        """Every cached training crop of ``indices``, with its image's normalised MOS."""
        keys = self.ensure(model, table, indices, image_cache, recipe, seed=seed, train=True, desc="features train")
        flat = [(k, i) for i, ks in zip(np.asarray(indices, dtype=int), keys) for k in ks]
        feats = [torch.stack([self._feats[k][level] for k, _ in flat]) for level in range(len(self._feats[flat[0][0]]))]
        image = torch.as_tensor([i for _, i in flat])
        return FeatureSet(feats, torch.as_tensor(table.mos_norm[image.numpy()], dtype=torch.float32), image)

    @torch.inference_mode()
    def score(self, model: IQAHead, table, indices, image_cache, recipe: Recipe, *, seed: int,
              desc: str = "test") -> np.ndarray:
        """Normalised scores of ``indices`` from their cached test crops (mean over crops)."""
        keys = self.ensure(model, table, indices, image_cache, recipe, seed=seed, train=False, desc=f"features {desc}")
        model.eval()
        flat = [k for ks in keys for k in ks]
        if not flat:
            return np.zeros(0, dtype=np.float64)
        out = []
        for start in range(0, len(flat), 256):
            chunk = flat[start:start + 256]
            feats = [self.runtime.to(torch.stack([self._feats[k][lv] for k in chunk]))
                     for lv in range(len(self._feats[chunk[0]]))]
            with self.runtime.autocast():
                out.append(model.score_features(feats).float().cpu())
        scores = torch.cat(out).split([len(ks) for ks in keys])
        return np.asarray([float(s.mean()) for s in scores], dtype=np.float64)


def _cut(img: np.ndarray, box: Box, p: int) -> np.ndarray:
    top, left, flip = box
    crop = img[:, top:top + p, left:left + p]
    return np.ascontiguousarray(crop[:, :, ::-1] if flip else crop)
