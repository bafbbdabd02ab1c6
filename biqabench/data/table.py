"""The dataset protocol: one labelled IQA set as a table of image paths and MOS.

Every reader, whatever the official layout, ends in an :class:`IQATable`.  Scores keep their
*native* scale and direction (e.g. LIVE's DMOS, lower is better) so reports quote numbers the
way the dataset's paper does; training uses :attr:`IQATable.mos_norm` (0..1, higher is better)
and predictions go back through :meth:`IQATable.to_native`.

Readers never raise on a bad *row*: they record an :class:`Issue` (non-numeric MOS, duplicate
name, a path escaping the data root) so that :func:`biqabench.data.validate.validate_table` can
report all problems at once, or drop them when the user asks to skip bad entries.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

SPLIT_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Issue:
    """One bad entry: where it is (row number in the source table, image name) and what is wrong."""

    row: int        # 0-based position in the table (before dropping)
    name: str
    kind: str       # "mos" | "duplicate" | "path" | "missing" | "unreadable"
    detail: str = ""


@dataclass
class IQATable:
    """A labelled IQA dataset, ready for splitting and loading.

    ``paths`` are absolute; ``names`` are the image names exactly as the official table writes
    them (used in split files and reports).  ``content`` (reference/content id per image) lets
    splits keep every content on one side; ``official_split`` holds 'train'/'val'/'test'.
    ``options`` records how the table was read (resize, dropped images...) for run manifests.
    """

    name: str
    root: Path | None
    paths: list[Path]
    names: list[str]
    mos: np.ndarray
    scale: tuple[float, float]
    higher_better: bool = True
    content: np.ndarray | None = None
    official_split: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    source: str = ""  # the label file it was read from, for messages

    def __post_init__(self) -> None:
        self.mos = np.asarray(self.mos, dtype=np.float64)
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        if self.scale[1] <= self.scale[0]:
            raise ValueError(f"scale must be (low, high) with low < high, got {self.scale}")
        n = len(self.names)
        if len(self.paths) != n or len(self.mos) != n:
            raise ValueError("paths, names and mos must have the same length")
        if self.content is not None:
            self.content = np.asarray(self.content, dtype=object)
            if len(self.content) != n:
                raise ValueError("content must have one entry per image")
        if self.official_split is not None:
            self.official_split = np.asarray(self.official_split, dtype=object)
            if len(self.official_split) != n:
                raise ValueError("official_split must have one entry per image")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def mos_norm(self) -> np.ndarray:
        """MOS mapped to 0..1 with 1 = best quality (not clipped: some DMOS leave their nominal range)."""
        lo, hi = self.scale
        norm = (self.mos - lo) / (hi - lo)
        return norm if self.higher_better else 1.0 - norm

    def to_native(self, norm: np.ndarray) -> np.ndarray:
        """Inverse of :attr:`mos_norm`: normalised predictions back to the dataset's own scale."""
        lo, hi = self.scale
        norm = np.asarray(norm, dtype=np.float64)
        if not self.higher_better:
            norm = 1.0 - norm
        return lo + norm * (hi - lo)

    def fingerprint(self) -> str:
        """sha256 over the image names and MOS: identifies exactly which labelled images a result used."""
        h = hashlib.sha256()
        for name, m in zip(self.names, self.mos):
            h.update(f"{name}\t{float(m)!r}\n".encode("utf-8"))
        return h.hexdigest()

    def subset(self, indices: Sequence[int] | np.ndarray) -> "IQATable":
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return replace(
            self,
            paths=[self.paths[i] for i in idx],
            names=[self.names[i] for i in idx],
            mos=self.mos[idx].copy(),
            content=None if self.content is None else self.content[idx].copy(),
            official_split=None if self.official_split is None else self.official_split[idx].copy(),
            options=dict(self.options),
            issues=[],
        )

    def describe(self) -> dict[str, Any]:
        """Facts for run manifests and ``datasets check``."""
        info: dict[str, Any] = {
            "name": self.name, "root": str(self.root) if self.root else None, "images": len(self),
            "scale": list(self.scale), "higher_better": self.higher_better,
            "mos_min": float(np.min(self.mos)) if len(self) else None,
            "mos_max": float(np.max(self.mos)) if len(self) else None,
            "fingerprint": self.fingerprint(), "options": dict(self.options),
        }
        if self.content is not None:
            info["contents"] = int(len(set(self.content.tolist())))
        if self.official_split is not None:
            info["official_split"] = {p: int(np.sum(self.official_split == p)) for p in SPLIT_PARTS}
        return info


