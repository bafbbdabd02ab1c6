"""What the HTML report of a benchmark matrix (or of runs compared side by side) shows, as a dict.

The tables are the ones ``table.md`` holds: :func:`biqabench.results.tables.paper_table` (the QPT
paper's layout, medians over splits) and :func:`biqabench.evaluation.compare.paired_gain` (per head and
dataset, each weights against the baseline split by split: median delta, bootstrap CI, Wilcoxon
p, splits up), computed from the matrix's ``metrics.csv``.  Added here: the per-split paired
plot, the jobs with links to their own reports, and a protocol card of what the jobs share.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from biqabench.base.errors import BiqaError
from biqabench.results.folder import Run, RunFolder, load_run
from biqabench.results.report import REPORT, render, write_report_quietly
from biqabench.results.report_card import (
    datasets_table, environment_section, human_seconds, metrics_section, relative_link, row, section,
    splits_section,
)
from biqabench.results.report_plots import paired_image, paired_values, pretraining_image
from biqabench.results.report_run import file_links, number
from biqabench.results.summary import METRIC_LABELS

MATRIX_INFO = "matrix.json"
_LABEL_TO_METRIC = {v: k for k, v in METRIC_LABELS.items()}


def read_matrix_info(folder: Path) -> dict:
    """``matrix.json`` as the benchmark wrote it ({} for a folder from before it did)."""
    try:
        data = json.loads((folder / MATRIX_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def looks_like_matrix(folder: Path) -> bool:
    return folder.is_dir() and ((folder / MATRIX_INFO).is_file() or (folder / "table.md").is_file())


def matrix_runs(folder: Path, info: dict) -> list[Run]:
    """The matrix's job folders that hold a run, in the matrix's order."""
    names = [j["key"] for j in info.get("jobs", []) if isinstance(j, dict) and j.get("key")]
    if not names:
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    return [Run(folder / n) for n in names if RunFolder(folder / n).looks_like_run()]


def matrix_context(folder: Path, out_dir: Path) -> dict:
    """The report of ``results/benchmarks/<name>/``."""
    folder = Path(folder)
    if not looks_like_matrix(folder):
        raise BiqaError(f"{folder} is not a benchmark matrix folder (no {MATRIX_INFO} or table.md); "
                        "run `biqabench benchmark MATRIX.yaml` first")
    info = read_matrix_info(folder)
    runs = matrix_runs(folder, info)
    finished = [r for r in runs if r.status == "finished"]
    if (folder / "metrics.csv").is_file():
        df = pd.read_csv(folder / "metrics.csv", dtype={"split": str, "train_set": str, "test_set": str})
    else:
        df = _collect(finished)
    weights = [str(w) for w in info.get("weights") or pd.unique(df.get("weights", pd.Series(dtype=str)))]
    baseline = info.get("baseline") or _default_baseline(weights)
    return _context(str(info.get("name") or folder.name), "matrix", df, runs, baseline, weights, folder, out_dir)


def comparison_context(runs: list[Run], out_dir: Path) -> dict:
    """Runs on the same splits side by side: the first is the baseline (as ``results compare``)."""
    from biqabench.evaluation.compare import require_same_splits

    if len(runs) < 2:
        raise BiqaError("a comparison report needs at least two runs: the baseline first, then the others")
    for other in runs[1:]:
        require_same_splits(runs[0], other)
    df = _collect(runs)
    weights = list(pd.unique(df["weights"]))
    title = " vs ".join(dict.fromkeys(r.label for r in runs))
    return _context(title, "comparison", df, runs, weights[0], weights, None, out_dir)


def _collect(runs: list[Run]) -> pd.DataFrame:
    """Per-split metrics of several runs with head and weights columns; a (head, weights) pair
    that two runs share is told apart by the run id's last characters."""
    frames, seen = [], {}
    for run in runs:
        key = (str(run.get("head")), str(run.get("weights")))
        seen[key] = seen.get(key, 0) + 1
    for run in runs:
        head, weights = str(run.get("head")), str(run.get("weights"))
        label = weights if seen[(head, weights)] == 1 else f"{weights} [{run.id[-4:]}]"
        frames.append(run.metrics.assign(head=head, weights=label, run=run.id))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _default_baseline(weights: list[str]) -> str:
    return next((b for b in ("imagenet", "random") if b in weights), weights[0] if weights else "")


