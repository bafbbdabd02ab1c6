"""The embedded photos: the sample photographs bundled with scikit-image (and one with
matplotlib), read offline and cached.

Why it exists: ``biqabench eval``, ``probe`` and ``pretrain`` must run on a fresh install with no
network and no data from the user.  scikit-image ships a handful of real photographs inside its
wheel; this module reads them (:func:`load_photo`), builds folders from them atomically under
``cache_root()/embedded/<VERSION>/`` (:func:`publish`) and provides :func:`pristine_dir`, the
default unlabelled data for QPT pretraining.

The photos are split three ways, disjoint: ``PRETRAIN_PHOTOS`` (:func:`pristine_dir`, and the
pseudo-MOS calibration pool of the demo sets) and the photos of each labelled demo set,
``demo-a`` and ``demo-b``; so the default pretraining never sees a content the default eval tests
on.  The demo sets are built by the bundled ``datasets`` plugin (``biqabench_plugins.datasets.demo``);
core code reaches them by name only (``load_dataset("demo-a")``; ``EMBEDDED_TRAIN`` /
``EMBEDDED_TEST`` are the names a run uses when it names no dataset).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from biqabench.base.errors import BiqaError
from biqabench.base.paths import cache_root

#: Bump when the photos, or the demo sets' crops, distortions or labels, change: a new version
#: builds a new folder.
VERSION = "3"
SHORT_SIDE = 256    # every photo is first scaled so its short side is this (a crop holds a real scene part)

#: Natural photographs bundled in the scikit-image wheel (file name in ``skimage/data``).
#: Left out on purpose: clock_motion (already motion-blurred), page/text (documents),
#: chessboards/logo/phantom/horse/color (synthetic), microaneurysms (102 px).
PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "camera": "camera.png",
    "brick": "brick.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "immunohistochemistry": "ihc.png",
    "gravel": "gravel.png",
    "moon": "moon.png",
    "retina": "retina.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "cell": "cell.png",
}

#: Photographs bundled with matplotlib (``matplotlib.cbook.get_sample_data``; matplotlib is a
#: dependency): one more natural scene for the labelled sets.
MPL_PHOTOS: dict[str, str] = {"grace_hopper": "grace_hopper.jpg"}

#: The pretraining photos: QPT's default unlabelled data (:func:`pristine_dir`) and the pseudo-MOS
#: calibration pool.  No labelled set uses them.  They include the photos on which graded
#: distortions are not equally visible (flat sky, moon and retina hide blur; grass and gravel
#: hide noise), which an unlabelled pretraining set can use and a labelled one cannot.
PRETRAIN_PHOTOS = ("motorcycle_left", "motorcycle_right", "grass", "gravel", "moon", "retina", "cell", "rocket")

#: The sets a run trains and tests on when it names none (``biqabench eval`` / ``probe`` out of the box).
EMBEDDED_TRAIN, EMBEDDED_TEST = "demo-a", ("demo-b",)


def _photo_path(name: str) -> Path:
    if name in MPL_PHOTOS:
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / MPL_PHOTOS[name]
    import skimage.data  # a dependency: its sample photos ship with the wheel

    return Path(skimage.data.__file__).parent / PHOTOS[name]


def load_photo(name: str, short_side: int | None = SHORT_SIDE) -> Image.Image:
    """One bundled photo as an RGB PIL image (read from the installed packages' files: nothing
    downloads), scaled (Lanczos) so its short side is ``short_side`` (None: as stored)."""
    path = _photo_path(name)
    if not path.is_file():
        package = "matplotlib" if name in MPL_PHOTOS else "scikit-image"
        raise BiqaError(f"sample photo {path.name} is missing from {path.parent}; reinstall {package} from its "
                        f"wheel (pip install --force-reinstall {package})")
    with Image.open(path) as im:
        im = im.convert("RGB")
    if short_side:
        scale = short_side / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    return im


def embedded_root() -> Path:
    """The cache folder of this embedded version (pristine photos and demo sets side by side)."""
    return cache_root() / "embedded" / VERSION


def publish(build, final: Path) -> Path:
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
    """A folder of the pretraining photos (``PRETRAIN_PHOTOS``, as stored) as PNG: the default
    unlabelled data for QPT pretraining.  No demo set uses these photos, so the default
    pretraining never sees a content the default eval tests on.

    Built on first call (well under a second), then reused.
    """
    def build(tmp: Path) -> None:
        for name in PRETRAIN_PHOTOS:
            load_photo(name, short_side=None).save(tmp / f"{name}.png", compress_level=1)

    return publish(build, embedded_root() / "pristine")
