"""Shared pieces of the readers: label-file discovery, tolerant CSV reading, option parsing."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

from biqabench.base.errors import BiqaError


def need_root(root: Path | str | None, dataset: str) -> Path:
    if root is None:
        raise BiqaError(f"dataset {dataset!r} needs its data folder: pass --data-root DIR (or root=...), "
                        "or set BIQABENCH_DATA to the folder holding your datasets")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise BiqaError(f"data root {root} for dataset {dataset!r} is not a folder")
    return root


def has_files(*names: str, depth: int = 2):
    """A ``DatasetSpec.detect``: true for a folder holding one of ``names`` (as :func:`find_file` finds them)."""
    def detect(path: Path) -> bool:
        return path.is_dir() and find_file(path, names, "", depth=depth, required=False) is not None
    return detect


def find_file(root: Path, names: Sequence[str], dataset: str, *, depth: int = 2, what: str = "label file",
              required: bool = True) -> Path | None:
    """The first of ``names`` found in ``root`` or up to ``depth`` folder levels below it
    (case-insensitive), so both ``root/x.csv`` and ``root/annotations/x.csv`` work."""
    wanted = [n.lower() for n in names]
    level = [root]
    for _ in range(depth + 1):
        hits: dict[str, Path] = {}
        nxt: list[Path] = []
        for folder in level:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for e in entries:
                low = e.name.lower()
                if low in wanted and e.is_file() and low not in hits:
                    hits[low] = e
                elif e.is_dir() and not e.name.startswith("."):
                    nxt.append(e)
        for w in wanted:
            if w in hits:
                return hits[w]
        level = nxt
    if required:
        raise BiqaError(f"dataset {dataset!r}: no {what} in {root} (looked for {', '.join(names)} "
                        f"up to {depth} folders deep); is --data-root pointing at the unpacked dataset?")
    return None


def find_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The first existing sub-folder of ``root`` among ``names`` (case-insensitive)."""
    try:
        subdirs = {e.name.lower(): e for e in root.iterdir() if e.is_dir()}
    except OSError:
        return None
    for n in names:
        if n.lower() in subdirs:
            return subdirs[n.lower()]
    return None


def sniff_delimiter(header_line: str) -> str:
    """';' (European spreadsheets), tab, or ','.  Chosen from the header line alone."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(path: Path, dataset: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV, accepting a UTF-8 BOM and ',', ';' or tab delimiters."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BiqaError(f"dataset {dataset!r}: label file {path} does not exist") from None
    except UnicodeDecodeError:
        try:
            text = path.read_text(encoding="latin-1")
        except OSError as exc:
            raise BiqaError(f"dataset {dataset!r}: cannot read {path}: {exc}") from None
    except OSError as exc:
        raise BiqaError(f"dataset {dataset!r}: cannot read {path}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    if not first:
        raise BiqaError(f"dataset {dataset!r}: label file {path} is empty")
    reader = csv.reader(io.StringIO(text), delimiter=sniff_delimiter(first))
    try:
        rows = [r for r in reader if any(c.strip() for c in r)]
    except csv.Error as exc:  # a NUL byte, a cell over the size limit...
        raise BiqaError(f"dataset {dataset!r}: {path} line {reader.line_num} is not valid CSV ({exc}); "
                        "is it really a text table?") from None
    if not rows:
        raise BiqaError(f"dataset {dataset!r}: label file {path} has no header row (only empty cells)")
    header = [h.strip() for h in rows[0]]
    return header, rows[1:]


def read_whitespace_table(path: Path, dataset: str) -> list[list[str]]:
    """Rows of a whitespace-separated text table (TID's mos_with_names.txt, csiq_label.txt)."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise BiqaError(f"dataset {dataset!r}: cannot read {path}: {exc.strerror or exc}") from None
    return [ln.split() for ln in text.splitlines() if ln.strip()]


def column(header: Sequence[str], candidates: Iterable[str], path: Path, dataset: str,
           required: bool = True, expected: str = "") -> int | None:
    """Index of the first column whose name matches one of ``candidates`` (case-insensitive)."""
    low = [h.strip().lower() for h in header]
    cands = list(candidates)
    for c in cands:
        if c.lower() in low:
            return low.index(c.lower())
    if required:
        raise BiqaError(f"dataset {dataset!r}: {path.name} has no column {' / '.join(repr(c) for c in cands)} "
                        f"(found: {', '.join(header) or 'nothing'}){'; expected ' + expected if expected else ''}")
    return None


def cell(row: Sequence[str], idx: int | None) -> str:
    return row[idx].strip() if idx is not None and idx < len(row) else ""


def parse_scale(value: Any, where: str) -> tuple[float, float]:
    """(lo, hi) from a tuple/list or a string like '0,100' / '1:5'."""
    if isinstance(value, str):
        parts = [p for p in value.replace(":", ",").replace(" ", ",").split(",") if p]
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = []
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise BiqaError(f"{where}: scale must be two numbers LO,HI (e.g. 0,100), got {value!r}") from None
    if not lo < hi:
        raise BiqaError(f"{where}: scale needs LO < HI, got {value!r}")
    return lo, hi


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise BiqaError(f"{where}: expected true/false, got {value!r}")


SPLIT_ALIASES = {
    "train": "train", "training": "train", "0": "train",
    "val": "val", "valid": "val", "validation": "val", "1": "val",
    "test": "test", "testing": "test", "2": "test",
}


def split_label(value: str) -> str | None:
    return SPLIT_ALIASES.get(str(value).strip().lower())


def no_unknown_options(options: dict, dataset: str, allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise BiqaError(f"dataset {dataset!r}: unknown option(s) {', '.join(unknown)} "
                        f"(it takes: {', '.join(sorted(allowed)) or 'none'})")
