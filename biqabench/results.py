"""Run folders and the tables made from them.

Every evaluation or benchmark writes one folder ``<results>/runs/<id>/``::

    manifest.json        what ran: head, weights, backbone, protocol, seeds, device, precision,
                         resolved config, dataset fingerprints, package versions, git commit, status
    splits/<k>/          per finished split: predictions.csv, metrics.csv (written as each split
                         finishes, so a resumed run keeps what was already done)
    predictions.csv      all splits merged: split, test_set, image, mos, pred (+ anything else)
    metrics.csv          all splits merged: split, train_set, test_set, srcc, krcc, plcc (raw),
                         plcc_logistic, rmse_logistic, mapping, n
    summary.md           per test set: median SRCC/PLCC over splits, mean ± std, 95% CI
    plots/               scatter plots, training curves

Ids start with a timestamp (``20261126-153012-eval-hyperiqa-qpt-1a2b``) so they sort by time and a
unique prefix or fragment is enough to name one.  Every file is written atomically.

The tables at the bottom (:func:`compare_runs`, :func:`paper_table`, :func:`weight_gain`) answer the
QPT question directly: for the same head, how much does swapping ImageNet weights for
quality-aware ones change the median SRCC/PLCC on each dataset?
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import functools
import json
import logging
import math
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from biqabench import io
from biqabench.errors import BiqaError
from biqabench.metrics import aggregate_frame
from biqabench.paths import results_root

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
MANIFEST = "manifest.json"
PREDICTIONS = "predictions.csv"
METRICS = "metrics.csv"
SUMMARY = "summary.md"
SPLITS_DIR = "splits"
PLOTS_DIR = "plots"

PREDICTION_COLUMNS = ("split", "test_set", "image", "mos", "pred")
METRICS_FILE_COLUMNS = ("split", "train_set", "test_set", "srcc", "krcc", "plcc", "plcc_logistic",
                        "rmse_logistic", "mapping", "n")
VERSIONED_PACKAGES = ("biqabench", "torch", "torchvision", "numpy", "pandas", "scipy", "pyiqa")
METRIC_LABELS = {"srcc": "SRCC", "krcc": "KRCC", "plcc": "PLCC", "plcc_logistic": "PLCC (logistic)",
                 "rmse_logistic": "RMSE (logistic)"}
_STR_COLUMNS = {"split": str, "image": str, "train_set": str, "test_set": str, "mapping": str}
_N_BOOT = 2000
_BOOT_SEED = 0


# -- where runs live -----------------------------------------------------------------------------
def runs_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding run folders: ``<root>/runs`` (``root`` defaults to the results root).

    A ``root`` that is itself named ``runs`` is used as is, so ``--root results/runs`` works too.
    """
    base = Path(root) if root is not None else results_root()
    return base if base.name == RUNS_DIR else base / RUNS_DIR


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-.")
    return s[:limit].strip("-") or "run"


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def new_run_dir(kind: str, label: str, root: str | os.PathLike | None = None) -> Path:
    """Create and return a fresh ``runs/<timestamp>-<kind>-<label>-<4 hex>`` folder.

    Two runs starting in the same second (a benchmark launching several evaluations, or two
    shells) must never share a folder, so the folder is claimed with ``os.mkdir`` (which fails if
    it exists) and a new random suffix is drawn on a clash; there is no check-then-create window.
    A minimal manifest (id, kind, label, created, status "running") is written at once, so even a
    run that dies before doing anything shows up in ``biqabench results list``.
    """
    parent = runs_root(root)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BiqaError(f"cannot create the runs folder {parent}: {exc.strerror or exc}; "
                        f"choose a writable --root or set BIQABENCH_RESULTS") from None
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(kind, 20)}-{_slug(label)}"
    for _ in range(1000):
        path = parent / f"{stem}-{secrets.token_hex(2)}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise BiqaError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
        io.write_json(path / MANIFEST, {"id": path.name, "kind": kind, "label": label, "created": _now(),
                                        "status": "running"})
        return path
    raise BiqaError(f"could not find a free run folder name under {parent} after 1000 tries")


