"""Readers for synthetically distorted datasets: KADID-10k, TID2013, LIVE (release 2), CSIQ.

Each distorted image carries the id of its pristine reference as ``content``, so that splits keep
all versions of one scene on the same side.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from biqabench.plugin_api import (
    BiqaError, IQATable, build_table, cell, column, find_dir, find_file, need_root, no_unknown_options, parse_bool,
    read_csv, read_whitespace_table,
)
from biqabench_plugins.datasets.authentic import _loadmat, _mat_strings


def load_kadid(root: Path | None, **options) -> IQATable:
    """KADID-10k: ``dmos.csv`` (``dist_img, ref_img, dmos, var``; despite its name the score is a
    MOS on 1..5, higher is better) and ``images/``."""
    no_unknown_options(options, "kadid10k", ())
    root = need_root(root, "kadid10k")
    label = find_file(root, ["dmos.csv"], "kadid10k")
    header, rows = read_csv(label, "kadid10k")
    expected = "dist_img, ref_img, dmos"
    i_dist = column(header, ["dist_img"], label, "kadid10k", expected=expected)
    i_ref = column(header, ["ref_img"], label, "kadid10k", expected=expected)
    i_mos = column(header, ["dmos", "mos"], label, "kadid10k", expected=expected)
    folder = find_dir(label.parent, ["images"]) or label.parent
    return build_table("kadid10k", root, folder, [cell(r, i_dist) for r in rows], [cell(r, i_mos) for r in rows],
                       scale=(1.0, 5.0), higher_better=True,
                       content=[Path(cell(r, i_ref)).stem.upper() for r in rows], source=str(label))


def load_tid2013(root: Path | None, **options) -> IQATable:
    """TID2013: ``mos_with_names.txt`` (lines ``MOS name``), ``distorted_images/``; MOS on 0..9.

    The reference is named by the first three characters (``i01_08_3.bmp`` -> ``I01``).
    """
    no_unknown_options(options, "tid2013", ())
    root = need_root(root, "tid2013")
    label = find_file(root, ["mos_with_names.txt"], "tid2013")
    rows = read_whitespace_table(label, "tid2013")
    bad = [k for k, r in enumerate(rows) if len(r) < 2]
    if bad:
        raise BiqaError(f"dataset 'tid2013': {label.name} line {bad[0] + 1} is not 'MOS name' "
                        f"({len(bad)} such lines)")
    names = [r[1] for r in rows]
    folder = find_dir(label.parent, ["distorted_images"]) or label.parent
    return build_table("tid2013", root, folder, names, [r[0] for r in rows], scale=(0.0, 9.0),
                       higher_better=True, content=[n[:3].upper() for n in names], source=str(label))


#: LIVE release 2 orders its 982 scores by distortion folder, images numbered from 1 in each.
LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def load_live(root: Path | None, *, realigned: bool | str = True, **options) -> IQATable:
    """LIVE IQA release 2: ``dmos_realigned.mat`` (``dmos_new``, ``orgs``), ``refnames_all.mat`` and
    the five distortion folders.  The 203 entries flagged as originals are left out (779 remain).
    DMOS: lower is better, nominally 0..100.  The realigned DMOS (one scale across the five
    distortion sessions) is what both HyperIQA's and TReS's loaders read; ``realigned=false``
    reads the original per-session ``dmos.mat``.
    """
    no_unknown_options(options, "live", ())
    root = need_root(root, "live")
    realigned = parse_bool(realigned, "live option realigned")
    mat = find_file(root, ["dmos_realigned.mat" if realigned else "dmos.mat"], "live")
    dmos = np.asarray(_loadmat(mat, "dmos_new" if realigned else "dmos", "live"), dtype=np.float64).ravel()
    orgs = np.asarray(_loadmat(mat, "orgs", "live")).ravel().astype(bool)
    refs_mat = find_file(mat.parent, ["refnames_all.mat"], "live", depth=0)
    refs = _mat_strings(_loadmat(refs_mat, "refnames_all", "live"))
    total = sum(n for _, n in LIVE_FOLDERS)
    if not len(dmos) == len(orgs) == len(refs) == total:
        raise BiqaError(f"dataset 'live': expected {total} entries in {mat.name} and {refs_mat.name}, "
                        f"found {len(dmos)} scores, {len(orgs)} flags and {len(refs)} reference names")
    names = [f"{folder}/img{k}.bmp" for folder, n in LIVE_FOLDERS for k in range(1, n + 1)]
    keep = np.flatnonzero(~orgs)
    return build_table("live", root, mat.parent, [names[i] for i in keep], dmos[keep], scale=(0.0, 100.0),
                       higher_better=False, content=[Path(refs[i]).stem for i in keep],
                       options={"realigned": realigned}, source=str(mat))


CSIQ_LABELS = ("csiq_label.txt", "csiq_label_hyperiqa.txt", "csiq.txt")


def load_csiq(root: Path | None, **options) -> IQATable:
    """CSIQ: a label list of ``name DMOS`` lines (``csiq_label.txt``, as used by HyperIQA and pyiqa;
    DMOS on 0..1, lower is better) and the distorted images, found by name anywhere under the
    root (the release keeps them in ``dst_imgs/<distortion>/``, many copies flatten them)."""
    no_unknown_options(options, "csiq", ())
    root = need_root(root, "csiq")
    label = find_file(root, CSIQ_LABELS, "csiq")
    rows = read_whitespace_table(label, "csiq")
    if rows and len(rows[0]) >= 2 and not _number(rows[0][-1]):
        rows = rows[1:]  # a header line
    bad = [k for k, r in enumerate(rows) if len(r) < 2]
    if bad:
        raise BiqaError(f"dataset 'csiq': {label.name} line {bad[0] + 1} is not 'name DMOS' ({len(bad)} such lines)")
    names = [r[0] for r in rows]
    index = _name_index(root, skip=("src_imgs",))
    rel = [index.get(n.lower(), n) for n in names]
    return build_table("csiq", root, root, names, [r[1] for r in rows], scale=(0.0, 1.0), higher_better=False,
                       content=[n.split(".")[0] for n in names], source=str(label), relpaths=rel)


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _name_index(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """lower-case file name -> path relative to root, for every image under root."""
    index: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d.lower() not in skip and not d.startswith("."))
        for f in sorted(filenames):
            index.setdefault(f.lower(), os.path.relpath(os.path.join(dirpath, f), root))
    return index
