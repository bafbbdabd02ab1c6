"""One run's metrics over its splits: per (train set, test set) the median, mean, std and 95% CI
of every metric (:func:`summarize`), and the same as display strings (:func:`summary_table`).

Below the run folder: a :class:`~biqabench.results.folder.Run` summarises itself and
``summary.md`` is rendered from these, while the cross-run tables (:mod:`biqabench.results.tables`)
read run folders.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from biqabench.base.metrics import aggregate_frame

METRIC_LABELS = {"srcc": "SRCC", "krcc": "KRCC", "plcc": "PLCC", "plcc_logistic": "PLCC (logistic)",
                 "rmse_logistic": "RMSE (logistic)"}
N_BOOT = 2000
BOOT_SEED = 0


def summarize(metrics_df: pd.DataFrame, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> pd.DataFrame:
    """Per (train set, test set): splits, and median/mean/std/95% CI of every metric."""
    if metrics_df.empty:
        return pd.DataFrame(columns=["train_set", "test_set", "splits"])
    by = [c for c in ("train_set", "test_set") if c in metrics_df.columns]
    return aggregate_frame(metrics_df, by=by, n_boot=n_boot, seed=seed)


def fmt_number(v: Any, fmt: str = ".3f") -> str:
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
            row[label] = fmt_number(r[f"{m}_median"])
            row[f"{label} 95% CI"] = f"[{fmt_number(r[f'{m}_ci_low'])}, {fmt_number(r[f'{m}_ci_high'])}]"
            row[f"{label} mean ± std"] = f"{fmt_number(r[f'{m}_mean'])} ± {fmt_number(r[f'{m}_std'])}"
        for m in ("plcc_logistic", "krcc", "rmse_logistic"):
            if f"{m}_median" in r:
                row[METRIC_LABELS[m]] = fmt_number(r[f"{m}_median"], ".3f" if m != "rmse_logistic" else ".4g")
        if "fallbacks" in r:
            row["fallback maps"] = int(r["fallbacks"])
        rows.append(row)
    return pd.DataFrame(rows)