# -- manifest ------------------------------------------------------------------------------------
def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.lru_cache(maxsize=1)
def _git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout biqabench is imported from; (None, None) outside one.

    Only a source checkout (a pyproject.toml next to the package) is asked, so an installed copy
    inside some unrelated repository does not report that repository's commit.
    """
    repo = Path(__file__).resolve().parent.parent
    if not (repo / "pyproject.toml").is_file():
        return None, None
    commit = _git(["rev-parse", "HEAD"], repo)
    if not commit:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    return commit, (bool(status) if status is not None else None)


def environment_info() -> dict[str, Any]:
    """Package versions, git commit, Python and platform: what a reader needs to reproduce a run."""
    commit, dirty = _git_state()
    info: dict[str, Any] = {
        "versions": _package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "argv": list(sys.argv),
    }
    torch = sys.modules.get("torch")  # only if already imported: importing torch here costs seconds
    if torch is not None:
        info["torch_cuda"] = getattr(torch.version, "cuda", None)
    return info


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: dataclasses, paths, numpy scalars, sets; NaN/inf become null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """The run's manifest, or ``{}`` when it has none yet; a corrupt one is a BiqaError."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BiqaError(f"cannot read {path}: {exc}; the run folder is damaged (delete it or fix the JSON)") from None
    if not isinstance(data, dict):
        raise BiqaError(f"{path} is not a JSON object; the run folder is damaged")
    return data


