"""Readers for authentically distorted datasets, from their official distributions.

CLIVE (LIVE In the Wild Challenge), KonIQ-10k, SPAQ, BID and FLIVE (PaQ-2-PiQ).  Each takes
the folder the download unpacks to; label files are found up to two folder levels below it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from biqabench.plugin_api import (
    BiqaError, IQATable, build_table, cell, column, find_dir, find_file, need_root, no_unknown_options, parse_bool,
    read_csv, read_xlsx, split_label,
)

_TRAINING = re.compile(r"^t\d+\.bmp$", re.IGNORECASE)


# -- LIVE In the Wild Image Quality Challenge ---------------------------------------------------
def _loadmat(path: Path, key: str, dataset: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except NotImplementedError:
        raise BiqaError(f"dataset {dataset!r}: {path} is a MATLAB v7.3 (HDF5) file; the official "
                        "release uses v5 .mat files -- re-save it with save(..., '-v7')") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for damaged files
        raise BiqaError(f"dataset {dataset!r}: cannot read {path} as a MATLAB .mat file "
                        f"({type(exc).__name__}: {exc}); is it damaged? re-download it") from None
    if key not in data:
        found = ", ".join(k for k in data if not k.startswith("__"))
        raise BiqaError(f"dataset {dataset!r}: {path.name} has no variable {key!r} (found: {found})")
    return data[key]


def _mat_strings(arr: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (any orientation) as a flat list."""
    out = []
    for item in np.asarray(arr, dtype=object).ravel():
        while isinstance(item, np.ndarray):
            item = item.ravel()[0] if item.size else ""
        out.append(str(item))
    return out


def load_clive(root: Path | None, *, drop_training: bool | str = True, **options) -> IQATable:
    """``ChallengeDB_release``: ``Data/AllImages_release.mat`` + ``AllMOS_release.mat``, ``Images/``.

    The 7 training images (``t1.bmp``..``t7.bmp``, in ``Images/trainingImages``) are dropped by
    default, as in the standard protocol (HyperIQA, pyiqa): they were shown to raters for training.
    """
    no_unknown_options(options, "clive", ())
    root = need_root(root, "clive")
    drop = parse_bool(drop_training, "clive option drop_training")
    names_mat = find_file(root, ["AllImages_release.mat"], "clive")
    mos_mat = find_file(names_mat.parent, ["AllMOS_release.mat"], "clive", depth=0)
    names = _mat_strings(_loadmat(names_mat, "AllImages_release", "clive"))
    mos = np.asarray(_loadmat(mos_mat, "AllMOS_release", "clive"), dtype=np.float64).ravel()
    if len(names) != len(mos):
        raise BiqaError(f"dataset 'clive': {names_mat.name} lists {len(names)} images but "
                        f"{mos_mat.name} has {len(mos)} MOS values")
    base = names_mat.parent.parent if names_mat.parent.name.lower() == "data" else names_mat.parent
    images = find_dir(base, ["Images"]) or base / "Images"
    keep = [i for i, n in enumerate(names) if not (drop and _TRAINING.match(n))]
    rel = [(f"trainingImages/{names[i]}" if _TRAINING.match(names[i]) and not (images / names[i]).exists()
            else names[i]) for i in keep]
    return build_table("clive", root, images, rel, mos[keep], scale=(0.0, 100.0), higher_better=True,
                       options={"drop_training": drop}, source=str(names_mat))


# -- KonIQ-10k ------------------------------------------------------------------------------
KONIQ_LABELS = ("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv")
KONIQ_FOLDERS = ("1024x768", "512x384")


def load_koniq(root: Path | None, *, images: str | None = None, csv: str | None = None, **options) -> IQATable:
    """Official KonIQ-10k: a score CSV and the ``1024x768`` (or ``512x384``) image folder.

    ``koniq10k_distributions_sets.csv`` carries MOS on 0..100 and the official
    training/validation/test sets; ``koniq10k_scores_and_distributions.csv`` has MOS on 1..5 plus
    ``MOS_zscore`` on 0..100 (used when present) and no sets.
    """
    no_unknown_options(options, "koniq10k", ())
    root = need_root(root, "koniq10k")
    label = Path(csv) if csv else find_file(root, KONIQ_LABELS, "koniq10k")
    if csv and not label.is_absolute():
        label = root / label
    header, rows = read_csv(label, "koniq10k")
    expected = "image_name, MOS (or MOS_zscore)[, set]"
    i_name = column(header, ["image_name"], label, "koniq10k", expected=expected)
    i_z = column(header, ["MOS_zscore"], label, "koniq10k", required=False)
    i_mos = i_z if i_z is not None else column(header, ["MOS"], label, "koniq10k", expected=expected)
    i_set = column(header, ["set"], label, "koniq10k", required=False)
    names = [cell(r, i_name) for r in rows]
    mos = [cell(r, i_mos) for r in rows]
    scale = (0.0, 100.0)
    if i_z is None:
        vals = [float(m) for m in mos if _is_number(m)]
        if vals and max(vals) <= 5.0:
            scale = (1.0, 5.0)
    split = None
    if i_set is not None:
        split = [split_label(cell(r, i_set)) or cell(r, i_set) for r in rows]
    if images and (Path(images).is_absolute() or "/" in images):
        folder = Path(images) if Path(images).is_absolute() else root / images
    else:
        candidates = [images] if images else list(KONIQ_FOLDERS)
        folder = None
        for base in (label.parent, root):
            folder = folder or find_dir(base, candidates)
        folder = folder or root / candidates[0]
    return build_table("koniq10k", root, folder, names, mos, scale=scale, higher_better=True,
                       official_split=split, options={"images": folder.name}, source=str(label))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# -- SPAQ ------------------------------------------------------------------------------------
