"""Run folders and the tables made from them.

* :mod:`~biqabench.results.folder`: :class:`RunFolder`, the one owner of a run folder's layout and
  files (config, manifest, splits/, predictions, metrics, history, summary, plots/, model,
  checkpoints), :class:`Run` (a folder read back) and :func:`load_run` (find one by id);
* :mod:`~biqabench.results.environment`: package versions, git commit and platform for manifests;
* :mod:`~biqabench.results.summary`: one run's metrics over its splits (median, CI, mean ± std);
* :mod:`~biqabench.results.tables`: the run list, comparisons, the paper's main table;
* :mod:`~biqabench.results.rendering`: markdown / LaTeX / CSV output and ``summary.md``.

Everything public is importable from ``biqabench.results`` itself.
"""

from __future__ import annotations

from biqabench.results.folder import (
    METRICS_FILE_COLUMNS, PLOTS_DIR, PREDICTION_COLUMNS, Run, RunFolder, load_run, open_run, runs_root,
)
from biqabench.results.environment import VERSIONED_PACKAGES, environment_info
from biqabench.results.rendering import FORMATS, meta_rows, render, write_table
from biqabench.results.summary import METRIC_LABELS, summarize, summary_table
from biqabench.results.tables import LIST_COLUMNS, collect_metrics, compare_runs, list_runs, paper_table

__all__ = [
    "FORMATS",
    "LIST_COLUMNS",
    "METRICS_FILE_COLUMNS",
    "METRIC_LABELS",
    "PLOTS_DIR",
    "PREDICTION_COLUMNS",
    "Run",
    "RunFolder",
    "VERSIONED_PACKAGES",
    "collect_metrics",
    "compare_runs",
    "environment_info",
    "list_runs",
    "load_run",
    "meta_rows",
    "open_run",
    "paper_table",
    "render",
    "runs_root",
    "summarize",
    "summary_table",
    "write_table",
]