def write_manifest(run_dir: str | os.PathLike, **fields: Any) -> dict:
    """Write ``manifest.json``: the caller's fields plus the environment; returns what was written.

    Fields already in the manifest are kept unless given again, so a resumed run (or
    :func:`mark_finished`) adds to the record instead of erasing it.  Typical fields: kind, head,
    weights, backbone, protocol, train_sets, test_sets, splits, seeds, device, precision,
    wall_time_s, dataset fingerprints, config (the resolved recipe; dataclasses are converted).
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    manifest.setdefault("id", run_dir.name)
    manifest.setdefault("created", _now())
    manifest.setdefault("status", "running")
    manifest.update(environment_info())
    manifest.update(_jsonable(fields))
    manifest["updated"] = _now()
    io.write_json(run_dir / MANIFEST, manifest)
    return manifest


def mark_finished(run_dir: str | os.PathLike, **fields: Any) -> dict:
    """Record that the run completed (status "finished", finish time, and e.g. ``wall_time_s``)."""
    return write_manifest(run_dir, status="finished", finished=_now(), **fields)


# -- predictions and metrics ---------------------------------------------------------------------
def _split_key(split: Any) -> str:
    key = re.sub(r"[^A-Za-z0-9._-]+", "-", str(split)).strip("-.")
    if not key:
        raise ValueError(f"split {split!r} gives an empty folder name")
    return key


def _natural(value: Any) -> tuple:
    s = str(value)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing} (have {list(df.columns)})")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=_STR_COLUMNS, keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BiqaError(f"cannot read {path}: {str(exc).splitlines()[0]}; the run folder is damaged") from None


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    with io.atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def _ordered(df: pd.DataFrame, first: Sequence[str]) -> pd.DataFrame:
    lead = [c for c in first if c in df.columns]
    return df[lead + [c for c in df.columns if c not in lead]]


def _merge_splits(run_dir: Path, name: str) -> pd.DataFrame | None:
    """Concatenate ``splits/*/<name>`` in natural split order; None when there are none."""
    files = sorted((run_dir / SPLITS_DIR).glob(f"*/{name}"), key=lambda p: _natural(p.parent.name))
    if not files:
        return None
    frames = [_read_csv(f) for f in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _write_table(run_dir: str | os.PathLike, df: pd.DataFrame, name: str, required: Sequence[str],
                 split: Any | None) -> Path:
    run_dir = Path(run_dir)
    df = df.copy()
    if df.empty and len(df.columns) == 0:  # nothing evaluated: a header-only file, not an error
        df = pd.DataFrame(columns=list(required))
    if split is not None:
        df["split"] = str(split)
    _require(df, required, name)
    df = _ordered(df, required)
    if split is None:
        return _write_csv(run_dir / name, df)
    _write_csv(run_dir / SPLITS_DIR / _split_key(split) / name, df)
    merged = _merge_splits(run_dir, name)
    return _write_csv(run_dir / name, merged)


def write_predictions(run_dir: str | os.PathLike, df: pd.DataFrame, split: Any | None = None) -> Path:
    """Write per-image predictions (columns at least split, test_set, image, mos, pred).

    With ``split`` the frame is one split's: it goes to ``splits/<split>/predictions.csv`` and the
    top-level ``predictions.csv`` is rebuilt from all split files.  Without, ``df`` is the whole run.
    """
    return _write_table(run_dir, df, PREDICTIONS, PREDICTION_COLUMNS, split)


def write_metrics(run_dir: str | os.PathLike, df: pd.DataFrame, split: Any | None = None) -> Path:
    """Write per-split, per-test-set metrics (the :data:`METRICS_FILE_COLUMNS`, plus any extra).

    Write a split's predictions first and its metrics last: a split counts as done (see
    :func:`completed_splits`) once its ``metrics.csv`` exists.  ``split`` is any key unique within
    the run (``3``, or ``koniq10k-3`` when one run trains on several sets).
    """
    return _write_table(run_dir, df, METRICS, METRICS_FILE_COLUMNS, split)


def completed_splits(run_dir: str | os.PathLike) -> list[str]:
    """Split keys whose metrics are written: what a resumed run can skip."""
    files = (Path(run_dir) / SPLITS_DIR).glob(f"*/{METRICS}")
    return sorted((f.parent.name for f in files), key=_natural)


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """All splits' metrics (the per-split files are the source of truth when present)."""
    run_dir = Path(run_dir)
    merged = _merge_splits(run_dir, METRICS)
    if merged is not None:
        return merged
    if (run_dir / METRICS).is_file():
        return _read_csv(run_dir / METRICS)
    return pd.DataFrame(columns=list(METRICS_FILE_COLUMNS))


def read_predictions(run_dir: str | os.PathLike) -> pd.DataFrame:
    run_dir = Path(run_dir)
    merged = _merge_splits(run_dir, PREDICTIONS)
    if merged is not None:
        return merged
    if (run_dir / PREDICTIONS).is_file():
        return _read_csv(run_dir / PREDICTIONS)
    return pd.DataFrame(columns=list(PREDICTION_COLUMNS))


# -- summaries -----------------------------------------------------------------------------------
def summarize(metrics_df: pd.DataFrame, n_boot: int = _N_BOOT, seed: int = _BOOT_SEED) -> pd.DataFrame:
    """Per (train set, test set): splits, and median/mean/std/95% CI of every metric."""
    if metrics_df.empty:
        return pd.DataFrame(columns=["train_set", "test_set", "splits"])
    by = [c for c in ("train_set", "test_set") if c in metrics_df.columns]
    return aggregate_frame(metrics_df, by=by, n_boot=n_boot, seed=seed)


def _f(v: Any, fmt: str = ".3f") -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "-"
    return format(v, fmt) if math.isfinite(v) else "-"


def summary_table(metrics_df: pd.DataFrame) -> pd.DataFrame:
    """Readable per-test-set table: medians with their 95% CI, mean ± std (strings, for display)."""
    agg = summarize(metrics_df)
    rows = []
    for _, r in agg.iterrows():
        row = {"train set": r.get("train_set", "-"), "test set": r["test_set"], "splits": int(r["splits"])}
        for m in ("srcc", "plcc"):
            label = "SRCC" if m == "srcc" else "PLCC (raw)"
            if f"{m}_median" not in r:
                continue
            row[label] = _f(r[f"{m}_median"])
            row[f"{label} 95% CI"] = f"[{_f(r[f'{m}_ci_low'])}, {_f(r[f'{m}_ci_high'])}]"
            row[f"{label} mean ± std"] = f"{_f(r[f'{m}_mean'])} ± {_f(r[f'{m}_std'])}"
        for m in ("plcc_logistic", "krcc", "rmse_logistic"):
            if f"{m}_median" in r:
                row[METRIC_LABELS[m]] = _f(r[f"{m}_median"], ".3f" if m != "rmse_logistic" else ".4g")
        if "fallbacks" in r:
            row["fallback maps"] = int(r["fallbacks"])
        rows.append(row)
    return pd.DataFrame(rows)


_META_FIELDS = ("kind", "head", "weights", "backbone", "protocol", "train", "train_sets", "test", "test_sets",
                "splits", "seeds", "splits_from", "test_frac", "val_frac", "model_selection", "plcc_fit", "input_size",
                "training_target", "weights_file", "weights_sha256", "deterministic", "device", "precision",
                "wall_seconds", "wall_time_s", "created", "finished", "git_commit")


def _meta_value(v: Any) -> str | None:
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        return ", ".join(str(x) for x in v)
    if isinstance(v, dict) and v and all(isinstance(x, (str, int, float)) for x in v.values()):
        return "; ".join(f"{k}: {x}" for k, x in v.items())  # e.g. input_size per dataset
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, (str, int)):
        return str(v)
    return None  # nested values (configs) stay in manifest.json


