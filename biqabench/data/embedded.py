"""The embedded default: small labelled demo sets built offline from scikit-image's sample photos.

Why it exists: ``biqabench eval`` and the demo must run on a fresh install with no network and
no dataset from the user.  scikit-image ships a handful of real photographs inside its wheel;
we cut 256x256 contents from them, degrade each with graded synthetic distortions (Gaussian
blur, Gaussian noise, JPEG, contrast loss; three levels each) and label every image with a
*pseudo-MOS*: SSIM against its pristine source, scaled to 0..100 (higher is better).

This is a demo set, not a human-rated benchmark: numbers on it show that the pipeline works,
not how good a model is.

Two sets with disjoint source photos, ``demo-a`` and ``demo-b`` (130 images each: 10 contents
x (1 pristine + 4 distortions x 3 levels)), carry content ids so splits keep every content on
one side.  Everything is built once, in seconds, under ``cache_root()/embedded/<VERSION>/``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from biqabench.errors import BiqaError
from biqabench.paths import cache_root

log = logging.getLogger(__name__)

#: Bump when the photos, crops, distortions or labels change: a new version builds a new folder.
VERSION = "1"
SIZE = 256

#: Natural photographs bundled in the scikit-image wheel (file name in ``skimage/data``).
#: Left out on purpose: clock_motion (already motion-blurred), page/text (documents),
#: chessboards/logo/phantom (synthetic).
PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "camera": "camera.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "coins": "coins.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg",
    "motorcycle": "motorcycle_left.png",
    "gravel": "gravel.png",
    "moon": "moon.png",
}

#: Contents of each demo set: (photo, left, top) of a SIZE x SIZE crop after the photo is
#: scaled by ``_SCALE`` (so the large photos give several distinct contents).  The two sets use
#: disjoint photos, so a model tuned on one never saw the other's scenes.
_SCALE = {"hubble_deep_field": 0.6, "retina": 0.55}
CONTENTS: dict[str, list[tuple[str, int, int]]] = {
    "demo-a": [
        ("astronaut", 128, 20), ("astronaut", 0, 256),
        ("coffee", 40, 60), ("coffee", 330, 120),
        ("hubble_deep_field", 20, 20), ("hubble_deep_field", 300, 260),
        ("camera", 128, 40), ("brick", 128, 128), ("grass", 0, 0), ("coins", 64, 24),
    ],
    "demo-b": [
        ("chelsea", 100, 20), ("rocket", 0, 120), ("rocket", 300, 0),
        ("immunohistochemistry", 0, 0), ("immunohistochemistry", 256, 256),
        ("retina", 120, 120), ("retina", 400, 380),
        ("motorcycle", 230, 120), ("gravel", 128, 128), ("moon", 0, 256),
    ],
}

#: Graded distortions: name -> three levels, mildest first.
DISTORTIONS: dict[str, tuple[float, ...]] = {
    "blur": (1.0, 2.0, 4.0),         # Gaussian blur radius (px)
    "noise": (8.0, 20.0, 45.0),      # Gaussian noise sigma (grey levels of 255)
    "jpeg": (40.0, 15.0, 5.0),       # JPEG quality
    "contrast": (0.6, 0.35, 0.15),   # contrast factor (1 = unchanged)
}

DESCRIPTION = ("demo set built offline from scikit-image sample photos with graded synthetic distortions; "
               "pseudo-MOS = SSIM x 100 (not human ratings)")


def _skimage_data_dir() -> Path:
    import skimage.data  # a dependency: its sample photos ship with the wheel

    return Path(skimage.data.__file__).parent


def load_photo(name: str) -> Image.Image:
    """One bundled photo as an RGB PIL image (read from the wheel's files: nothing downloads)."""
    path = _skimage_data_dir() / PHOTOS[name]
    if not path.is_file():
        raise BiqaError(f"scikit-image sample photo {path.name} is missing from {path.parent}; "
                        "reinstall scikit-image from its wheel (pip install --force-reinstall scikit-image)")
    with Image.open(path) as im:
        im = im.convert("RGB")
    scale = _SCALE.get(name)
    if scale:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    return im


def embedded_root() -> Path:
    return cache_root() / "embedded" / VERSION


def _publish(build, final: Path) -> Path:
    """Build into a temporary sibling folder and rename it into place, so concurrent processes
    (DataLoader workers, parallel test runs) never see a half-built folder."""
    if final.is_dir():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as exc:
        raise BiqaError(f"cannot build the embedded images in {final.parent}: {exc.strerror or exc}; "
                        "set BIQABENCH_CACHE to a writable folder") from None
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # a real failure, not a lost race
                raise
    except OSError as exc:
        raise BiqaError(f"cannot build the embedded images in {final.parent}: {exc.strerror or exc} "
                        "(nothing was half-written); free space or set BIQABENCH_CACHE") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def pristine_dir() -> Path:
    """A folder of the pristine sample photos as PNG (the default unlabelled data for QPT pretraining).

    Built on first call (well under a second), then reused.
    """
    def build(tmp: Path) -> None:
        for name in PHOTOS:
            load_photo(name).save(tmp / f"{name}.png", compress_level=1)

    return _publish(build, embedded_root() / "pristine")


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


def pseudo_mos(reference: Image.Image, distorted: Image.Image) -> float:
    """SSIM of the distorted image to its source on luma (Gaussian window, sigma 1.5, as in
    Wang et al. 2004), x100.  Needs no downloaded weights."""
    from skimage.metrics import structural_similarity

    ref = np.asarray(reference.convert("L"), dtype=np.float64)
    dist = np.asarray(distorted.convert("L"), dtype=np.float64)
    ssim = structural_similarity(ref, dist, data_range=255.0,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return float(np.clip(ssim, 0.0, 1.0) * 100.0)


def _crop(photo: Image.Image, left: int, top: int) -> Image.Image:
    left = min(max(left, 0), photo.width - SIZE)
    top = min(max(top, 0), photo.height - SIZE)
    return photo.crop((left, top, left + SIZE, top + SIZE))


def _build_set(name: str, tmp: Path) -> None:
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
                img = distort(ref, kind, level, rng)
                fname = f"images/{content}_{kind}{lv}.png"
                img.save(tmp / fname, compress_level=1)
                rows.append((fname, pseudo_mos(ref, img), content, kind, lv))
    with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "mos", "ref", "distortion", "level"])
        for r in rows:
            w.writerow([r[0], f"{r[1]:.4f}", r[2], r[3], r[4]])


def build_demo(name: str) -> Path:
    """Folder of one demo set (``images/*.png`` + ``labels.csv``), built on first use."""
    if name not in CONTENTS:
        raise BiqaError(f"unknown demo set {name!r} (one of {', '.join(CONTENTS)})")
    return _publish(lambda tmp: _build_set(name, tmp), embedded_root() / name)


def load_demo(name: str, root: Path | None = None, **options):
    """Loader for the ``demo-a`` / ``demo-b`` DatasetSpecs; ``root`` is ignored (the set lives in the cache)."""
    from biqabench.data.readers.common import no_unknown_options
    from biqabench.data.readers.tables import read_generic_csv

    no_unknown_options(options, name, ())
    folder = build_demo(name)
    table = read_generic_csv(folder, "labels.csv", scale=(0.0, 100.0), higher_better=True, name=name)
    table.options["embedded_version"] = VERSION
    return table
