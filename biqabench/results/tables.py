"""Tables made from run folders: the run list, run-vs-run comparisons, and the QPT paper's
main-table layout (one run's own summary is :mod:`biqabench.results.summary`).

:func:`compare_runs` and :func:`paper_table` show the QPT question side by side: for the same head,
what median SRCC/PLCC each weights reach on each dataset.  Whether a difference is more than the
splits' noise is the paired comparison's answer (:mod:`biqabench.evaluation.compare`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from biqabench.base.errors import BiqaError
from biqabench.results.folder import METRICS_FILE_COLUMNS, Run, load_run, require_columns, run_ids, runs_root
from biqabench.results.summary import METRIC_LABELS, fmt_number

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
    for run_id in run_ids(parent):
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
            "median_srcc": ", ".join(f"{k} {fmt_number(v)}" for k, v in medians.items()) or None,
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
    require_columns(df, ["test_set", *metrics], "paper_table")
    if rows is None:
        rows = [c for c in ("head", "backbone", "weights") if c in df.columns]
        if "backbone" in rows and df["backbone"].nunique(dropna=True) <= 1:
            rows.remove("backbone")
    rows = list(rows)
    if not rows:
        raise ValueError("paper_table needs row columns such as head and weights (see collect_metrics)")
    require_columns(df, rows, "paper_table")
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