def meta_rows(meta: dict) -> list[tuple[str, str]]:
    """(field, value) pairs worth showing a reader, in a fixed order."""
    rows = []
    for key in _META_FIELDS:
        if key in meta and meta[key] is not None:
            value = _meta_value(meta[key])
            if value is not None:
                rows.append((key, value))
    return rows


def write_summary(run_dir: str | os.PathLike, metrics_df: pd.DataFrame | None = None,
                  meta: dict | None = None) -> Path:
    """Write ``summary.md``: what the run was, then per test set the median SRCC/PLCC over splits."""
    run_dir = Path(run_dir)
    metrics_df = read_metrics(run_dir) if metrics_df is None else metrics_df
    info = {**read_manifest(run_dir), **(meta or {})}
    lines = [f"# {info.get('id', run_dir.name)}", ""]
    described = meta_rows(info)
    if described:
        lines += [tabulate(described, headers=["field", "value"], tablefmt="github"), ""]
    lines += ["## Results", ""]
    table = summary_table(metrics_df)
    if table.empty:
        lines += ["No finished splits yet.", ""]
    else:
        lines += [tabulate(table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True), ""]
        lines += [
            (f"SRCC and PLCC are medians over splits; the 95% CI is a percentile bootstrap of the median "
             f"(scipy.stats.bootstrap, {_N_BOOT} resamples, seed {_BOOT_SEED}); mean ± std uses the sample std. PLCC (raw) is Pearson's "
             f"correlation of the raw predictions; PLCC (logistic) and RMSE (logistic) follow a "
             f"{'5-parameter (VQEG)' if info.get('plcc_fit') == 'logistic5' else '4-parameter'} "
             f"logistic mapping of predictions onto the MOS scale ('fallback maps' counts splits where that fit "
             f"was impossible and a linear or no mapping was used). docs/protocol.md says what every number is."), "",
        ]
    return io.write_text(run_dir / SUMMARY, "\n".join(lines))


