"""One run folder: every path in it and every read and write of it.

Every evaluation writes one folder ``<results>/runs/<id>/``::

    config.yaml          the resolved EvalConfig (what ``--resume`` reloads)
    manifest.json        what ran: head, weights, backbone, protocol, seeds, device, precision,
                         recipe and its preset, dataset fingerprints, package versions, git commit,
                         status
    splits/<k>/          per finished split: predictions.csv, metrics.csv, history.csv (written as
                         each split finishes, so a resumed run keeps what was already done), and
                         checkpoint.pt while the split is training
    predictions.csv      all splits merged: split, test_set, image, mos, pred (+ anything else)
    metrics.csv          all splits merged: split, train_set, test_set, srcc, krcc, plcc (raw),
                         plcc_logistic, rmse_logistic, mapping, n
    history.csv          all splits' training histories merged
    summary.md           per test set: median SRCC/PLCC over splits, mean ± std, 95% CI
    plots/               scatter plots (one per test set) and training curves
    model.safetensors    split 0's fine-tuned head (``biqabench predict``), unless save_model: false;
                         with save_all_models: true every other split's too, as splits/<k>/model.safetensors

Ids start with a timestamp (``20261126-153012-eval-hyperiqa-qpt-1a2b``) so they sort by time and a
unique prefix or fragment is enough to name one.  Every file is written atomically.  No other
module knows these file names: they ask a :class:`RunFolder`.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from biqabench.base import io
from biqabench.base.errors import BiqaError
from biqabench.base.paths import results_root
from biqabench.results.environment import environment_info, jsonable, now
from biqabench.results.rendering import summary_markdown
from biqabench.results.summary import summarize

RUNS_DIR = "runs"
CONFIG = "config.yaml"
MANIFEST = "manifest.json"
PREDICTIONS = "predictions.csv"
METRICS = "metrics.csv"
HISTORY = "history.csv"
SUMMARY = "summary.md"
SPLITS_DIR = "splits"
PLOTS_DIR = "plots"
MODEL = "model.safetensors"
CHECKPOINT = "checkpoint.pt"

PREDICTION_COLUMNS = ("split", "test_set", "image", "mos", "pred")
METRICS_FILE_COLUMNS = ("split", "train_set", "test_set", "srcc", "krcc", "plcc", "plcc_logistic",
                        "rmse_logistic", "mapping", "n")
_STR_COLUMNS = {"split": str, "image": str, "train_set": str, "test_set": str, "mapping": str}


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding run folders: ``<root>/runs`` (``root`` defaults to the results root).

    A ``root`` that is itself named ``runs`` is used as is, so ``--root results/runs`` works too.
    """
    base = Path(root) if root is not None else results_root()
    return base if base.name == RUNS_DIR else base / RUNS_DIR


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-.")
    return s[:limit].strip("-") or "run"


def _split_key(split: Any) -> str:
    key = re.sub(r"[^A-Za-z0-9._-]+", "-", str(split)).strip("-.")
    if not key:
        raise ValueError(f"split {split!r} gives an empty folder name")
    return key


def _natural(value: Any) -> tuple:
    s = str(value)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
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


