"""Split files of a run folder: ``splits/split_<k>.csv`` with one row per image (image, content, part).

Why files and not only seeds.  A seed reproduces a split only as long as the splitting code, the
fractions and the dataset's image list stay the same; a file reproduces it whatever changes.  So
every run writes the split it trained and tested on, ``--splits-from RUN`` reuses another run's
files exactly (the only fair way to compare two runs split by split), a resumed run reads its own
files back, and ``results compare`` checks two runs' files before pairing their numbers.

The format is plain CSV so a reader can check it with a spreadsheet: ``image`` (the name the
dataset's table uses), ``content`` (the reference content id for synthetic sets, else the image
name itself: the unit a content-aware split keeps on one side) and ``part`` (train, val, test).
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
from pathlib import Path

import numpy as np

from biqabench.data.splits import Split
from biqabench.data.table import SPLIT_PARTS, IQATable
from biqabench.base.errors import BiqaError

SPLITS_DIR = "splits"
COLUMNS = ("image", "content", "part")


def split_file(run_dir: str | Path, k: int) -> Path:
    return Path(run_dir) / SPLITS_DIR / f"split_{k}.csv"


def split_rows(table: IQATable, split: Split) -> list[tuple[str, str, str]]:
    """(image, content, part) for every image the split uses, in the table's row order."""
    part_of: dict[int, str] = {}
    for part in SPLIT_PARTS:
        for i in split.part(part):
            part_of[int(i)] = part
    rows = []
    for i in sorted(part_of):
        content = str(table.content[i]) if table.content is not None else table.names[i]
        rows.append((table.names[i], content, part_of[i]))
    return rows


def split_csv(table: IQATable, split: Split) -> str:
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(split_rows(table, split))
    return buf.getvalue()


def write_split_files(run_dir: str | Path, table: IQATable, splits: list[Split]) -> list[dict]:
    """Write ``splits/split_<k>.csv`` for every split; returns what the manifest records of each
    (file, seed, part sizes, sha256 of the file)."""
    from biqabench.base import io  # atomic writes; imported here to keep the data package free of torch

    records = []
    for k, split in enumerate(splits):
        text = split_csv(table, split)
        path = io.write_text(split_file(run_dir, k), text)
        records.append({"file": f"{SPLITS_DIR}/{path.name}", "seed": int(split.seed), **split.sizes(),
                        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
    return records


def read_split_table(path: Path) -> dict[str, str]:
    """``image -> part`` of one split file (a BiqaError names the file and the bad row)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BiqaError(f"split file {path} does not exist") from None
    except OSError as exc:
        raise BiqaError(f"cannot read split file {path}: {exc.strerror or exc}") from None
    reader = csv.reader(_io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != list(COLUMNS):
        raise BiqaError(f"split file {path}: the header must be {','.join(COLUMNS)} (got {header})")
    parts: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < 3 or row[2].strip() not in SPLIT_PARTS:
            raise BiqaError(f"split file {path} line {line}: expected image,content,part with part one of "
                            f"{', '.join(SPLIT_PARTS)}; got {row}")
        if row[0] in parts:
            raise BiqaError(f"split file {path} line {line}: image {row[0]!r} appears twice")
        parts[row[0]] = row[2].strip()
    return parts


def run_split_files(run_dir: str | Path) -> list[Path]:
    """The run's split files in split order (empty for runs made before split files existed)."""
    folder = Path(run_dir) / SPLITS_DIR
    files = list(folder.glob("split_*.csv")) if folder.is_dir() else []
    keyed = []
    for f in files:
        stem = f.stem[len("split_"):]
        if stem.isdigit():
            keyed.append((int(stem), f))
    keyed.sort()
    if [k for k, _ in keyed] != list(range(len(keyed))):
        raise BiqaError(f"{folder}: split files are not numbered 0..{len(keyed) - 1} "
                        f"(found {', '.join(f.name for _, f in keyed)})")
    return [f for _, f in keyed]


def split_from_file(path: Path, table: IQATable, seed: int) -> Split:
    """A :class:`Split` of ``table`` from a split file; every image it names must be in the table."""
    parts = read_split_table(path)
    row_of = {name: i for i, name in enumerate(table.names)}
    missing = [name for name in parts if name not in row_of]
    if missing:
        raise BiqaError(f"split file {path}: {len(missing)} image(s) are not in dataset {table.name!r} "
                        f"(first: {', '.join(missing[:3])}); was the run made on another dataset or version?")
    idx: dict[str, list[int]] = {p: [] for p in SPLIT_PARTS}
    for name, part in parts.items():
        idx[part].append(row_of[name])
    arr = {p: np.sort(np.asarray(v, dtype=np.int64)) for p, v in idx.items()}
    if not len(arr["train"]) or not len(arr["test"]):
        raise BiqaError(f"split file {path}: its train or test part is empty")
    return Split(arr["train"], arr["val"], arr["test"], int(seed))


def load_run_splits(run_dir: str | Path, table: IQATable, seeds: list[int] | None = None) -> list[Split]:
    """All splits a run recorded, mapped onto ``table`` (seeds from the run's manifest when given)."""
    files = run_split_files(run_dir)
    if not files:
        raise BiqaError(f"run {run_dir} has no split files (splits/split_<k>.csv); it was made before "
                        "runs recorded their splits: rerun it, or give --seed/--splits instead")
    seeds = list(seeds or [])
    return [split_from_file(f, table, seeds[k] if k < len(seeds) else k) for k, f in enumerate(files)]


def split_difference(a: Path, b: Path) -> str:
    """'' when two split files assign every image to the same part, else a short description."""
    pa, pb = read_split_table(a), read_split_table(b)
    if pa == pb:
        return ""
    only_a = sorted(set(pa) - set(pb))
    only_b = sorted(set(pb) - set(pa))
    moved = sorted(n for n in set(pa) & set(pb) if pa[n] != pb[n])
    bits = []
    if moved:
        bits.append(f"{len(moved)} image(s) in another part (first: {moved[0]} {pa[moved[0]]} vs {pb[moved[0]]})")
    if only_a or only_b:
        bits.append(f"{len(only_a)} image(s) only in the first, {len(only_b)} only in the second")
    return "; ".join(bits)


__all__ = ["COLUMNS", "SPLITS_DIR", "load_run_splits", "read_split_table", "run_split_files", "split_csv",
           "split_difference", "split_file", "split_from_file", "split_rows", "write_split_files"]
