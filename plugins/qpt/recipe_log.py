"""``recipes.jsonl``: the degradations a QPT run sampled, every N steps, for audit and replay.

Why: a pretraining run's training signal is its degradations; a reviewer asking "what did the
model see?" should get the recipes themselves, not only the config they were drawn from.  Every
``every`` steps rank 0 appends one JSON line:

    {"step": 120, "rank": 0, "seed": 0, "noise_seed": ..., "samples": [...], "files": [...],
     "recipes": [[d1, d2, ...] per image]}

``samples`` are the global sample numbers (which image and crop: :func:`data.image_at` and
:class:`data.CropDataset`), ``files`` the images' paths relative to ``--data``, ``recipes`` the
ops with every parameter (:meth:`Recipe.to_dict`); with ``noise_seed`` the step's views can be
rebuilt exactly (:func:`replay_views`).  On ``--resume`` lines of steps at or after the
checkpoint are dropped first, so the log reads like the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from biqabench_plugins.qpt.data import QPTBatch, cut_patches, image_at, step_generators
from biqabench_plugins.qpt.degradations import Recipe, degrade_batch, sample_distinct

FILE = "recipes.jsonl"


class RecipeLog:
    """Append a step's recipes to ``run_dir/recipes.jsonl`` every ``every`` steps (0: never)."""

    def __init__(self, run_dir: Path, every: int, seed: int, paths: Sequence[Path], data_root: Path,
                 start_step: int = 0, enabled: bool = True):
        self.path = Path(run_dir) / FILE
        self.every, self.seed, self.paths, self.root = every, seed, list(paths), Path(data_root)
        self.enabled = enabled and every > 0
        if self.enabled:
            self._truncate(start_step)

    def _truncate(self, start_step: int) -> None:
        if not self.path.is_file():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] < start_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        os.replace(tmp, self.path)

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def write(self, step: int, batch: QPTBatch, rank: int = 0) -> None:
        if not self.due(step) or batch.recipes is None:
            return
        samples = list(batch.samples or [])
        files = [self._name(image_at(len(self.paths), self.seed, s)) for s in samples]
        entry = {"step": step, "rank": rank, "seed": self.seed, "noise_seed": batch.noise_seed, "samples": samples,
                 "files": files, "recipes": batch.recipes}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, separators=(",", ":")) + "\n")
            f.flush()

    def _name(self, index: int) -> str:
        p = self.paths[index]
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)


def read(path: Path) -> list[dict]:
    """Every entry of a ``recipes.jsonl`` (a run folder or the file itself)."""
    path = Path(path)
    path = path / FILE if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replay_views(entry: dict, crops_dataset, spec) -> QPTBatch:
    """Rebuild the uint8 views of a logged step from its samples, recipes and noise seed.

    ``crops_dataset`` is the run's :class:`data.CropDataset` (same folder, crop size and seed),
    ``spec`` its :class:`data.ViewSpec`.  Patch positions come from the step's generator, as in
    the run; the recipes are the logged ones.
    """
    crops = torch.stack([crops_dataset[s] for s in entry["samples"]])
    rng, gen, noise_seed = step_generators(entry["seed"], entry["step"], entry["rank"])
    assert noise_seed == entry["noise_seed"], "the log was written by another version of the step generators"
    per_image = [[Recipe.from_dict(d) for d in rs] for rs in entry["recipes"]]
    for _ in per_image:  # make_views drew the recipes first: draw them again to reach the patch positions
        sample_distinct(spec.cfg, rng, 1 + spec.negative_degradations)
    b, n = len(per_image), spec.negative_degradations
    recipes = [per_image[i][j] for j in range(1 + n) for i in range(b)]
    x = crops.float().div_(255.0).repeat(1 + n, 1, 1, 1)
    y = degrade_batch(x, recipes, gen, as_uint8=True).view(1 + n, b, *crops.shape[1:])
    query, key_pos = cut_patches(y[0], spec.patch_size, rng), cut_patches(y[0], spec.patch_size, rng)
    key_deg = torch.stack([cut_patches(y[1 + j], spec.patch_size, rng) for j in range(n)
                           for _ in range(spec.patches_per_negative)], dim=1)
    return QPTBatch(query, key_pos, key_deg, entry["recipes"], entry["samples"], noise_seed)