def _context(title: str, kind: str, df: pd.DataFrame, runs: list[Run], baseline: str, weights: list[str],
             folder: Path | None, out_dir: Path) -> dict:
    order = [baseline, *[w for w in weights if w != baseline]]
    finished = [r for r in runs if r.status == "finished"]
    return {
        "kind": "matrix", "what": kind, "title": title, "baseline": baseline,
        "summary": _summary_line(df, runs, finished),
        "paper": paper_rows(df) if not df.empty else None,
        "gains": gain_rows(df, baseline),
        "paired": paired_images(df, baseline, order),
        "jobs": job_rows(runs, out_dir),
        "card": matrix_card(finished, out_dir),
        "pretraining": _pretraining(finished),
        "files": file_links(folder, out_dir) if folder is not None else [],
    }


def _summary_line(df: pd.DataFrame, runs: list[Run], finished: list[Run]) -> str:
    splits = df["split"].nunique() if "split" in df.columns else 0
    first = finished[0] if finished else None
    backbone = f"backbone {first.get('backbone')}; " if first is not None else ""
    return (f"{len(finished)} of {len(runs)} jobs finished; {backbone}median over {splits} split"
            f"{'s' if splits != 1 else ''} per cell.")


def paper_rows(df: pd.DataFrame) -> dict:
    """The paper-layout table: a header of datasets and metrics, one row per head + weights."""
    from biqabench.results.tables import paper_table

    table = paper_table(df)
    names = list(table.index.names)
    datasets = list(dict.fromkeys(d for d, _ in table.columns))
    columns = [{"dataset": d, "label": lab, "metric": _LABEL_TO_METRIC.get(lab, lab)} for d, lab in table.columns]
    rows = []
    for index, values in zip(table.index, table.to_numpy(dtype=float)):
        key = dict(zip(names, index if isinstance(index, tuple) else (index,)))
        rows.append({"keys": [str(key[n]) for n in names], "head": str(key.get("head", "")),
                     "weights": str(key.get("weights", "")),
                     "cells": [{**c, **number(v, c["metric"])} for c, v in zip(columns, values)]})
    return {"names": names, "datasets": [{"name": d, "span": sum(1 for c in columns if c["dataset"] == d)}
                                         for d in datasets], "columns": columns, "rows": rows}


def gain_rows(df: pd.DataFrame, baseline: str) -> list[dict]:
    """:func:`biqabench.evaluation.compare.paired_gain` for SRCC and raw PLCC: one table each (the page shows
    SRCC's and folds PLCC's), with the smallest p-value their number of splits allows."""
    from biqabench.evaluation.compare import paired_gain

    tables = []
    for metric in ("srcc", "plcc"):
        table = paired_gain(df, baseline, metric) if metric in df.columns else pd.DataFrame()
        rows = [{"head": r["head"], "weights": r["weights"], "dataset": r["dataset"], "metric": metric,
                 "delta": number(r[f"median delta {metric.upper()}"], metric), "ci": r["95% CI"],
                 "p": _p_value(r["Wilcoxon p"]), "splits": int(r["splits"]), "up": r["splits up"]}
                for _, r in table.iterrows()]
        if rows:
            fewest = min(r["splits"] for r in rows)
            tables.append({"metric": metric, "label": METRIC_LABELS[metric] + (" (raw)" if metric == "plcc" else ""),
                           "rows": rows, "fewest_splits": fewest, "smallest_p": smallest_p(fewest)})
    return tables


def smallest_p(splits: int) -> float:
    """The smallest two-sided exact Wilcoxon signed-rank p-value ``splits`` deltas can give (all of
    one sign): 2 / 2**n.  Under 0.05 with 5 splits or fewer, whatever the deltas."""
    return 2.0 / 2 ** splits if splits > 0 else 1.0


def _p_value(p: Any) -> dict:
    out = number(p)
    if out["value"] is not None:
        out["text"] = f"{out['value']:.3g}" if out["value"] >= 0.001 else f"{out['value']:.1e}"
    return out