# -- finding runs --------------------------------------------------------------------------------
class Run:
    """A run folder read back: manifest, metrics (all splits), predictions on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        """"finished", "failed", "interrupted", or "incomplete" (still running, or died silently)."""
        s = self.manifest.get("status")
        return s if s in ("finished", "failed", "interrupted") else "incomplete"

    @functools.cached_property
    def metrics(self) -> pd.DataFrame:
        return read_metrics(self.path)

    def predictions(self) -> pd.DataFrame:
        return read_predictions(self.path)

    def summary(self) -> pd.DataFrame:
        return summarize(self.metrics)

    def get(self, key: str, default: Any = None) -> Any:
        return self.manifest.get(key, default)

    def sets(self, which: str) -> list[str]:
        """Train or test sets: those in the metrics (what was evaluated), then any others the
        manifest planned (a run still going, or one that stopped early)."""
        names: list[str] = []
        col = f"{which}_set"
        if col in self.metrics.columns:
            names = [str(x) for x in pd.unique(self.metrics[col].dropna())]
        for key in (f"{which}_sets", f"{which}_set", which):
            v = self.manifest.get(key)
            if v:
                planned = [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
                names += [x for x in planned if x not in names]
                break
        return names

    @property
    def label(self) -> str:
        """Short name for table columns: ``head/weights/backbone`` when known, else the label or the id."""
        from biqabench.compare import run_label

        return run_label(self)


def _run_ids(parent: Path) -> list[str]:
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_run(id_or_path: str | os.PathLike | Run, root: str | os.PathLike | None = None) -> Run:
    """A run by folder path, full id, unique id prefix, unique id fragment, or ``latest``."""
    if isinstance(id_or_path, Run):
        return id_or_path
    path = Path(id_or_path)
    if path.is_dir() and any((path / n).exists() for n in (MANIFEST, METRICS, SPLITS_DIR)):
        return Run(path)
    parent = runs_root(root)
    ids = _run_ids(parent)
    query = str(id_or_path)
    if not ids:
        raise BiqaError(f"no runs in {parent}; run `biqabench eval` first, or point --root at the results folder")
    if query == "latest":
        return Run(parent / ids[-1])
    if query in ids:
        return Run(parent / query)
    for matches in ([i for i in ids if i.startswith(query)], [i for i in ids if query in i]):
        if len(matches) == 1:
            return Run(parent / matches[0])
        if len(matches) > 1:
            shown = ", ".join(matches[:5]) + (f" (+{len(matches) - 5} more)" if len(matches) > 5 else "")
            raise BiqaError(f"'{query}' matches {len(matches)} runs in {parent}: {shown}; give more of the id")
    close = difflib.get_close_matches(query, ids, n=3, cutoff=0.4) or ids[-3:]
    raise BiqaError(f"no run '{query}' in {parent}; did you mean: {', '.join(close)}? "
                    f"(see: biqabench results list)")


LIST_COLUMNS = ("id", "kind", "head", "weights", "backbone", "train", "test", "splits", "median_srcc",
                "status", "created")


def _median_by_test(metrics: pd.DataFrame, metric: str = "srcc") -> dict[str, float]:
    if metrics.empty or metric not in metrics.columns or "test_set" not in metrics.columns:
        return {}
    values = pd.to_numeric(metrics[metric], errors="coerce")
    med = values.groupby(metrics["test_set"], sort=False).median()
    return {str(k): float(v) for k, v in med.items()}


def list_runs(root: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run folder, oldest first: what ran, on what, median SRCC per test set, status."""
    parent = runs_root(root)
    rows = []
    for run_id in _run_ids(parent):
        try:
            run = Run(parent / run_id)
            metrics = run.metrics
        except BiqaError as exc:  # one damaged folder must not hide the others
            rows.append({"id": run_id, "status": f"damaged: {exc}"})
            continue
        medians = _median_by_test(metrics)
        rows.append({
            "id": run_id,
            "kind": run.get("kind"),
            "head": run.get("head"),
            "weights": run.get("weights"),
            "backbone": run.get("backbone"),
            "train": ", ".join(run.sets("train")) or None,
            "test": ", ".join(run.sets("test")) or None,
            "splits": int(metrics["split"].nunique()) if "split" in metrics.columns else 0,
            "median_srcc": ", ".join(f"{k} {_f(v)}" for k, v in medians.items()) or None,
            "status": run.status,
            "created": run.get("created"),
        })
    return pd.DataFrame(rows, columns=list(LIST_COLUMNS))


def _labels(runs: Sequence[Run]) -> list[str]:
    labels = [r.label for r in runs]
    return [f"{lab} [{r.id}]" if labels.count(lab) > 1 else lab for lab, r in zip(labels, runs)]


def compare_runs(ids: Iterable[str | os.PathLike | Run], root: str | os.PathLike | None = None,
                 metrics: Sequence[str] = ("srcc", "plcc")) -> pd.DataFrame:
    """Median metrics of several runs side by side, with each run's difference from the first.

    Rows: (train_set, test_set, metric) in first-seen order; columns: one per run (its label,
    ``head/weights`` when known) and ``delta <label>`` for every run after the first.  A test set
    a run did not evaluate is NaN there.
    """
    runs = [load_run(i, root) for i in ids]
    if not runs:
        raise BiqaError("compare needs at least one run id")
    labels = _labels(runs)
    medians: list[dict[tuple, float]] = []
    pairs: list[tuple] = []  # (train_set, test_set) in first-seen order
    for run in runs:
        table: dict[tuple, float] = {}
        m = run.metrics
        if not m.empty and "test_set" in m.columns:
            train_col = m["train_set"] if "train_set" in m.columns else pd.Series([None] * len(m), index=m.index)
            for (train, test), group in m.groupby([train_col, m["test_set"]], sort=False, dropna=False):
                pair = (None if pd.isna(train) else str(train), str(test))
                if pair not in pairs:
                    pairs.append(pair)
                for metric in metrics:
                    if metric in group.columns:
                        table[(*pair, metric)] = float(pd.to_numeric(group[metric], errors="coerce").median())
        medians.append(table)
    rows = []
    for pair in pairs:
        for metric in metrics:
            key = (*pair, metric)
            if not any(key in t for t in medians):
                continue
            row: dict[str, Any] = {"train_set": pair[0], "test_set": pair[1], "metric": metric}
            base = medians[0].get(key, math.nan)
            for label, table in zip(labels, medians):
                row[label] = table.get(key, math.nan)
            for label, table in zip(labels[1:], medians[1:]):
                row[f"delta {label}"] = table.get(key, math.nan) - base
            rows.append(row)
    columns = ["train_set", "test_set", "metric", *labels, *(f"delta {lab}" for lab in labels[1:])]
    return pd.DataFrame(rows, columns=columns)


