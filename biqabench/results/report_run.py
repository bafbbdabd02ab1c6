"""What the HTML report of one run shows, gathered into a plain dict (the template only lays it out).

A run is an eval, a probe or a zero-shot ``test``: everything comes from its folder
(``manifest.json``, ``metrics.csv``, ``predictions.csv``, ``history.csv``, the split files) and
the statistics from :func:`biqabench.results.summary.summarize`, the same numbers ``summary.md``
and ``biqabench results show`` print.  Numbers travel as floats (the template writes them in full
into ``data-value`` attributes, so a test can compare the page with ``metrics.csv``) and as the
text shown.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from biqabench.results.folder import Run
from biqabench.results.report_card import human_seconds, protocol_card, relative_link
from biqabench.results.report_plots import pretraining_image, scatter_images, training_image
from biqabench.results.summary import METRIC_LABELS, summarize

#: Metrics in the order the results table lists them; RMSE is on the MOS scale, so not 3 decimals.
METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse_logistic")
METRIC_NAMES = {**METRIC_LABELS, "plcc": "PLCC (raw)"}
#: The train_set of a zero-shot ``test`` run's rows (biqabench.zeroshot.ZERO_SHOT; that module is above this one).
ZERO_SHOT = "zero-shot"


def number(v: Any, metric: str = "srcc") -> dict:
    """``{value, text}``: the float (None when missing) and how the page shows it."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return {"value": None, "text": "-"}
    if not math.isfinite(f):
        return {"value": None, "text": "-"}
    return {"value": f, "text": format(f, ".4g" if metric.startswith("rmse") else ".3f")}


# -- the results --------------------------------------------------------------------------------
def results_groups(metrics: pd.DataFrame) -> list[dict]:
    """Per (train set, test set): splits and, per metric, median, 95% CI and mean +- std."""
    groups = []
    for _, r in summarize(metrics).iterrows():
        rows = []
        for m in METRICS:
            if f"{m}_median" not in r:
                continue
            rows.append({"metric": m, "label": METRIC_NAMES[m], "median": number(r[f"{m}_median"], m),
                         "ci_low": number(r[f"{m}_ci_low"], m), "ci_high": number(r[f"{m}_ci_high"], m),
                         "mean": number(r[f"{m}_mean"], m), "std": number(r[f"{m}_std"], m)})
        train, test = str(r.get("train_set", "")), str(r["test_set"])
        groups.append({"train_set": train, "test_set": test, "splits": int(r["splits"]), "rows": rows,
                       "name": test if train in ("", test, "nan", ZERO_SHOT) else f"{train} → {test}",
                       "fallbacks": int(r["fallbacks"]) if "fallbacks" in r and not pd.isna(r["fallbacks"]) else 0})
    return groups


def split_table(metrics: pd.DataFrame, seeds: list) -> dict:
    """Every row of ``metrics.csv``: the per-split table (folded in the page)."""
    extra = [c for c in ("alpha",) if c in metrics.columns]
    columns = [m for m in METRICS if m in metrics.columns] + extra
    rows = []
    for _, r in metrics.iterrows():
        split = str(r.get("split", ""))
        seed = seeds[int(split)] if split.isdigit() and int(split) < len(seeds) else None
        rows.append({"split": split, "seed": seed, "train_set": str(r.get("train_set", "")),
                     "test_set": str(r["test_set"]), "kind": str(r.get("kind", "") if pd.notna(r.get("kind")) else ""),
                     "n": number(r.get("n"), "n")["value"], "mapping": str(r.get("mapping", "") or ""),
                     "cells": [{"metric": c, **number(r[c], c)} for c in columns]})
    for row in rows:  # counts are whole numbers
        row["n"] = None if row["n"] is None else int(row["n"])
    return {"columns": [{"metric": c, "label": METRIC_NAMES.get(c, c)} for c in columns], "rows": rows}


def outside_scale(run: Run) -> list[dict]:
    """Per test set: predictions outside the dataset's MOS scale, as the run's manifest counted
    them (eval, probe and test record ``outside_scale``; a run from before they did shows none)."""
    rows = []
    for name, v in (run.get("outside_scale") or {}).items():
        try:
            rows.append({"test_set": str(name), "outside": int(v["outside"]), "predictions": int(v["predictions"]),
                         "scale": f"{float(v['scale'][0]):g} to {float(v['scale'][1]):g}"})
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return rows


# -- files ----------------------------------------------------------------------------------------
_TOP_FILES = ("summary.md", "metrics.csv", "predictions.csv", "history.csv", "manifest.json", "config.yaml",
              "model.safetensors", "table.md", "table.csv", "table.tex", "matrix.json")


def file_links(folder: Path, out_dir: Path) -> list[dict]:
    """The run folder's files worth opening, as links relative to the report."""
    found = [folder / n for n in _TOP_FILES if (folder / n).is_file()]
    found += sorted((folder / "plots").glob("*.png")) + sorted((folder / "splits").glob("split_*.csv"))
    if (folder / "splits").is_dir():
        found.append(folder / "splits")
    return [{"name": p.relative_to(folder).as_posix() + ("/" if p.is_dir() else ""), "href": relative_link(p, out_dir),
             "size": _size(p)} for p in found]


def _size(p: Path) -> str:
    if p.is_dir():
        return f"{sum(1 for _ in p.iterdir())} entries"
    n = p.stat().st_size
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.1f} MiB"


# -- the whole run --------------------------------------------------------------------------------
def run_context(run: Run, out_dir: Path) -> dict:
    """Everything the run template shows (``out_dir``: where the report goes, for relative links)."""
    metrics = run.metrics
    predictions = run.predictions()
    history = _history(run)
    figures = scatter_images(predictions, run.get("plcc_fit") or "logistic4") if not predictions.empty else []
    curve = training_image(history)
    pretrained = pretraining_image(run.get("weights"), run.get("weights_pretraining_run"))
    return {
        "kind": "run", "title": run.id, "run": run_header(run),
        "card": protocol_card(run, out_dir),
        "results": results_groups(metrics),
        "per_split": split_table(metrics, list(run.get("seeds") or [])),
        "outside": outside_scale(run),
        "scatter": figures, "training": curve, "pretraining": [pretrained] if pretrained else [],
        "trained": run.get("kind") == "eval",
        "files": file_links(run.path, out_dir),
    }


def _history(run: Run) -> pd.DataFrame:
    if run.history_path.is_file():
        try:
            return pd.read_csv(run.history_path)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            return pd.DataFrame()
    return pd.DataFrame()


def run_header(run: Run) -> dict:
    """The line under the title: what ran on what, and how it ended."""
    tests = [t for t in run.sets("test")]
    return {"id": run.id, "kind": run.get("kind") or "run", "status": run.status, "label": run.label,
            "head": run.get("head"), "weights": run.get("weights"), "backbone": run.get("backbone"),
            "train": run.get("train"), "tests": tests, "error": run.get("error"),
            "splits": int(run.metrics["split"].nunique()) if "split" in run.metrics.columns else 0,
            "planned_splits": run.get("splits"), "wall": human_seconds(run.get("wall_seconds")),
            "finished": run.get("finished") or run.get("updated")}


__all__ = ["METRICS", "file_links", "number", "outside_scale", "results_groups", "run_context", "run_header",
           "split_table"]