SPAQ_LABELS = ("MOS and Image attribute scores.xlsx", "MOS and Image attribute scores.csv")


def _table_rows(path: Path, dataset: str) -> tuple[list[str], list[list[str]]]:
    if path.suffix.lower() == ".xlsx":
        rows = [r for r in read_xlsx(path) if any(c.strip() for c in r)]
        if not rows:
            raise BiqaError(f"dataset {dataset!r}: {path} has no rows")
        return [h.strip() for h in rows[0]], rows[1:]
    return read_csv(path, dataset)


def load_spaq(root: Path | None, **options) -> IQATable:
    """SPAQ: ``Annotations/MOS and Image attribute scores.xlsx`` (``Image name``, ``MOS``) and
    ``TestImage/`` (11,125 smartphone photos, ~4000x3000: recipes resize the short side to 512)."""
    no_unknown_options(options, "spaq", ())
    root = need_root(root, "spaq")
    label = find_file(root, SPAQ_LABELS, "spaq")
    header, rows = _table_rows(label, "spaq")
    i_name = column(header, ["Image name", "image_name", "name"], label, "spaq", expected="Image name, MOS")
    i_mos = column(header, ["MOS"], label, "spaq", expected="Image name, MOS")
    folder = find_dir(root, ["TestImage"]) or find_dir(label.parent.parent, ["TestImage"]) or root / "TestImage"
    return build_table("spaq", root, folder, [cell(r, i_name) for r in rows], [cell(r, i_mos) for r in rows],
                       scale=(0.0, 100.0), higher_better=True, source=str(label))


# -- BID -------------------------------------------------------------------------------------
def load_bid(root: Path | None, **options) -> IQATable:
    """BID (blur image database): ``DatabaseGrades.xlsx`` (``Image Number``, ``Average Subjective
    Grade``, 0..5) and images ``DatabaseImage0001.JPG``... beside it or in ``ImageDatabase/``."""
    no_unknown_options(options, "bid", ())
    root = need_root(root, "bid")
    label = find_file(root, ["DatabaseGrades.xlsx", "DatabaseGrades.csv"], "bid")
    header, rows = _table_rows(label, "bid")
    expected = "Image Number, Average Subjective Grade"
    i_num = column(header, ["Image Number"], label, "bid", expected=expected)
    i_mos = column(header, ["Average Subjective Grade", "MOS"], label, "bid", expected=expected)
    names = []
    for r in rows:
        num = cell(r, i_num)
        names.append(f"DatabaseImage{int(float(num)):04d}.JPG" if _is_number(num) else num)
    folder = label.parent
    if not any(p.name.lower().startswith("databaseimage") for p in folder.iterdir()):
        folder = find_dir(label.parent, ["ImageDatabase"]) or find_dir(root, ["ImageDatabase"]) or folder
    return build_table("bid", root, folder, names, [cell(r, i_mos) for r in rows],
                       scale=(0.0, 5.0), higher_better=True, source=str(label))


# -- FLIVE (PaQ-2-PiQ) -----------------------------------------------------------------------
FLIVE_TEST = ("labels>640.csv", "labels640.csv")
FLIVE_TRAIN = ("labels<=640_padded.csv", "labels=640_padded.csv")


def load_flive(root: Path | None, **options) -> IQATable:
    """FLIVE: ``database/labels_image.csv`` (``name``, ``mos``), images under ``database/``.

    The official split (PaQ-2-PiQ) is read when its files sit beside the labels: images in
    ``labels>640.csv`` are the test set; ``labels<=640_padded.csv`` marks validation images with
    ``is_valid``; everything else trains.
    """
    no_unknown_options(options, "flive", ())
    root = need_root(root, "flive")
    label = find_file(root, ["labels_image.csv"], "flive")
    header, rows = read_csv(label, "flive")
    i_name = column(header, ["name", "name_image"], label, "flive", expected="name, mos")
    i_mos = column(header, ["mos", "mos_image"], label, "flive", expected="name, mos")
    names = [cell(r, i_name) for r in rows]
    split = _flive_split(label.parent, names)
    return build_table("flive", root, label.parent, names, [cell(r, i_mos) for r in rows],
                       scale=(0.0, 100.0), higher_better=True, official_split=split, source=str(label))


def _flive_split(folder: Path, names: list[str]) -> list[str] | None:
    test_file = find_file(folder, FLIVE_TEST, "flive", depth=0, required=False)
    train_file = find_file(folder, FLIVE_TRAIN, "flive", depth=0, required=False)
    if test_file is None or train_file is None:
        return None

    def key(n: str) -> str:  # the split files may or may not keep the folder prefix
        return n.replace("\\", "/").split("/")[-1]

    h, rows = read_csv(test_file, "flive")
    i = column(h, ["name_image", "name"], test_file, "flive")
    test = {key(cell(r, i)) for r in rows}
    h, rows = read_csv(train_file, "flive")
    i = column(h, ["name_image", "name"], train_file, "flive")
    j = column(h, ["is_valid"], train_file, "flive")
    val = {key(cell(r, i)) for r in rows if cell(r, j).lower() in ("true", "1", "yes")}
    return ["test" if key(n) in test else "val" if key(n) in val else "train" for n in names]
