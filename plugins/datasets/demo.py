"""The embedded demo sets ``demo-a`` / ``demo-b``: labelled IQA data built offline from
scikit-image's sample photos (the core's :mod:`biqabench.data.embedded` reads and caches them).

Why they exist: ``biqabench eval`` and the demo must run on a fresh install with no network and
no dataset from the user.  Each photo is scaled so its short side is 256 px; 128x128 contents are
cut from it and degraded with graded synthetic distortions (Gaussian blur, Gaussian noise, JPEG,
contrast loss; four levels each); every image is labelled with a *pseudo-MOS* that depends only
on the distortion and its level: 100 x the mean SSIM that this distortion at this level leaves on
a fixed pool of *calibration* contents (cut from the pretraining photos, so neither labelled
set's labels depend on its own images).  So the same level means the same quality on every
content, and scores compare across contents and across the two sets (v1's per-image SSIM did
not: a probe ranked its images across contents at SRCC 0.2-0.36).

This is a demo set, not a human-rated benchmark: numbers on it show that a model learns to tell
distortion kinds and levels apart, not how good it is on real photos.

170 images each: 10 contents x (1 pristine + 4 distortions x 4 levels), on photos disjoint from
each other and from ``PRETRAIN_PHOTOS`` (QPT's default data), so the default pretraining never
sees a content the default eval tests on.  Content ids make splits keep every content on one
side.  Built once, in seconds, under ``cache_root()/embedded/<VERSION>/NAME``; a change to the
contents, distortions or labels here bumps :data:`biqabench.data.embedded.VERSION`.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from biqabench.data.embedded import VERSION, embedded_root, load_photo, publish
from biqabench.data.readers.common import no_unknown_options
from biqabench.data.readers.tables import read_generic_csv
from biqabench.errors import BiqaError

SIZE = 128          # side of a content crop (px)

#: Contents of each demo set: (photo, left, top) of a SIZE x SIZE crop of the photo scaled to a
#: SHORT_SIDE short side.  The sets use disjoint photos, so a model tuned on one never saw the
#: other's scenes, and neither uses a pretraining photo.
CONTENTS: dict[str, list[tuple[str, int, int]]] = {
    "demo-a": [
        ("astronaut", 40, 0), ("astronaut", 128, 128), ("coffee", 100, 20), ("coffee", 250, 128),
        ("camera", 40, 20), ("camera", 128, 128), ("brick", 64, 64), ("coins", 0, 0),
        ("coins", 190, 128), ("grass", 64, 64),
    ],
    "demo-b": [
        ("chelsea", 100, 30), ("chelsea", 250, 100), ("rocket", 130, 100), ("rocket", 0, 0),
        ("immunohistochemistry", 0, 0), ("immunohistochemistry", 128, 128), ("gravel", 64, 64),
        ("moon", 64, 64), ("retina", 64, 64), ("retina", 0, 64),
    ],
}

#: Calibration contents: (photo, left, top) crops of the pretraining photos.
CALIBRATION: tuple[tuple[str, int, int], ...] = (
    ("motorcycle_left", 40, 60), ("motorcycle_left", 200, 110), ("motorcycle_right", 120, 0),
    ("hubble_deep_field", 0, 0), ("hubble_deep_field", 150, 120), ("cell", 64, 90),
)

#: Graded distortions: name -> four levels, mildest first (at 128 px).
DISTORTIONS: dict[str, tuple[float, ...]] = {
    "blur": (0.7, 1.3, 2.2, 3.5),        # Gaussian blur radius (px)
    "noise": (5.0, 12.0, 25.0, 45.0),    # Gaussian noise sigma (grey levels of 255)
    "jpeg": (50.0, 25.0, 12.0, 5.0),     # JPEG quality
    "contrast": (0.7, 0.5, 0.3, 0.15),   # contrast factor (1 = unchanged)
}

DESCRIPTION = ("demo set built offline from scikit-image sample photos with graded synthetic distortions; "
               "pseudo-MOS = 100 x mean SSIM of the distortion level on fixed calibration contents "
               "(one score per distortion level; not human ratings)")


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


@lru_cache(maxsize=1)
def pseudo_mos_table() -> dict[tuple[str, int], float]:
    """(distortion, level) -> pseudo-MOS: 100 x the mean SSIM that distortion leaves on the
    ``CALIBRATION`` contents.  One number per level, whatever the content; pristine is 100."""
    photos = {p: load_photo(p) for p in dict.fromkeys(p for p, _, _ in CALIBRATION)}
    refs = [_crop(photos[p], left, top) for p, left, top in CALIBRATION]
    table = {}
    for kind, levels in DISTORTIONS.items():
        for lv, level in enumerate(levels, start=1):
            rng = np.random.default_rng([int(VERSION), lv, sum(map(ord, kind))])
            table[(kind, lv)] = 100.0 * float(np.mean([ssim(r, distort(r, kind, level, rng)) for r in refs]))
    return table


def _build_set(name: str, tmp: Path) -> None:
    mos = pseudo_mos_table()
    photos: dict[str, Image.Image] = {}
    rows = []
    (tmp / "images").mkdir()
    for c, (photo, left, top) in enumerate(CONTENTS[name]):
        if photo not in photos:
            photos[photo] = load_photo(photo)
        ref = _crop(photos[photo], left, top)
        content = f"{photo}_{c:02d}"
        ref_name = f"images/{content}.png"
        ref.save(tmp / ref_name, compress_level=1)
        rows.append((ref_name, 100.0, content, "pristine", 0))
        rng = np.random.default_rng([int(VERSION), c, sum(map(ord, name))])
        for kind, levels in DISTORTIONS.items():
            for lv, level in enumerate(levels, start=1):
                fname = f"images/{content}_{kind}{lv}.png"
                distort(ref, kind, level, rng).save(tmp / fname, compress_level=1)
                rows.append((fname, mos[(kind, lv)], content, kind, lv))
    with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos", "ref", "distortion", "level"])
        for r in rows:
            w.writerow([r[0], f"{r[1]:.4f}", r[2], r[3], r[4]])


def build_demo(name: str) -> Path:
    """Folder of one demo set (``images/*.png`` + ``labels.csv``), built on first use."""
    if name not in CONTENTS:
        raise BiqaError(f"unknown demo set {name!r} (one of {', '.join(CONTENTS)})")
    return publish(lambda tmp: _build_set(name, tmp), embedded_root() / name)


def load_demo(name: str, root: Path | None = None, **options):
    """Loader for the ``demo-a`` / ``demo-b`` DatasetSpecs; ``root`` is ignored (the set lives in the cache)."""
    no_unknown_options(options, name, ())
    folder = build_demo(name)
    table = read_generic_csv(folder, "labels.csv", scale=(0.0, 100.0), higher_better=True, name=name)
    table.options["embedded_version"] = VERSION
    return table
