"""Find every bad entry of a table before training starts, and report them in one message.

Checks, in order: row problems recorded by the reader (non-numeric/NaN MOS, duplicate names,
paths escaping the data root), missing files, unreadable files.  ``check`` picks how hard files
are looked at:

* ``"none"``: not at all (tests on label files alone);
* ``"exists"``: the file is there;
* ``"header"`` (default): it opens as an image of a sane size and is not cut short (JPEG end
  marker, PNG IEND, BMP length) -- about 0.05 ms per file;
* ``"decode"``: every image is fully decoded (slow on big sets; the decoded-image cache does
  this for free before the first epoch anyway).

File names are matched case-insensitively (``1001.JPG`` vs ``1001.jpg``) and, when the label file
gives no extension, with the usual image extensions, because official tables and the files
actually shipped disagree on both.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from biqabench.data.images import check_image
from biqabench.data.table import IQATable, Issue
from biqabench.base.errors import BiqaError

log = logging.getLogger(__name__)

CHECKS = ("none", "exists", "header", "decode")
IMAGE_EXTS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".gif")
_KIND_TEXT = {
    "mos": "bad MOS values",
    "duplicate": "duplicate image names",
    "path": "paths outside the data root",
    "missing": "missing files",
    "unreadable": "unreadable images",
}


class _Listing:
    """Folder listings, read once, for case-insensitive and extension-less name matching."""

    def __init__(self) -> None:
        self._dirs: dict[str, dict[str, str]] = {}

    def find(self, path: Path) -> Path | None:
        parent = str(path.parent)
        if parent not in self._dirs:
            try:
                self._dirs[parent] = {n.lower(): n for n in os.listdir(parent)}
            except (OSError, ValueError):  # ValueError: a name with a NUL byte, which no file has
                self._dirs[parent] = {}
        names = self._dirs[parent]
        hit = names.get(path.name.lower())
        if hit is not None:
            return path.parent / hit
        if not path.suffix or path.suffix.lower() not in IMAGE_EXTS:
            for ext in IMAGE_EXTS:
                hit = names.get((path.name + ext).lower())
                if hit is not None:
                    return path.parent / hit
        return None


def resolve_files(table: IQATable) -> list[Issue]:
    """Point each path at the file that exists (fixing case/extension); return 'missing' issues."""
    listing = _Listing()
    bad_rows = {i.row for i in table.issues if i.kind == "path"}
    issues = []
    for i, p in enumerate(table.paths):
        if i in bad_rows or p.is_file():
            continue
        found = listing.find(p)
        if found is not None and found.is_file():
            table.paths[i] = found
        else:
            issues.append(Issue(i, table.names[i], "missing", str(p)))
    return issues


def file_issues(table: IQATable, check: str = "header", workers: int | None = None,
                progress: bool = True) -> list[Issue]:
    if check not in CHECKS:
        raise BiqaError(f"unknown check {check!r} (one of {', '.join(CHECKS)})")
    if check == "none":
        return []
    issues = resolve_files(table)
    if check == "exists":
        return issues
    skip = {i.row for i in issues} | {i.row for i in table.issues if i.kind == "path"}
    rows = [i for i in range(len(table)) if i not in skip]
    decode = check == "decode"

    def one(i: int) -> Issue | None:
        reason = check_image(table.paths[i], decode=decode)
        return None if reason is None else Issue(i, table.names[i], "unreadable", reason)

    bar = None
    if progress and len(rows) > 2000:
        from tqdm import tqdm
        bar = tqdm(total=len(rows), desc=f"checking {table.name}", unit="img")
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for res in pool.map(one, rows, chunksize=64):
            if res is not None:
                issues.append(res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return issues


def summarise(issues: list[Issue], first: int = 3) -> str:
    """'2 missing files (a.jpg, b.jpg); 1 bad MOS values (row 4 c.jpg: MOS 'x' is not ...)'."""
    by_kind: dict[str, list[Issue]] = defaultdict(list)
    for issue in issues:
        by_kind[issue.kind].append(issue)
    parts = []
    for kind in _KIND_TEXT:
        items = by_kind.get(kind)
        if not items:
            continue
        shown = []
        for it in items[:first]:
            label = f"row {it.row + 1} {it.name!r}" if kind in ("mos", "duplicate", "path") else repr(it.name)
            detail = f": {it.detail}" if it.detail and kind != "missing" else ""
            shown.append(label + detail)
        more = f", ... {len(items) - first} more" if len(items) > first else ""
        where = f"looked in {Path(items[0].detail).parent}: " if kind == "missing" and items[0].detail else ""
        parts.append(f"{len(items)} {_KIND_TEXT[kind]} ({where}{'; '.join(shown)}{more})")
    return "; ".join(parts)


def validate_table(table: IQATable, check: str = "header", skip_bad: bool = False,
                   progress: bool = True) -> IQATable:
    """Raise one :class:`BiqaError` listing the first offenders of each kind, or, with
    ``skip_bad``, log the full list and return the table without them."""
    if not len(table):
        where = f" ({table.source})" if table.source else ""
        raise BiqaError(f"dataset {table.name!r}{where} has no entries: is it the right label file?")
    issues = list(table.issues) + file_issues(table, check, progress=progress)
    if issues:
        where = f" (labels: {table.source})" if table.source else ""
        if not skip_bad:
            raise BiqaError(
                f"dataset {table.name!r}{where}: {len({i.row for i in issues})} bad entries: {summarise(issues)}. "
                "Fix them, or skip them with skip_bad=True (CLI: --skip-bad); skipped entries are logged.")
        bad_rows = sorted({i.row for i in issues})
        log.warning("dataset %r: skipping %d bad entries: %s", table.name, len(bad_rows), summarise(issues, first=10))
        for issue in sorted(issues, key=lambda i: i.row):
            log.info("skipped row %d %r: %s %s", issue.row + 1, issue.name, issue.kind, issue.detail)
        keep = np.setdiff1d(np.arange(len(table)), np.asarray(bad_rows, dtype=np.int64))
        options = dict(table.options)
        table = table.subset(keep)
        options["skipped_bad"] = len(bad_rows)
        table.options = options
        if not len(table):
            raise BiqaError(f"dataset {table.name!r}: every entry is bad ({summarise(issues)})")
    else:
        table.issues = []
    _warn_scale(table)
    return table


def _warn_scale(table: IQATable) -> None:
    if not len(table):
        return
    lo, hi = table.scale
    margin = 0.05 * (hi - lo)
    outside = int(np.sum((table.mos < lo - margin) | (table.mos > hi + margin)))
    if outside:
        log.warning("dataset %r: %d MOS values lie outside its scale %s (min %.4g, max %.4g); "
                    "is the scale right?", table.name, outside, table.scale, table.mos.min(), table.mos.max())
