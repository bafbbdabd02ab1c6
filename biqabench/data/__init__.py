"""Labelled IQA datasets: the table protocol, official-layout readers, splits, decoding and patches.

Typical use::

    from biqabench.data import load_dataset, make_splits, PatchDataset, ImageCache

    table = load_dataset("clive", "/data/ChallengeDB_release")     # validated, native MOS scale
    for split in make_splits(table, n=10, seed=0):                   # content-aware for synthetic sets
        train = PatchDataset(table, split.train, 224, 25, train=True, cache=ImageCache())
"""

from __future__ import annotations

import importlib
from typing import Any

# Names -> defining module.  Imported on first use, so ``import biqabench.data.splits`` (or
# reading a table) does not pay for torch; ``from biqabench.data import X`` works as usual.
_EXPORTS = {
    "DatasetSpec": "table", "IQATable": "table", "Issue": "table", "build_table": "table",
    "load_dataset": "loading", "read_raw": "loading", "inspect_dataset": "loading", "get_spec": "loading",
    "resolve_root": "loading", "ENV_DATA": "loading",
    "validate_table": "validate",
    "Split": "splits", "make_splits": "splits", "save_split": "splits", "load_split": "splits",
    "content_overlap": "splits",
    "ImageCache": "cache", "default_cache_folder": "cache",
    "PatchDataset": "patches", "image_patches": "patches", "crop_boxes": "patches", "grid_boxes": "patches",
    "normalise": "patches", "normalise_batch": "patches",
    "read_image": "images", "decode_array": "images", "check_image": "images",
    "IMAGENET_MEAN": "images", "IMAGENET_STD": "images",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'biqabench.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"biqabench.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