def paired_images(df: pd.DataFrame, baseline: str, order: list[str]) -> list[dict]:
    """One per-split paired plot per head and dataset that has the baseline and another weights."""
    need = {"head", "weights", "test_set", "split", "srcc"}
    if df.empty or not need <= set(df.columns):
        return []
    images = []
    trains = df["train_set"].astype(str) if "train_set" in df.columns else df["test_set"].astype(str)
    for head, train, test in dict.fromkeys(zip(df["head"].astype(str), trains, df["test_set"].astype(str))):
        wide = paired_values(df, head, train, test, order)
        dataset = test if train == test else f"{train}->{test}"
        image = paired_image(wide, head, dataset, baseline) if baseline in wide.columns else None
        if image is not None:
            images.append(image)
    return images


def job_rows(runs: list[Run], out_dir: Path) -> list[dict]:
    rows = []
    for run in runs:
        report = run.path / "report.html"
        rows.append({"id": run.id, "head": run.get("head"), "weights": run.get("weights"), "train": run.get("train"),
                     "status": run.status, "wall": human_seconds(run.get("wall_seconds")),
                     "splits": int(run.metrics["split"].nunique()) if "split" in run.metrics.columns else 0,
                     "folder": relative_link(run.path, out_dir) + "/",
                     "report": relative_link(report, out_dir) if report.is_file() else None})
    return rows


def matrix_card(finished: list[Run], out_dir: Path) -> dict:
    """What every job shares (splits, metrics, software, machine: read from the first finished job)
    and, per weights, the file and its sha256."""
    if not finished:
        return {"sections": [], "datasets": [], "weights": []}
    first = finished[0]
    m = first.manifest
    shared = section("Shared by every job", row("protocol", m.get("protocol")), row("backbone", m.get("backbone")),
                     row("model selection", m.get("model_selection")),
                     row("total wall time", human_seconds(sum(float(r.get("wall_seconds") or 0) for r in finished))))
    sections = [shared, splits_section(first.path, m, out_dir), metrics_section(m), environment_section(m)]
    weights = {}
    for run in finished:
        w = str(run.get("weights"))
        weights.setdefault(w, {"weights": w, "source": run.get("weights_source"), "file": run.get("weights_file"),
                               "sha256": run.get("weights_sha256"), "run": run.get("weights_pretraining_run"),
                               "recipes": set()})
        weights[w]["recipes"].add(f"{run.get('head')}: {run.get('recipe_preset')}")
    for w in weights.values():
        w["recipes"] = ", ".join(sorted(w["recipes"]))
    return {"sections": [s for s in sections if s["rows"]], "datasets": datasets_table(m),
            "weights": list(weights.values())}


def _pretraining(finished: list[Run]) -> list[dict]:
    images, seen = [], set()
    for run in finished:
        key = run.get("weights_pretraining_run")
        if key and key not in seen:
            seen.add(key)
            image = pretraining_image(run.get("weights"), key)
            if image is not None:
                images.append(image)
    return images


# -- writing ---------------------------------------------------------------------------------------
def matrix_report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report of a benchmark matrix folder (default: ``report.html`` in it)."""
    from biqabench.base import io

    folder = Path(folder)
    path = Path(out) if out else folder / REPORT
    return io.write_text(path, render(matrix_context(folder, path.parent)))


def comparison_report(runs: list, out: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Write the report of runs on the same splits, the first one the baseline."""
    from biqabench.base import io

    path = Path(out)
    return io.write_text(path, render(comparison_context([load_run(r, root) for r in runs], path.parent)))


def report(targets: list[str], out: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> Path:
    """What ``biqabench report`` does: one run, one matrix or study folder, or several runs compared."""
    from biqabench.results.report import run_report

    if not targets:
        raise BiqaError("report needs a run id or folder, a matrix or study folder, or several runs to compare")
    if len(targets) > 1:
        if out is None:
            raise BiqaError("a comparison of several runs has no folder of its own: name the file with -o")
        return comparison_report(targets, out, root)
    from biqabench.evaluation.report_study import looks_like_study, study_report

    if looks_like_study(Path(targets[0])):
        return study_report(targets[0], out)
    if looks_like_matrix(Path(targets[0])):  # its metrics.csv would make it look like a run too
        return matrix_report(targets[0], out)
    return run_report(targets[0], out, root)


__all__ = ["MATRIX_INFO", "comparison_context", "comparison_report", "gain_rows", "job_rows", "looks_like_matrix",
           "matrix_card", "matrix_context", "matrix_report", "paired_images", "paper_rows", "read_matrix_info", "report",
           "write_report_quietly"]