class RunFolder:
    """The files of one run folder (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @classmethod
    def create(cls, kind: str, label: str, root: str | os.PathLike | None = None) -> "RunFolder":
        """Claim a fresh ``runs/<timestamp>-<kind>-<label>-<4 hex>`` folder.

        Two runs starting in the same second (a benchmark launching several evaluations, or two
        shells) must never share a folder, so the folder is claimed with ``os.mkdir`` (which fails
        if it exists) and a new random suffix is drawn on a clash; there is no check-then-create
        window.  A minimal manifest (id, kind, label, created, status "running") is written at
        once, so even a run that dies before doing anything shows up in ``biqabench results list``.
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
            folder = cls(path)
            io.write_json(folder.manifest_path, {"id": path.name, "kind": kind, "label": label, "created": now(),
                                                 "status": "running"})
            return folder
        raise BiqaError(f"could not find a free run folder name under {parent} after 1000 tries")

    # -- paths -------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / CONFIG)
    manifest_path = property(lambda self: self.path / MANIFEST)
    predictions_path = property(lambda self: self.path / PREDICTIONS)
    metrics_path = property(lambda self: self.path / METRICS)
    history_path = property(lambda self: self.path / HISTORY)
    summary_path = property(lambda self: self.path / SUMMARY)
    splits_dir = property(lambda self: self.path / SPLITS_DIR)
    plots_dir = property(lambda self: self.path / PLOTS_DIR)
    model_path = property(lambda self: self.path / MODEL)

    def split_dir(self, split: Any) -> Path:
        return self.splits_dir / _split_key(split)

    def checkpoint_path(self, split: Any) -> Path:
        """Where split ``split``'s training loop keeps its resumable checkpoint."""
        return self.split_dir(split) / CHECKPOINT

    def looks_like_run(self) -> bool:
        return self.path.is_dir() and any((self.path / n).exists() for n in (MANIFEST, METRICS, SPLITS_DIR))

    def ensure(self) -> "RunFolder":
        io.ensure_dir(self.path, "run folder")
        return self

    def ensure_split(self, split: Any) -> Path:
        return io.ensure_dir(self.split_dir(split), "split folder")

    def remove_checkpoint(self, split: Any) -> None:
        """A finished split needs neither its checkpoint nor the previous one (biqabench.training.checkpoint)."""
        from biqabench.training import checkpoint

        checkpoint.remove(self.checkpoint_path(split))

    # -- config and manifest -------------------------------------------------------------------------
    def write_config(self, config: Mapping[str, Any]) -> Path:
        import yaml

        return io.write_text(self.config_path, yaml.safe_dump(dict(config), sort_keys=False))

    def read_manifest(self) -> dict:
        """The run's manifest, or ``{}`` when it has none yet; a corrupt one is a BiqaError."""
        path = self.manifest_path
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BiqaError(f"cannot read {path}: {exc}; the run folder is damaged (delete it or fix the JSON)") \
                from None
        if not isinstance(data, dict):
            raise BiqaError(f"{path} is not a JSON object; the run folder is damaged")
        return data

    def write_manifest(self, **fields: Any) -> dict:
        """Write ``manifest.json``: the caller's fields plus the environment; returns what was written.

        Fields already in the manifest are kept unless given again, so a resumed run (or
        :meth:`mark_finished`) adds to the record instead of erasing it.  Dataclasses, paths and
        numpy values are converted to plain JSON.
        """
        manifest = self.read_manifest()
        manifest.setdefault("id", self.id)
        manifest.setdefault("created", now())
        manifest.setdefault("status", "running")
        manifest.update(environment_info())
        manifest.update(jsonable(fields))
        manifest["updated"] = now()
        io.write_json(self.manifest_path, manifest)
        return manifest

    def mark_finished(self, **fields: Any) -> dict:
        """Record that the run completed (status "finished", finish time, and e.g. ``wall_seconds``)."""
        return self.write_manifest(status="finished", finished=now(), **fields)

    def recorded_status(self) -> str | None:
        """The manifest's status as written (None: no readable manifest yet)."""
        try:
            return self.read_manifest().get("status", "running") if self.manifest_path.is_file() else None
        except BiqaError:
            return None

    # -- per-split tables ------------------------------------------------------------------------------
    def _merge_splits(self, name: str) -> pd.DataFrame | None:
        """Concatenate ``splits/*/<name>`` in natural split order; None when there are none."""
        files = sorted(self.splits_dir.glob(f"*/{name}"), key=lambda p: _natural(p.parent.name))
        if not files:
            return None
        frames = [_read_csv(f) for f in files]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def _write_table(self, df: pd.DataFrame, name: str, required: Sequence[str], split: Any | None) -> Path:
        df = df.copy()
        if df.empty and len(df.columns) == 0:  # nothing evaluated: a header-only file, not an error
            df = pd.DataFrame(columns=list(required))
        if split is not None:
            df["split"] = str(split)
        require_columns(df, required, name)
        df = _ordered(df, required)
        if split is None:
            return _write_csv(self.path / name, df)
        _write_csv(self.split_dir(split) / name, df)
        return _write_csv(self.path / name, self._merge_splits(name))

    def _read_table(self, name: str, columns: Sequence[str]) -> pd.DataFrame:
        merged = self._merge_splits(name)
        if merged is not None:  # the per-split files are the source of truth when present
            return merged
        if (self.path / name).is_file():
            return _read_csv(self.path / name)
        return pd.DataFrame(columns=list(columns))

    def write_predictions(self, df: pd.DataFrame, split: Any | None = None) -> Path:
        """Write per-image predictions (columns at least split, test_set, image, mos, pred).

        With ``split`` the frame is one split's: it goes to ``splits/<split>/predictions.csv`` and
        the top-level ``predictions.csv`` is rebuilt from all split files.  Without, ``df`` is the
        whole run.
        """
        return self._write_table(df, PREDICTIONS, PREDICTION_COLUMNS, split)

    def write_metrics(self, df: pd.DataFrame, split: Any | None = None) -> Path:
        """Write per-split, per-test-set metrics (the :data:`METRICS_FILE_COLUMNS`, plus any extra).

        Write a split's predictions first and its metrics last: a split counts as done (see
        :meth:`completed_splits`) once its ``metrics.csv`` exists.  ``split`` is any key unique
        within the run (``3``, or ``koniq10k-3`` when one run trains on several sets).
        """
        return self._write_table(df, METRICS, METRICS_FILE_COLUMNS, split)

    def read_metrics(self) -> pd.DataFrame:
        """All splits' metrics."""
        return self._read_table(METRICS, METRICS_FILE_COLUMNS)

    def read_predictions(self) -> pd.DataFrame:
        return self._read_table(PREDICTIONS, PREDICTION_COLUMNS)

    def completed_splits(self) -> list[str]:
        """Split keys whose metrics are written: what a resumed run can skip."""
        return sorted((f.parent.name for f in self.splits_dir.glob(f"*/{METRICS}")), key=_natural)

    def write_history(self, df: pd.DataFrame, split: Any) -> Path:
        """One split's training history (epoch, loss, validation SRCC...)."""
        return _write_csv(self.split_dir(split) / HISTORY, df)

    def merge_history(self) -> pd.DataFrame:
        """All splits' histories in split order, also written to the top-level ``history.csv``."""
        parts = sorted(self.splits_dir.glob(f"*/{HISTORY}"), key=lambda p: _natural(p.parent.name))
        history = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
        io.write_text(self.history_path, history.to_csv(index=False))
        return history

    def write_summary(self, metrics_df: pd.DataFrame | None = None, meta: dict | None = None) -> Path:
        """Write ``summary.md`` (see :func:`biqabench.results.rendering.summary_markdown`)."""
        metrics_df = self.read_metrics() if metrics_df is None else metrics_df
        info = {**self.read_manifest(), **(meta or {})}
        return io.write_text(self.summary_path, summary_markdown(info.get("id", self.id), metrics_df, info))

    def write_plots(self, predictions: pd.DataFrame, history: pd.DataFrame) -> None:
        """Scatter plots per test set and the training curves, into ``plots/``."""
        from biqabench.base import plots

        plots.scatter_plot(predictions, self.plots_dir)
        plots.training_curves(history, self.plots_dir / "training_curves.png")

    # -- the fine-tuned model --------------------------------------------------------------------------
    def split_model_path(self, split: Any) -> Path:
        """Where split ``split``'s fine-tuned head is kept (split 0's at the top, as it always was)."""
        return self.model_path if _split_key(split) == "0" else self.split_dir(split) / MODEL

    def save_model(self, state_dict: Mapping[str, Any], split: Any = 0) -> Path:
        return io.save_safetensors(dict(state_dict), self.split_model_path(split))

    def kept_models(self) -> list[int]:
        """The splits whose fine-tuned head this run kept, in order."""
        kept = [0] if self.model_path.is_file() else []
        if self.splits_dir.is_dir():
            kept += sorted(int(d.name) for d in self.splits_dir.iterdir()
                           if d.name.isdigit() and d.name != "0" and (d / MODEL).is_file())
        return kept

    def load_model_state(self) -> dict:
        from biqabench.components.weights import read_state_dict

        if not self.model_path.is_file():
            raise BiqaError(f"run {self.path} has no {MODEL} (it was run with save_model: false, "
                            f"or did not finish its first split)")
        return read_state_dict(self.model_path)  # a damaged file is a one-line error


