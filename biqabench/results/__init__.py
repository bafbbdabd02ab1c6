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
    METRICS_FILE_COLUMNS, PLOTS_DIR, PREDICTION_COLUMNS, Run, RunFolder, completed_splits, load_run, mark_finished,
    new_run_dir, open_run, read_manifest, read_metrics, read_predictions, runs_root, write_manifest, write_metrics,
    write_predictions, write_summary,
)
from biqabench.results.environment import VERSIONED_PACKAGES, environment_info
from biqabench.results.rendering import FORMATS, meta_rows, render, write_table
from biqabench.results.summary import METRIC_LABELS, summarize, summary_table
from biqabench.results.tables import LIST_COLUMNS, collect_metrics, compare_runs, list_runs, paper_table, weight_gain

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
    "completed_splits",
    "environment_info",
    "list_runs",
    "load_run",
    "mark_finished",
    "meta_rows",
    "new_run_dir",
    "open_run",
    "paper_table",
    "read_manifest",
    "read_metrics",
    "read_predictions",
    "render",
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
