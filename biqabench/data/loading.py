"""The front door: find a dataset's folder, read it with its registered reader, validate it.

Where the data is, in order: the ``root`` argument (``--data-root``, or a recipe's config); else
``$BIQABENCH_DATA/<one of the spec's usual folder names>``; else ``$BIQABENCH_DATA`` itself if
it has the dataset's layout.  A root that holds the dataset one level down (the parent of
``ChallengeDB_release``) works too.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from biqabench.data.table import DatasetSpec, IQATable
from biqabench.data.validate import file_issues, summarise, validate_table
from biqabench.base.errors import BiqaError
from biqabench.components.plugins import registry

ENV_DATA = "BIQABENCH_DATA"


def get_spec(name: str) -> DatasetSpec:
    """The registered :class:`DatasetSpec` called ``name`` (unknown names list the close ones)."""
    return registry("datasets").get(name)


def resolve_root(spec: DatasetSpec, root: str | os.PathLike | None = None) -> Path | None:
    if not spec.needs_root:
        return Path(root).expanduser() if root else None
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise BiqaError(f"data root {path} for dataset {spec.name!r} is not a folder")
        if spec.detect is not None and not spec.detect(path):
            for folder in spec.folders:
                sub = path / folder
                if sub.is_dir() and spec.detect(sub):
                    return sub
        return path
    env = os.environ.get(ENV_DATA)
    usual = ", ".join(f"{f}/" for f in spec.folders[:3]) or "its folder"
    if env:
        base = Path(env).expanduser()
        for folder in spec.folders:
            sub = base / folder
            if sub.is_dir() and (spec.detect is None or spec.detect(sub)):
                return sub
        if spec.detect is not None and spec.detect(base):
            return base
        raise BiqaError(f"dataset {spec.name!r} not found under {ENV_DATA}={base} (looked for {usual}); "
                        "put it there or pass --data-root DIR")
    raise BiqaError(f"dataset {spec.name!r} needs its data folder: pass --data-root DIR (Python: root=...) "
                    f"or set {ENV_DATA} to a folder containing {usual}")


def read_raw(name: str, root: str | os.PathLike | None = None, **options: Any) -> IQATable:
    """Read the label files only: no file checks, row problems left in ``table.issues``."""
    spec = get_spec(name)
    table = spec.load(resolve_root(spec, root), **options)
    if not isinstance(table, IQATable):
        raise BiqaError(f"dataset {name!r}: its reader returned {type(table).__name__}, not an IQATable "
                        "(a bug in the plugin that registered it)")
    return table


def load_dataset(name: str, root: str | os.PathLike | None = None, *, skip_bad: bool = False,
                 resize: int | str | None = None, check: str = "header", progress: bool = True,
                 **options: Any) -> IQATable:
    """Read, validate and return a dataset, ready for :func:`make_splits` and :class:`PatchDataset`.

    ``resize``: short side images are scaled to when decoded (None: the dataset's customary
    value, e.g. 512 for SPAQ; 0: original size); recorded in ``table.options`` for manifests.
    ``check``: none | exists | header | decode (see :mod:`biqabench.data.validate`).
    ``skip_bad``: drop bad entries (logged) instead of failing.  Other options go to the reader.
    """
    spec = get_spec(name)
    table = read_raw(name, root, **options)
    table = validate_table(table, check=check, skip_bad=skip_bad, progress=progress)
    from biqabench.data.images import parse_resize

    size = spec.default_resize if resize is None else resize
    parsed = parse_resize(size)  # N (short side), or "WxH" for an exact size as reference loaders use
    table.options["resize"] = parsed if isinstance(parsed, int) else f"{parsed[0]}x{parsed[1]}"
    for key, value in options.items():
        table.options.setdefault(key, value)
    return table


def inspect_dataset(name: str, root: str | os.PathLike | None = None, *, check: str = "header",
                    **options: Any) -> dict[str, Any]:
    """What ``biqabench datasets check`` prints: counts, MOS range, every kind of bad entry."""
    spec = get_spec(name)
    table = read_raw(name, root, **options)
    issues = list(table.issues) + file_issues(table, check)
    bad_rows = {i.row for i in issues}
    good = np.setdiff1d(np.arange(len(table)), np.asarray(sorted(bad_rows), dtype=np.int64))
    mos = table.mos[good]
    mos = mos[np.isfinite(mos)]
    kinds = Counter(i.kind for i in issues)
    report: dict[str, Any] = {
        "dataset": name,
        "root": str(table.root) if table.root else "-",
        "labels": table.source or "-",
        "entries": len(table),
        "usable": int(len(good)),
        "missing": kinds.get("missing", 0),
        "unreadable": kinds.get("unreadable", 0),
        "bad_mos": kinds.get("mos", 0),
        "duplicates": kinds.get("duplicate", 0),
        "bad_paths": kinds.get("path", 0),
        "mos_min": float(mos.min()) if len(mos) else None,
        "mos_max": float(mos.max()) if len(mos) else None,
        "scale": f"{table.scale[0]:g}..{table.scale[1]:g} ({'higher' if table.higher_better else 'lower'} is better)",
        "resize": spec.default_resize,
    }
    if table.content is not None:
        report["contents"] = len(set(table.content[good].tolist()))
    if table.official_split is not None:
        parts = Counter(str(s) for s in table.official_split[good])
        report["official_split"] = ", ".join(f"{p} {parts.get(p, 0)}" for p in ("train", "val", "test"))
    if issues:
        report["problems"] = summarise(issues, first=5)
    elif not len(table):
        report["problems"] = "no entries: is it the right label file?"
    return report