class Run(RunFolder):
    """A run folder read back: manifest (read once), metrics (all splits, cached), predictions."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.manifest = self.read_manifest()

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        """"finished", "failed", "interrupted", or "incomplete" (still running, or died silently)."""
        s = self.manifest.get("status")
        return s if s in ("finished", "failed", "interrupted") else "incomplete"

    @functools.cached_property
    def metrics(self) -> pd.DataFrame:
        return self.read_metrics()

    def predictions(self) -> pd.DataFrame:
        return self.read_predictions()

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
        return run_label(self)


def run_label(run) -> str:
    """``head/weights/backbone`` (a weights path shows as its file stem)."""
    head, weights, backbone = run.get("head"), run.get("weights"), run.get("backbone")
    if not (head and weights):
        return str(run.get("label") or run.id)
    w = Path(str(weights)).stem if "/" in str(weights) or "\\" in str(weights) else str(weights)
    return "/".join(str(x) for x in (head, w, backbone) if x)


def run_ids(parent: Path) -> list[str]:
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_run(id_or_path: str | os.PathLike | Run, root: str | os.PathLike | None = None) -> Run:
    """A run by folder path, full id, unique id prefix, unique id fragment, or ``latest``."""
    if isinstance(id_or_path, Run):
        return id_or_path
    if isinstance(id_or_path, RunFolder):
        return Run(id_or_path.path)
    if RunFolder(id_or_path).looks_like_run():
        return Run(id_or_path)
    parent = runs_root(root)
    ids = run_ids(parent)
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


def open_run(run: str | os.PathLike, root: str | os.PathLike | None = None) -> RunFolder:
    """A folder path as given (even an empty one), else a run found by id as :func:`load_run` does."""
    return RunFolder(run) if Path(run).is_dir() else RunFolder(load_run(run, root).path)
