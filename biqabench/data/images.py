"""Reading images: every mode to RGB, EXIF orientation, size limits, cheap integrity checks.

All image decoding in biqabench goes through :func:`read_image`, so odd inputs (16-bit PNGs,
palette GIFs, CMYK JPEGs, rotated phone photos, decompression bombs) are handled in one place
and fail with a :class:`BiqaError` that names the file.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from biqabench.base.errors import BiqaError
from biqabench.base.resize import AtMost, describe_resize, parse_resize  # noqa: F401 - re-exported

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Images above this many pixels are refused (a 100-megapixel RGB image is 300 MB decoded).
#: Override with ``BIQABENCH_MAX_PIXELS``.
DEFAULT_MAX_PIXELS = 100_000_000
_TAIL = 1 << 16  # bytes read from the end of a file to look for its end marker


def max_pixels() -> int:
    env = os.environ.get("BIQABENCH_MAX_PIXELS")
    try:
        return int(env) if env else DEFAULT_MAX_PIXELS
    except ValueError:
        raise BiqaError(f"BIQABENCH_MAX_PIXELS must be an integer, got {env!r}") from None


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open lazily (header only) with the size limit enforced; the caller closes it."""
    path = Path(path)
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except FileNotFoundError:
        raise BiqaError(f"image {path} does not exist") from None
    except Image.DecompressionBombError as exc:
        raise BiqaError(f"image {path} is too large to decode safely ({exc}); "
                        "refusing it rather than exhausting memory (resize it, or raise BIQABENCH_MAX_PIXELS)") from None
    except UnidentifiedImageError:
        if _is_empty(path):
            raise BiqaError(f"image {path} is empty (0 bytes: an interrupted copy?)") from None
        raise BiqaError(f"image {path} is not a readable image (unknown or corrupt format)") from None
    except OSError as exc:
        raise BiqaError(f"image {path} cannot be opened: {exc.strerror or exc} (truncated or corrupt file?)") from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise BiqaError(f"image {path} is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,}; "
                        "refusing it rather than exhausting memory (resize it, or raise BIQABENCH_MAX_PIXELS)")
    if w == 0 or h == 0:
        im.close()
        raise BiqaError(f"image {path} has zero size ({w}x{h})")
    return im


def truncation_problem(path: str | os.PathLike, fmt: str | None) -> str | None:
    """Cheap check that a JPEG/PNG/BMP file is complete, without decoding it.

    JPEG must contain its end-of-image marker near the end, PNG its IEND chunk, and a BMP must
    be at least as long as its header says.  Full decoding would catch more, but costs ~10 ms
    per image; this costs one small read and finds the usual damage (interrupted copies).
    """
    fmt = (fmt or "").upper()
    if fmt not in ("JPEG", "MPO", "PNG", "BMP"):
        return None
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if fmt == "BMP":
                head = f.read(6)
                declared = struct.unpack("<I", head[2:6])[0] if len(head) == 6 else 0
                return (f"truncated BMP ({size} of {declared} bytes)"
                        if declared and size < declared else None)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if fmt in ("JPEG", "MPO") and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "PNG" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None


