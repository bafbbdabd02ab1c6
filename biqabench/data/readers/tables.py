"""Table-driven readers: pyiqa meta-info CSVs and a generic CSV for custom data.

pyiqa (IQA-PyTorch) describes each dataset by a ``meta_info_<Name>Dataset.csv``: either
``img_name, mos[, std][, split]`` (no-reference layout) or ``ref_name, dist_name, mos|dmos[, std]``
(full-reference layout, whose reference names give us content ids).  Any dataset already
prepared for pyiqa can be read this way; scale and direction come from pyiqa's own dataset
options for the datasets it knows, and must be given otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from biqabench.data.readers.common import (
    cell, column, find_file, need_root, no_unknown_options, parse_bool, parse_scale, read_csv, split_label,
)
from biqabench.data.table import IQATable, build_table
from biqabench.base.errors import BiqaError

#: pyiqa dataset name (from the meta file name) -> (scale, higher_better).  LIVE and CSIQ store
#: DMOS; the rest MOS.  KonIQ's meta file carries the 0..100 MOS of the official CSV.
PYIQA_KNOWN: dict[str, tuple[tuple[float, float], bool]] = {
    "csiq": ((0.0, 1.0), False),
    "kadid10k": ((1.0, 5.0), True),
    "koniq10k": ((0.0, 100.0), True),
    "livechallenge": ((0.0, 100.0), True),
    "liveiqa": ((0.0, 100.0), False),
    "livemd": ((0.0, 100.0), False),
    "tid2008": ((0.0, 9.0), True),
    "tid2013": ((0.0, 9.0), True),
    "spaq": ((0.0, 100.0), True),
    "flive": ((0.0, 100.0), True),
}
_TRAINING = re.compile(r"^t\d+\.bmp$", re.IGNORECASE)


def pyiqa_name(meta: Path) -> str:
    m = re.match(r"meta_info_(.+?)(Dataset)?\.csv$", meta.name, re.IGNORECASE)
    return (m.group(1) if m else meta.stem).lower().replace("-", "").replace("_", "")


def load_pyiqa(root: Path | None, *, meta: str | None = None, scale: Any = None, higher_better: Any = None,
               name: str | None = None, drop_training: Any = None, **options) -> IQATable:
    """A pyiqa meta-info CSV (``meta=FILE``) with images under ``root``.

    For LIVE Challenge the 7 training images are dropped, as pyiqa's own loader does
    (``drop_training=False`` keeps them).
    """
    no_unknown_options(options, "pyiqa", ())
    if meta is None:
        raise BiqaError("dataset 'pyiqa' needs meta=PATH, the pyiqa meta_info_*.csv to read "
                        "(CLI: -o meta=PATH)")
    meta_path = Path(meta).expanduser()
    if root is not None and not meta_path.is_absolute() and not meta_path.exists():
        meta_path = Path(root) / meta_path
    if not meta_path.is_file():
        raise BiqaError(f"dataset 'pyiqa': meta-info file {meta_path} does not exist")
    key = pyiqa_name(meta_path)
    known = PYIQA_KNOWN.get(key)
    if scale is None and known is None:
        raise BiqaError(f"dataset 'pyiqa': {meta_path.name} is not a dataset biqabench knows the score scale of; "
                        "give scale=LO,HI and higher_better=true|false")
    lo_hi = parse_scale(scale, "pyiqa option scale") if scale is not None else known[0]
    better = parse_bool(higher_better, "pyiqa option higher_better") if higher_better is not None else (
        known[1] if known else True)
    root = need_root(root, "pyiqa") if root is not None else meta_path.parent
    header, rows = read_csv(meta_path, "pyiqa")
    low = [h.lower() for h in header]
    content = None
    expected = "img_name, mos[, std][, split]  or  ref_name, dist_name, mos|dmos[, std]"
    if "dist_name" in low:
        i_img = column(header, ["dist_name"], meta_path, "pyiqa", expected=expected)
        i_ref = column(header, ["ref_name"], meta_path, "pyiqa", expected=expected)
        content = [Path(cell(r, i_ref)).stem.upper() for r in rows]
    else:
        i_img = column(header, ["img_name", "img_name/patch_name", "image_name", "name"], meta_path, "pyiqa",
                       expected=expected)
    i_mos = column(header, ["mos", "dmos", "mos_zscore", "score"], meta_path, "pyiqa", expected=expected)
    i_split = column(header, ["split", "official_split"], meta_path, "pyiqa", required=False)
    drop = (key == "livechallenge") if drop_training is None else parse_bool(drop_training, "pyiqa option drop_training")
    keep = [k for k, r in enumerate(rows) if not (drop and _TRAINING.match(Path(cell(r, i_img)).name))]
    rows = [rows[k] for k in keep]
    if content is not None:
        content = [content[k] for k in keep]
    split = None
    if i_split is not None:
        split = [split_label(cell(r, i_split)) or cell(r, i_split) for r in rows]
    return build_table(name or f"pyiqa-{key}", root, root, [cell(r, i_img) for r in rows],
                       [cell(r, i_mos) for r in rows], scale=lo_hi, higher_better=better, content=content,
                       official_split=split, source=str(meta_path),
                       options={"meta": str(meta_path), "drop_training": drop})


# -- generic CSV -----------------------------------------------------------------------------
IMAGE_COLUMNS = ("image", "img_name", "image_name", "name", "file", "filename", "path")
MOS_COLUMNS = ("mos", "score", "dmos", "quality")
REF_COLUMNS = ("ref", "content", "reference", "ref_name", "ref_img")
SPLIT_COLUMNS = ("split", "set", "part")


def read_generic_csv(root: Path, csv: str | Path, *, scale: Any, higher_better: Any = True,
                     name: str = "csv", image_dir: str | Path | None = None) -> IQATable:
    """Read ``image,mos[,ref][,split]`` (extra columns ignored) with an explicit scale."""
    root = Path(root)
    path = Path(csv).expanduser()
    if not path.is_absolute() and not path.exists():
        path = root / path
    lo_hi = parse_scale(scale, f"dataset {name!r} option scale")
    better = parse_bool(higher_better, f"dataset {name!r} option higher_better")
    header, rows = read_csv(path, name)
    expected = "image,mos[,ref][,split]"
    i_img = column(header, IMAGE_COLUMNS, path, name, expected=expected)
    i_mos = column(header, MOS_COLUMNS, path, name, expected=expected)
    i_ref = column(header, REF_COLUMNS, path, name, required=False)
    i_split = column(header, SPLIT_COLUMNS, path, name, required=False)
    split = None
    if i_split is not None:
        split = [split_label(cell(r, i_split)) or cell(r, i_split) for r in rows]
    folder = root if image_dir is None else (Path(image_dir) if Path(image_dir).is_absolute() else root / image_dir)
    return build_table(name, root, folder, [cell(r, i_img) for r in rows], [cell(r, i_mos) for r in rows],
                       scale=lo_hi, higher_better=better,
                       content=None if i_ref is None else [cell(r, i_ref) for r in rows],
                       official_split=split, source=str(path))


def load_generic(root: Path | None, *, csv: str | None = None, scale: Any = None, higher_better: Any = True,
                 name: str | None = None, image_dir: str | None = None, **options) -> IQATable:
    """Custom data: a CSV of ``image,mos[,ref][,split]`` with image paths relative to ``root``
    (or ``image_dir``).  ``scale=LO,HI`` is required; ``higher_better=false`` for DMOS-like scores.
    Without ``csv=``, ``root/labels.csv`` (or the only CSV in root) is read."""
    no_unknown_options(options, "csv", ())
    if scale is None:
        raise BiqaError("dataset 'csv' needs scale=LO,HI (the score range, e.g. 0,100) and, for "
                        "lower-is-better scores, higher_better=false (CLI: -o scale=0,100)")
    if root is None and csv is not None:
        root = Path(csv).expanduser().resolve().parent
    root = need_root(root, "csv")
    if csv is None:
        found = find_file(root, ["labels.csv"], "csv", depth=0, required=False)
        if found is None:
            csvs = sorted(root.glob("*.csv"))
            if len(csvs) != 1:
                raise BiqaError(f"dataset 'csv': give csv=FILE (found {len(csvs)} CSV files in {root}, "
                                "and no labels.csv)")
            found = csvs[0]
        csv = str(found)
    return read_generic_csv(root, csv, scale=scale, higher_better=higher_better, name=name or "csv",
                            image_dir=image_dir)
