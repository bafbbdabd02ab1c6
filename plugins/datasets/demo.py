"""The embedded demo sets ``demo-a`` / ``demo-b``: labelled IQA data built offline from the bundled
sample photos (the core's :mod:`biqabench.data.embedded` reads and caches them).

Why they exist: ``biqabench eval`` and the demo must run on a fresh install with no network and
no dataset from the user.  Each photo is scaled so its short side is 256 px; 128x128 contents are
cut from it and degraded with graded synthetic distortions (Gaussian blur, Gaussian noise, JPEG,
contrast loss; four levels each); every image is labelled with a *pseudo-MOS* that depends only
on the distortion and its level: 100 x the mean SSIM that this distortion at this level leaves on
a fixed pool of *calibration* contents (cut from the pretraining photos, so neither labelled
set's labels depend on its own images).  So the same level means the same quality on every
content, and scores compare across contents and across the two sets (v1's per-image SSIM did
not: a probe ranked its images across contents at SRCC 0.2-0.36).

A level-only label is honest only on contents where the level does what the label says: blur at
the strongest level leaves a flat sky or the moon almost untouched, grass and gravel hide noise.
Version 2 kept such crops and its cross-set SRCC was capped by them (docs/datasets.md), so version 3
chooses its contents by a rule (:func:`select_contents`, :func:`faithfulness`): windows whose own
SSIM under the levels is within ``FAITHFUL_WITHIN`` points of the labels, as real synthetic IQA
sets choose sharp, detailed references.  The photos that fail it (grass, gravel, moon, retina, cell,
rocket) join the unlabelled pretraining photos.

This is a demo set, not a human-rated benchmark: numbers on it show that a model learns to tell
distortion kinds and levels apart, not how good it is on real photos.

``demo-a``: 15 contents of 5 photos, 255 images; ``demo-b``: 12 contents of 4 photos, 204 images
(1 pristine + 4 distortions x 4 levels each).  The photos are disjoint from each other and from
``PRETRAIN_PHOTOS`` (QPT's default data), so the default pretraining never sees a content the
default eval tests on.  The content id of an image is its *photo* (crops of one photo may overlap
by up to a quarter), so splits keep every photo on one side.  Built once, in seconds, under
``cache_root()/embedded/<VERSION>/NAME``; a change to the contents, distortions or labels here
bumps :data:`biqabench.data.embedded.VERSION`.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from biqabench.plugin_api import (
    BiqaError, EMBEDDED_VERSION as VERSION, embedded_root, load_photo, no_unknown_options, publish, read_generic_csv,
)

SIZE = 128          # side of a content crop (px)

#: The photos of each labelled set: disjoint, and none of them a pretraining photo.
SET_PHOTOS: dict[str, tuple[str, ...]] = {
    "demo-a": ("astronaut", "camera", "coins", "coffee", "brick"),
    "demo-b": ("chelsea", "immunohistochemistry", "hubble_deep_field", "grace_hopper"),
}

#: Calibration contents: (photo, left, top) crops of the pretraining photos (natural scenes).
CALIBRATION: tuple[tuple[str, int, int], ...] = (
    ("motorcycle_left", 40, 60), ("motorcycle_left", 200, 110), ("motorcycle_left", 380, 20),
    ("motorcycle_right", 120, 0), ("motorcycle_right", 300, 128), ("motorcycle_right", 10, 120),
)

#: Graded distortions: name -> four levels, mildest first (at 128 px).
DISTORTIONS: dict[str, tuple[float, ...]] = {
    "blur": (0.7, 1.3, 2.2, 3.5),        # Gaussian blur radius (px)
    "noise": (5.0, 12.0, 25.0, 45.0),    # Gaussian noise sigma (grey levels of 255)
    "jpeg": (50.0, 25.0, 12.0, 5.0),     # JPEG quality
    "contrast": (0.7, 0.5, 0.3, 0.15),   # contrast factor (1 = unchanged)
}

#: How contents are chosen (:func:`select_contents`): windows on a GRID-pixel grid of each photo,
#: kept when their FAITHFULNESS is within FAITHFUL_WITHIN, best first, each overlapping the ones
#: already kept by at most MAX_OVERLAP of its area, at most MAX_CROPS per photo.
GRID, FAITHFUL_WITHIN, MAX_OVERLAP, MAX_CROPS = 16, 7.0, 0.25, 8

#: The windows :func:`select_contents` picks, written out so that a build takes seconds (the
#: search takes about a minute); ``tests/data/test_embedded.py`` checks that the rule still picks them.
CONTENTS: dict[str, list[tuple[str, int, int]]] = {
    "demo-a": [
        ("astronaut", 0, 128), ("astronaut", 64, 64), ("astronaut", 0, 0), ("camera", 80, 64),
        ("coins", 128, 128), ("coins", 32, 128), ("coins", 176, 32), ("coins", 80, 48), ("coffee", 0, 112),
        ("coffee", 192, 128), ("coffee", 128, 64), ("coffee", 0, 16), ("brick", 128, 0), ("brick", 32, 0),
        ("brick", 80, 80),
    ],
    "demo-b": [
        ("chelsea", 128, 0), ("chelsea", 48, 48), ("chelsea", 112, 112), ("immunohistochemistry", 96, 128),
        ("immunohistochemistry", 128, 32), ("immunohistochemistry", 0, 112), ("immunohistochemistry", 32, 16),
        ("hubble_deep_field", 112, 112), ("hubble_deep_field", 64, 0), ("grace_hopper", 80, 64),
        ("grace_hopper", 0, 0), ("grace_hopper", 96, 160),
    ],
}

DESCRIPTION = ("demo set built offline from bundled sample photos with graded synthetic distortions; "
               "pseudo-MOS = 100 x mean SSIM of the distortion level on fixed calibration contents "
               "(one score per distortion level; not human ratings); contents chosen so that each level "
               "does to them what its score says")


# -- distortions and pseudo-MOS --------------------------------------------------------------
def distort(image: Image.Image, kind: str, level: float, rng: np.random.Generator) -> Image.Image:
    """Apply one graded distortion (deterministic given ``rng``)."""
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=level))
    if kind == "noise":
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + rng.normal(0.0, level, size=arr.shape).astype(np.float32)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if kind == "jpeg":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=int(level))
        buf.seek(0)
        with Image.open(buf) as im:
            return im.convert("RGB")
    if kind == "contrast":
        return ImageEnhance.Contrast(image).enhance(level)
    raise ValueError(f"unknown distortion {kind!r}")


def ssim(reference: Image.Image, distorted: Image.Image) -> float:
    """SSIM of the distorted image to its source on luma (Gaussian window, sigma 1.5, as in
    Wang et al. 2004), clipped to [0, 1].  Needs no downloaded weights."""
    from skimage.metrics import structural_similarity

    ref = np.asarray(reference.convert("L"), dtype=np.float64)
    dist = np.asarray(distorted.convert("L"), dtype=np.float64)
    value = structural_similarity(ref, dist, data_range=255.0,
                                  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return float(np.clip(value, 0.0, 1.0))


def _crop(photo: Image.Image, left: int, top: int) -> Image.Image:
    left = min(max(left, 0), photo.width - SIZE)
    top = min(max(top, 0), photo.height - SIZE)
    return photo.crop((left, top, left + SIZE, top + SIZE))


def _level_rng(kind: str, level: int) -> np.random.Generator:
    return np.random.default_rng([int(VERSION), level, sum(map(ord, kind))])


@lru_cache(maxsize=1)
def pseudo_mos_table() -> dict[tuple[str, int], float]:
    """(distortion, level) -> pseudo-MOS: 100 x the mean SSIM that distortion leaves on the
    ``CALIBRATION`` contents.  One number per level, whatever the content; pristine is 100."""
    photos = {p: load_photo(p) for p in dict.fromkeys(p for p, _, _ in CALIBRATION)}
    refs = [_crop(photos[p], left, top) for p, left, top in CALIBRATION]
    table = {}
    for kind, levels in DISTORTIONS.items():
        for lv, level in enumerate(levels, start=1):
            rng = _level_rng(kind, lv)
            table[(kind, lv)] = 100.0 * float(np.mean([ssim(r, distort(r, kind, level, rng)) for r in refs]))
    return table


def faithfulness(ref: Image.Image) -> float:
    """How far the levels' labels are from what they do to this content: for each distortion, the
    mean over its levels of ``100 * SSIM(ref, distorted) - pseudo-MOS``; then the mean of the four
    absolute values.  0: the levels damage this content exactly as much as the calibration contents.

    Why contents are chosen by it: the label is the level's, whatever the content, so a content on
    which a level is invisible makes the label a lie (a flat sky blurred at the strongest level looks
    pristine and would be labelled 44; grass and gravel hide noise the same way).  Real synthetic
    IQA sets choose detailed, sharp references for the same reason."""
    table = pseudo_mos_table()
    gaps = []
    for kind, levels in DISTORTIONS.items():
        rng = np.random.default_rng(0)
        gaps.append(np.mean([100.0 * ssim(ref, distort(ref, kind, level, rng)) - table[(kind, lv)]
                             for lv, level in enumerate(levels, start=1)]))
    return float(np.mean(np.abs(gaps)))


def select_contents(photo: str) -> list[tuple[str, int, int]]:
    """The windows of ``photo`` a demo set uses (the rule behind :data:`CONTENTS`): every SIZE-px
    window on a GRID-px grid, most faithful first, kept if within FAITHFUL_WITHIN and overlapping
    each window already kept by at most MAX_OVERLAP of its area; at most MAX_CROPS."""
    image = load_photo(photo)
    scored = sorted((faithfulness(_crop(image, left, top)), left, top)
                    for left in range(0, image.width - SIZE + 1, GRID)
                    for top in range(0, image.height - SIZE + 1, GRID))
    kept: list[tuple[int, int]] = []
    for score, left, top in scored:
        if score > FAITHFUL_WITHIN or len(kept) == MAX_CROPS:
            break
        if all(max(0, SIZE - abs(left - l2)) * max(0, SIZE - abs(top - t2)) <= MAX_OVERLAP * SIZE * SIZE
               for l2, t2 in kept):
            kept.append((left, top))
    return [(photo, left, top) for left, top in kept]


def _build_set(name: str, tmp: Path) -> None:
    mos = pseudo_mos_table()
    photos: dict[str, Image.Image] = {}
    rows = []
    (tmp / "images").mkdir()
    crops_of: dict[str, int] = {}
    for c, (photo, left, top) in enumerate(CONTENTS[name]):
        if photo not in photos:
            photos[photo] = load_photo(photo)
        ref = _crop(photos[photo], left, top)
        crop = crops_of[photo] = crops_of.get(photo, -1) + 1
        stem = f"images/{photo}_{crop}"
        ref.save(tmp / f"{stem}.png", compress_level=1)
        rows.append((f"{stem}.png", 100.0, photo, crop, "pristine", 0))
        rng = np.random.default_rng([int(VERSION), c, sum(map(ord, name))])
        for kind, levels in DISTORTIONS.items():
            for lv, level in enumerate(levels, start=1):
                fname = f"{stem}_{kind}{lv}.png"
                distort(ref, kind, level, rng).save(tmp / fname, compress_level=1)
                rows.append((fname, mos[(kind, lv)], photo, crop, kind, lv))
    with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos", "ref", "crop", "distortion", "level"])
        for r in rows:
            w.writerow([r[0], f"{r[1]:.4f}", *r[2:]])


def build_demo(name: str) -> Path:
    """Folder of one demo set (``images/*.png`` + ``labels.csv``), built on first use."""
    if name not in SET_PHOTOS:
        raise BiqaError(f"unknown demo set {name!r} (one of {', '.join(SET_PHOTOS)})")
    return publish(lambda tmp: _build_set(name, tmp), embedded_root() / name)


def load_demo(name: str, root: Path | None = None, **options):
    """Loader for the ``demo-a`` / ``demo-b`` DatasetSpecs; ``root`` is ignored (the set lives in the cache)."""
    no_unknown_options(options, name, ())
    folder = build_demo(name)
    table = read_generic_csv(folder, "labels.csv", scale=(0.0, 100.0), higher_better=True, name=name)
    table.options["embedded_version"] = VERSION
    return table