def check_image(path: str | os.PathLike, decode: bool = False) -> str | None:
    """None if the image looks usable, else a short reason (for validation reports)."""
    try:
        if decode:
            read_image(path)
            return None
        with open_image(path) as im:
            fmt = im.format
        return truncation_problem(path, fmt)
    except BiqaError as exc:
        msg = str(exc)
        prefix = f"image {Path(path)} "
        return msg[len(prefix):] if msg.startswith(prefix) else msg


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB.  High-bit-depth greys are scaled, not clipped; alpha is dropped
    (as pyiqa and torchvision do), so scores stay comparable with those tools."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            arr = arr / 257.0
        elif im.mode == "I":
            top = float(arr.max()) if arr.size else 0.0
            arr = arr / 257.0 if top > 255 else arr
        else:  # float images: 0..1 or 0..255
            top = float(np.nanmax(arr)) if arr.size else 0.0
            arr = arr * 255.0 if top <= 1.0 else arr
        grey = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _target_size(w: int, h: int, resize: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resize, tuple):
        return resize
    if isinstance(resize, AtMost) and min(w, h) <= resize:
        return w, h
    scale = resize / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def read_image(path: str | os.PathLike, resize: int | tuple[int, int] | str = 0) -> Image.Image:
    """Decode one image as 8-bit RGB with EXIF orientation applied.

    ``resize`` N > 0 scales it so its *shorter* side is N pixels (aspect kept), the way
    recipes shrink SPAQ's ~4000x3000 photos; ``(W, H)`` or ``"WxH"`` scales it to exactly that
    size.  Large JPEGs are first decoded at a reduced DCT scale (``draft``), several times faster.
    """
    path = Path(path)
    resize = parse_resize(resize)
    src = im = open_image(path)
    try:
        if resize and im.format == "JPEG":
            tw, th = _target_size(im.width, im.height, resize)
            if im.width >= 2 * tw and im.height >= 2 * th:
                im.draft("RGB", (tw, th))
        try:
            im.load()
        except OSError as exc:
            raise BiqaError(f"image {path} cannot be decoded: {exc} (truncated or corrupt file)") from None
        except Image.DecompressionBombError as exc:  # some formats only know their size after load
            raise BiqaError(f"image {path} is too large to decode safely ({exc})") from None
        return pil_to_rgb(im, resize)
    finally:
        src.close()


def pil_to_rgb(im: Image.Image, resize: int | tuple[int, int] | str = 0) -> Image.Image:
    """A loaded PIL image (any mode, any EXIF orientation) as 8-bit RGB, its shorter side scaled to
    ``resize`` when > 0 (or to exactly (W, H)): what :func:`read_image` does after decoding, for
    images given in memory."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a good image unreadable
        pass
    out = _to_rgb(im)
    resize = parse_resize(resize)
    if resize:
        size = _target_size(*out.size, resize)
        if size != out.size:
            out = out.resize(size, Image.Resampling.BICUBIC)
    return out


def decode_array(path: str | os.PathLike, resize: int | tuple[int, int] | str = 0) -> np.ndarray:
    """The image as a contiguous uint8 array of shape (3, H, W) (channels first, as torch wants)."""
    arr = np.asarray(read_image(path, resize), dtype=np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def array_to_chw(x, what: str = "image") -> np.ndarray:
    """An in-memory image as uint8 (3, H, W): numpy or torch, (H, W), (H, W, C) or (C, H, W) with C
    in 1, 3, 4 (alpha dropped, grey repeated); uint8 as is, floats read as 0..1 (pyiqa's and
    torchvision's convention) and rounded to 8 bits, as decoded files are."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[0] not in (1, 3, 4) and arr.shape[-1] in (1, 3, 4):
        arr = arr.transpose(2, 0, 1)  # channels last (PIL / numpy convention)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4) or 0 in arr.shape:
        raise BiqaError(f"{what}: expected an image of shape (H, W), (H, W, 3) or (3, H, W) "
                        f"(or a batch (N, 3, H, W)), got shape {tuple(arr.shape)}")
    arr = arr[:3] if arr.shape[0] == 4 else (np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise BiqaError(f"{what}: expected uint8 or float pixels, got dtype {arr.dtype}")
    floating = np.issubdtype(arr.dtype, np.floating)
    sixteen = arr.dtype == np.uint16
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise BiqaError(f"{what}: contains NaN or infinite pixels")
    if sixteen:
        arr = arr / 257.0  # 16-bit pixels, as 16-bit PNGs are read
    elif floating and float(arr.max()) <= 1.0 + 1e-6:
        arr = arr * 255.0  # floats in 0..1
    return np.ascontiguousarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
