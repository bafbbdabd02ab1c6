"""Train/val/test splits that are the same on every machine and Python version.

The order of images (or of contents, for synthetic sets) is decided by sorting them on
``sha256(f"{seed}:{unit}")``: a hash we control, independent of numpy's generator streams,
Python's ``hash()`` salt and even the row order of the label file.  Synthetic datasets are
split by reference content, so no scene appears on both sides (the usual protocol: otherwise a
model can recognise the content instead of judging its quality).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biqabench.data.table import SPLIT_PARTS, IQATable
from biqabench.base.errors import BiqaError

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Row indices of one split of a table (sorted, disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int

    def part(self, name: str) -> np.ndarray:
        if name not in SPLIT_PARTS:
            raise BiqaError(f"unknown split part {name!r} (one of {', '.join(SPLIT_PARTS)})")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {p: int(len(self.part(p))) for p in SPLIT_PARTS}


def _order(units: list[str], seed: int) -> list[str]:
    return sorted(units, key=lambda u: (hashlib.sha256(f"{seed}:{u}".encode("utf-8")).hexdigest(), u))


def _arr(idx) -> np.ndarray:
    return np.sort(np.asarray(list(idx), dtype=np.int64))


def random_split(table: IQATable, seed: int, test_frac: float = 0.2, val_frac: float = 0.0) -> Split:
    """One seeded split; by content when the table has content ids, else by image.

    ``test_frac`` of the units (contents, or images) form the test part; the validation part
    (model selection) is ``val_frac`` of the *remaining training* units, as in the papers' 80/20
    protocol: with the defaults 0.2 / 0.1 an image is tested with probability 20%, validates with
    8% and trains with 72%.  The test part does not depend on ``val_frac`` (units are taken in one
    seeded order: the test part first, then the validation part), so runs with and without a
    validation part are tested on the same images.
    """
    if not 0.0 <= test_frac < 1.0 or not 0.0 <= val_frac < 1.0:
        raise BiqaError(f"split fractions must satisfy 0 <= test_frac < 1 and 0 <= val_frac < 1 "
                        f"(got test_frac={test_frac}, val_frac={val_frac}; val_frac is a share of the "
                        "training part)")
    if table.content is not None:
        units_of = [str(c) for c in table.content]
    else:
        units_of = list(table.names)
    units = sorted(set(units_of))
    n = len(units)
    if n < 2:
        raise BiqaError(f"dataset {table.name!r} has {n} "
                        f"{'content' if table.content is not None else 'image'}(s): too few to split")
    n_test = int(round(test_frac * n))
    if test_frac > 0:
        n_test = max(1, n_test)
    n_val = int(round(val_frac * (n - n_test)))
    if val_frac > 0:
        n_val = max(1, n_val)
    if n_test + n_val >= n:
        raise BiqaError(f"dataset {table.name!r}: {n} units cannot give {n_test} test and {n_val} val "
                        "units and still leave training data; lower test_frac/val_frac")
    ordered = _order(units, seed)
    part_of = {u: "test" for u in ordered[:n_test]}
    part_of.update({u: "val" for u in ordered[n_test:n_test + n_val]})
    parts: dict[str, list[int]] = {p: [] for p in SPLIT_PARTS}
    for i, u in enumerate(units_of):
        parts[part_of.get(u, "train")].append(i)
    return Split(_arr(parts["train"]), _arr(parts["val"]), _arr(parts["test"]), seed)


def official_split(table: IQATable, seed: int = 0) -> Split:
    if table.official_split is None:
        raise BiqaError(f"dataset {table.name!r} has no official split; use seeded random splits "
                        "(official=False) or load a split file")
    labels = table.official_split
    unknown = sorted({str(x) for x in labels} - set(SPLIT_PARTS))
    if unknown:
        raise BiqaError(f"dataset {table.name!r}: official split labels {unknown} are not train/val/test")
    parts = {p: np.flatnonzero(labels == p) for p in SPLIT_PARTS}
    if not len(parts["train"]) or (not len(parts["test"]) and not len(parts["val"])):
        raise BiqaError(f"dataset {table.name!r}: its official split has an empty train or test part")
    return Split(parts["train"].astype(np.int64), parts["val"].astype(np.int64),
                 parts["test"].astype(np.int64), seed)


def make_splits(table: IQATable, n: int = 10, seed: int = 0, test_frac: float = 0.2,
                val_frac: float = 0.0, official: bool = False) -> list[Split]:
    """``n`` seeded splits (seeds ``seed, seed+1, ...``), or the official one when ``official``.

    ``val_frac`` is the share of each split's *training* part held out for model selection.

    The official split is a single split whatever ``n`` is (repeating it would only repeat
    the same numbers).  Where an official split has no validation part and ``val_frac`` > 0,
    a validation part is carved out of its training part (by content where known).
    """
    if official:
        split = official_split(table, seed)
        if val_frac > 0 and not len(split.val):
            sub = table.subset(split.train)
            inner = random_split(sub, seed, test_frac=val_frac, val_frac=0.0)  # val inside train
            split = Split(_arr(split.train[inner.train]), _arr(split.train[inner.test]), split.test, seed)
        return [split]
    if n < 1:
        raise BiqaError(f"number of splits must be at least 1, got {n}")
    return [random_split(table, seed + k, test_frac, val_frac) for k in range(n)]


def save_split(split: Split, table: IQATable, path: str | Path) -> Path:
    """Write the split as JSON of image names per part (readable, diffable, row-order proof)."""
    doc = {
        "dataset": table.name,
        "fingerprint": table.fingerprint(),
        "seed": int(split.seed),
        **{p: [table.names[i] for i in split.part(p)] for p in SPLIT_PARTS},
    }
    from biqabench.base.io import write_json  # atomic; imported here to keep this module free of torch

    return write_json(path, doc)


def load_split(path: str | Path, table: IQATable) -> Split:
    """Read a split file and map its names back to rows of ``table``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise BiqaError(f"split file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise BiqaError(f"split file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not any(p in doc for p in SPLIT_PARTS):
        raise BiqaError(f"split file {path} must be a JSON object with lists 'train', 'val', 'test' of image names")
    if doc.get("dataset") not in (None, table.name):
        log.warning("split file %s was made for dataset %r, applying it to %r", path, doc.get("dataset"), table.name)
    row_of = {name: i for i, name in enumerate(table.names)}
    parts: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for p in SPLIT_PARTS:
        names = doc.get(p) or []
        if not isinstance(names, list):
            raise BiqaError(f"split file {path}: '{p}' must be a list of image names")
        idx = []
        for name in names:
            if name in row_of:
                idx.append(row_of[name])
            else:
                missing.append(str(name))
        parts[p] = _arr(idx)
    if missing:
        raise BiqaError(f"split file {path}: {len(missing)} image name(s) are not in dataset {table.name!r} "
                        f"(first: {', '.join(missing[:5])}); was it made for another dataset or version?")
    seen: set[int] = set()
    for p in SPLIT_PARTS:
        overlap = seen & set(parts[p].tolist())
        if overlap:
            first = [table.names[i] for i in sorted(overlap)[:5]]
            raise BiqaError(f"split file {path}: {len(overlap)} image(s) appear in two parts (first: {', '.join(first)})")
        seen |= set(parts[p].tolist())
    seed = doc.get("seed", 0)
    return Split(parts["train"], parts["val"], parts["test"], int(seed) if isinstance(seed, (int, float)) else 0)


def content_overlap(table: IQATable, split: Split) -> set[str]:
    """Contents present in both train and test (empty for a proper content-aware split)."""
    if table.content is None:
        return set()
    train = {str(c) for c in table.content[split.train]}
    test = {str(c) for c in table.content[np.concatenate([split.test, split.val])]}
    return train & test


__all__ = ["Split", "make_splits", "random_split", "official_split", "save_split", "load_split",
           "content_overlap"]