@dataclass
class DatasetSpec:
    """What a dataset plugin registers.

    ``load(root, **options) -> IQATable`` reads the official files under ``root``.  ``folders``
    are the folder names the distribution unpacks to (looked for under ``$BIQABENCH_DATA``);
    ``detect(path)`` says whether a folder has this layout.  ``needs_root=False`` for sets that
    carry their own data (the embedded demo sets).  ``default_resize`` is the short side the
    images are scaled to when the caller does not choose (``resize=None``).
    """

    name: str
    load: Callable[..., IQATable]
    description: str = ""
    layout: str = ""
    scale: tuple[float, float] = (0.0, 100.0)
    higher_better: bool = True
    synthetic: bool = False
    folders: tuple[str, ...] = ()
    detect: Callable[[Path], bool] | None = None
    needs_root: bool = True
    options_help: str = ""
    default_resize: int = 0  # short side recipes customarily resize to (SPAQ: 512); 0 = as is


# -- building tables from raw rows -------------------------------------------------------------
def parse_mos(value: Any) -> float | None:
    """A finite float, or None for anything else (text, empty cell, NaN, inf)."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def inside(root: Path, candidate: str | os.PathLike) -> bool:
    """Whether ``candidate`` (normalised, symlinks not followed) stays inside ``root``."""
    base = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.abspath(candidate))
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _entry_path(i: int, name: str, rel: str, image_dir: Path, root: Path, issues: list) -> Path:
    """Where row ``i``'s image is; a harmless placeholder (and an issue) for an empty name or one
    that would leave ``root``."""
    if not name:
        issues.append(Issue(i, name, "path", "empty image name"))
        return image_dir / f".biqabench-invalid-{i}"
    rel = rel.replace("\\", "/")
    candidate = Path(os.path.normpath(os.path.join(os.path.abspath(image_dir), rel)))
    if os.path.isabs(rel) or not inside(root, candidate):
        issues.append(Issue(i, name, "path", f"escapes the data root {root}"))
        return image_dir / f".biqabench-invalid-{i}"
    return candidate


def build_table(
    name: str,
    root: Path | None,
    image_dir: Path,
    names: Sequence[str],
    mos: Sequence[Any],
    *,
    scale: tuple[float, float],
    higher_better: bool,
    content: Sequence[Any] | None = None,
    official_split: Sequence[Any] | None = None,
    options: dict[str, Any] | None = None,
    source: str = "",
    relpaths: Sequence[str] | None = None,
) -> IQATable:
    """Turn raw rows into an :class:`IQATable`, recording (not raising) row-level problems.

    Paths are ``image_dir / name``; a name that would leave ``root`` (``../../etc/passwd``, an
    absolute path) is an issue of kind "path" and its path is replaced by a harmless placeholder.
    ``relpaths`` (default: the names) are where the files are, relative to ``image_dir``, when
    that differs from the name the label file uses (CSIQ keeps images in per-distortion folders).
    """
    # entries must stay inside the data root (or inside the image folder, where the user put
    # that elsewhere on purpose)
    root_for_check = root if root is not None and inside(root, image_dir) else image_dir
    paths: list[Path] = []
    values = np.empty(len(names), dtype=np.float64)
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    clean_names: list[str] = []
    if len(names) != len(mos):
        raise ValueError("names and mos must have the same length")
    for i, (raw_name, raw_mos) in enumerate(zip(names, mos)):
        n = str(raw_name).strip()
        rel = n if relpaths is None else str(relpaths[i]).strip()
        clean_names.append(n)
        m = parse_mos(raw_mos)
        if m is None:
            issues.append(Issue(i, n, "mos", f"MOS {raw_mos!r} is not a finite number"))
            values[i] = np.nan
        else:
            values[i] = m
        key = n.replace("\\", "/")
        if key in seen:
            issues.append(Issue(i, n, "duplicate", f"also on row {seen[key] + 1}"))
        else:
            seen[key] = i
        paths.append(_entry_path(i, n, rel, image_dir, root_for_check, issues))
    return IQATable(
        name=name, root=root, paths=paths, names=clean_names, mos=values, scale=scale,
        higher_better=higher_better,
        content=None if content is None else np.asarray([str(c) for c in content], dtype=object),
        official_split=None if official_split is None else np.asarray(list(official_split), dtype=object),
        options=dict(options or {}), issues=issues, source=source,
    )