# -- paper-style tables --------------------------------------------------------------------------
def collect_metrics(runs: Iterable[str | os.PathLike | Run], root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Per-split metrics of several runs in one frame, with run, head, weights, backbone columns."""
    frames = []
    for ref in runs:
        run = load_run(ref, root)
        m = run.metrics.copy()
        for col in ("backbone", "weights", "head"):
            if col not in m.columns:
                m.insert(0, col, run.get(col))
        m.insert(0, "run", run.id)
        frames.append(m)
    if not frames:
        return pd.DataFrame(columns=["run", "head", "weights", "backbone", *METRICS_FILE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def _dataset_label(df: pd.DataFrame) -> pd.Series:
    test = df["test_set"].astype(str)
    if "train_set" not in df.columns:
        return test
    train = df["train_set"].astype(str)
    cross = df["train_set"].notna() & (train != test)
    return test.where(~cross, train + "->" + test)


def paper_table(df: pd.DataFrame, metrics: Sequence[str] = ("srcc", "plcc"), rows: Sequence[str] | None = None,
                datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """The QPT paper's main-table layout: one row per head + weights, columns (dataset, SRCC/PLCC).

    ``df`` holds per-split metrics of several runs (e.g. :func:`collect_metrics`); each cell is the
    median over splits.  ``rows`` defaults to head and weights, plus backbone when more than one
    backbone appears (otherwise medians would mix backbones).  ``plcc`` is the raw PLCC, as in the
    HyperIQA/QPT code; pass ``metrics=("srcc", "plcc_logistic")`` for the mapped one.  A dataset
    evaluated cross-dataset is labelled ``train->test``.
    """
    _require(df, ["test_set", *metrics], "paper_table")
    if rows is None:
        rows = [c for c in ("head", "backbone", "weights") if c in df.columns]
        if "backbone" in rows and df["backbone"].nunique(dropna=True) <= 1:
            rows.remove("backbone")
    rows = list(rows)
    if not rows:
        raise ValueError("paper_table needs row columns such as head and weights (see collect_metrics)")
    _require(df, rows, "paper_table")
    work = df[rows].copy()
    work["dataset"] = _dataset_label(df)
    for m in metrics:
        work[m] = pd.to_numeric(df[m], errors="coerce")
    med = work.groupby([*rows, "dataset"], sort=False, dropna=False)[list(metrics)].median()
    order = list(datasets) if datasets is not None else list(pd.unique(work["dataset"]))
    table = med.unstack("dataset")  # columns: (metric, dataset)
    table = table.reorder_levels([1, 0], axis=1)
    columns = [(d, m) for d in order for m in metrics if (d, m) in table.columns]
    table = table[columns]
    table.columns = pd.MultiIndex.from_tuples([(d, METRIC_LABELS.get(m, m)) for d, m in columns],
                                              names=["dataset", "metric"])
    row_order = list(dict.fromkeys(map(tuple, df[rows].itertuples(index=False, name=None))))
    table = table.reindex(pd.MultiIndex.from_tuples(row_order, names=rows) if len(rows) > 1
                          else pd.Index([r[0] for r in row_order], name=rows[0]))
    return table


def weight_gain(df: pd.DataFrame, baseline: str | None = None, **paper_table_kwargs: Any) -> pd.DataFrame:
    """Per head, each weights row minus the baseline weights row (default imagenet, else random).

    Accepts per-split metrics (turned into a :func:`paper_table`) or a paper table itself.  Rows
    are labelled ``<weights> vs <baseline>``; a head with no baseline row is left out.
    """
    table = df if isinstance(df.columns, pd.MultiIndex) else paper_table(df, **paper_table_kwargs)
    if "weights" not in (table.index.names or []):
        raise ValueError("weight_gain needs a 'weights' row level (see paper_table)")
    present = list(pd.unique(table.index.get_level_values("weights")))
    if baseline is None:
        baseline = next((b for b in ("imagenet", "random") if b in present), None)
    if baseline is None or baseline not in present:
        raise BiqaError(f"no baseline weights {baseline or 'imagenet/random'} to compare against; "
                        f"weights present: {', '.join(map(str, present))}")
    others = [n for n in table.index.names if n != "weights"]
    weights = table.index.get_level_values("weights")
    groups = list(zip(*(table.index.get_level_values(n) for n in others))) if others else [()] * len(table)
    values = table.to_numpy(dtype=float)
    base_of = {g: values[i] for i, (g, w) in enumerate(zip(groups, weights)) if w == baseline}
    out_rows, out_index = [], []
    for i, (g, w) in enumerate(zip(groups, weights)):
        if w == baseline or g not in base_of:
            continue
        out_rows.append(values[i] - base_of[g])
        out_index.append((*g, f"{w} vs {baseline}"))
    names = [*others, "weights"]
    index = pd.MultiIndex.from_tuples(out_index, names=names) if len(names) > 1 else \
        pd.Index([i[0] for i in out_index], name="weights")
    return pd.DataFrame(out_rows, index=index, columns=table.columns)


# -- rendering -----------------------------------------------------------------------------------
FORMATS = ("markdown", "latex", "csv")


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(x) for x in col if str(x)) for col in out.columns]
    if not isinstance(out.index, pd.RangeIndex) or any(n is not None for n in out.index.names):
        out = out.reset_index()
    return out


def render(df: pd.DataFrame, fmt: str = "markdown", floatfmt: str = ".3f", signed: bool = False) -> str:
    """A table as markdown (GitHub), LaTeX (tabulate) or CSV (full precision).

    Columns named ``delta ...`` (or all, with ``signed``, e.g. for :func:`weight_gain`) are shown
    with a sign; NaN shows as ``-``.
    """
    if fmt not in FORMATS:
        raise BiqaError(f"unknown table format '{fmt}'; use one of {', '.join(FORMATS)}")
    flat = _flat(df)
    if fmt == "csv":
        return flat.to_csv(index=False)
    formats = [("+" + floatfmt) if signed or str(c).startswith("delta") else floatfmt for c in flat.columns]
    headers = [str(c) for c in flat.columns]
    latex = fmt == "latex"

    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return None  # tabulate shows missingval
        if isinstance(v, np.generic):
            v = v.item()
        return _latex_escape(v) if latex and isinstance(v, str) else v

    rows = [[cell(v) for v in row] for row in flat.itertuples(index=False, name=None)]
    if latex:
        return tabulate(rows, headers=[_latex_escape(h) for h in headers], tablefmt="latex_raw", floatfmt=formats,
                        missingval="-")
    return tabulate(rows, headers=headers, tablefmt="github", floatfmt=formats, missingval="-")

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    """Escape LaTeX specials; ``train->test`` becomes an arrow."""
    out = re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIALS[m.group(0)], text)
    return out.replace("->", r"$\rightarrow$")


render_table = render  # the name the benchmark runner uses


def write_table(df: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Render ``df`` and write it atomically; the format follows the suffix (.md, .tex, .csv)."""
    path = Path(path)
    fmt = fmt or {".md": "markdown", ".tex": "latex", ".csv": "csv"}.get(path.suffix.lower(), "markdown")
    text = render(df, fmt)
    return io.write_text(path, text if text.endswith("\n") else text + "\n")


__all__ = [
    "FORMATS",
    "METRICS_FILE_COLUMNS",
    "PREDICTION_COLUMNS",
    "Run",
    "collect_metrics",
    "compare_runs",
    "completed_splits",
    "environment_info",
    "list_runs",
    "load_run",
    "mark_finished",
    "meta_rows",
    "new_run_dir",
    "paper_table",
    "read_manifest",
    "read_metrics",
    "read_predictions",
    "render",
    "render_table",
    "runs_root",
    "summarize",
    "summary_table",
    "weight_gain",
    "write_manifest",
    "write_metrics",
    "write_predictions",
    "write_summary",
    "write_table",
]
