"""``biqabench score`` (and ``predict``): image files in, one CSV row per file out.

Inputs are files, folders (searched recursively for images) and glob patterns (``'shots/**/*.jpg'``,
expanded here when the shell did not).  Every input file gets a row: its score on the model's
native scale, or, with ``skip_bad``, an empty score and the one-line reason it was unreadable,
so one bad file never costs the others' scores.  :func:`report` says what happened in one
paragraph: how many were scored, skipped, upscaled, and how many scores fall outside the
model's scale (a model trained on 0..100 MOS can predict 103; that is reported, not clipped).
"""

from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import pandas as pd

from biqabench.base.errors import BiqaError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
_MAGIC = set("*?[")


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images, globs expanded; stable order."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        elif _MAGIC & set(str(item)):
            found = sorted(Path(f) for f in glob.glob(str(item), recursive=True))
            files = [f for f in found if f.is_file()]
            if not files:
                raise BiqaError(f"pattern {item} matches no files")
            out += files
        else:
            raise BiqaError(f"{p} is neither an image file, a folder nor a glob pattern")
    if not out:
        raise BiqaError(f"no images found in {', '.join(map(str, inputs))} (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return list(dict.fromkeys(out))


def score_paths(model, inputs: list[str | Path], *, skip_bad: bool = False, progress: bool = True) -> pd.DataFrame:
    """One row per input file: image, pred (native scale), pred_norm (0..1, higher better),
    scale, note (upscaled...), error (why there is no score); ``df.attrs`` holds the
    :func:`report` text and the ``outside_scale`` count."""
    files = collect_images(inputs)
    scored = model.score_files(files, skip_bad=skip_bad, progress=progress, desc="score")
    pred = np.asarray([s.pred for s in scored], dtype=np.float64)
    df = pd.DataFrame({
        "image": [s.image for s in scored], "pred": pred, "pred_norm": model.info.to_norm(pred),
        "scale": model.info.scale_text(), "note": [s.note for s in scored], "error": [s.error for s in scored],
    })
    df.attrs["report"] = report(df, model)  # the summary `score` prints (skipped, upscaled, outside the scale)
    df.attrs["outside_scale"] = outside_scale(pred, model.info.scale)
    return df


def outside_scale(pred: np.ndarray, scale: tuple[float, float]) -> int:
    """How many finite predictions fall outside [lo, hi] (an unknown bound checks nothing)."""
    pred = np.asarray(pred, dtype=np.float64)
    pred = pred[np.isfinite(pred)]
    lo, hi = scale
    n = 0
    if math.isfinite(lo):
        n += int((pred < lo).sum())
    if math.isfinite(hi):
        n += int((pred > hi).sum())
    return n


def report(df: pd.DataFrame, model) -> str:
    """The paragraph ``score`` prints on stderr after the table."""
    n = len(df)
    ok = int(df["pred"].notna().sum())
    info = model.info
    what = info.head + (f" ({info.backbone})" if info.backbone else "") + (", pyiqa" if info.weights == "pyiqa" else "")
    trained = f", trained on {info.train_set}" if info.train_set else ""
    parts = [f"scored {ok} of {n} image{'s' if n != 1 else ''} with {what}{trained}; scale {info.scale_text()}"]
    bad = df[df["error"].astype(bool)]
    if len(bad):
        shown = "; ".join(bad["error"].head(3))
        parts.append(f"{len(bad)} skipped as unreadable: {shown}" + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""))
    up = int(df["note"].astype(str).str.startswith("upscaled").sum())
    if up:
        parts.append(f"{up} smaller than the {info.patch_size} px test crop, upscaled before cropping (see the note column)")
    out = outside_scale(df["pred"].to_numpy(), info.scale)
    if out:
        approx = " approximate" if info.extra.get("approximate_scale") else ""
        parts.append(f"{out} of {ok} predictions fall outside the{approx} scale {info.scale_text()} "
                     "(reported as predicted, not clipped)")
    return "; ".join(parts)
