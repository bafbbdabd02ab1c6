"""Paired comparison of two eval runs over their common splits: the demo's ``random`` vs ``qpt`` table.

Two runs of the same protocol and seed share their splits, so split k of one and split k of the
other saw the same training and test images: the per-split SRCC differences are paired, and the
Wilcoxon signed-rank test over them says whether one set of weights is better than chance
would make it (``scipy.stats.wilcoxon``, two-sided; exact for small n without ties).

``python -m biqabench.results.paired`` prints the table for the latest finished runs of
``--base`` and ``--other`` weights (same head and backbone), then writes the HTML report of the
two runs (``<results>/reports/``) and prints its path, as ``make demo`` does last.
This is a small stand-in until ``biqabench results compare`` reports paired statistics itself.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from biqabench.errors import BiqaError
from biqabench.results.folder import Run, load_run
from biqabench.results.tables import list_runs


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (NaN with fewer than 2 non-zero)."""
    from scipy.stats import wilcoxon

    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if len(d) < 2:
        return math.nan
    return float(wilcoxon(d).pvalue)


def paired_table(base: Run, other: Run, metric: str = "srcc") -> pd.DataFrame:
    """Per test set: median ``metric`` of each run, median paired difference, splits where
    ``other`` is higher, and the Wilcoxon p over the splits both runs finished."""
    a, b = base.metrics, other.metrics
    rows = []
    for test_set in dict.fromkeys(a["test_set"]):
        x = a[a.test_set == test_set].set_index("split")[metric]
        y = b[b.test_set == test_set].set_index("split")[metric]
        common = x.index.intersection(y.index)
        if len(common) == 0:
            continue
        d = (y[common] - x[common]).to_numpy(dtype=np.float64)
        rows.append({
            "test set": test_set, "splits": len(common),
            f"{base.get('weights')} {metric}": float(x[common].median()),
            f"{other.get('weights')} {metric}": float(y[common].median()),
            "median diff": float(np.median(d)), "splits up": f"{int((d > 0).sum())}/{len(d)}",
            "wilcoxon p": wilcoxon_p(d),
        })
    return pd.DataFrame(rows)


def latest_run(weights: str, head: str, backbone: str, root=None) -> Run:
    runs = list_runs(root)
    pick = runs[(runs.kind == "eval") & (runs.weights == weights) & (runs["head"] == head)
                & (runs.backbone == backbone) & (runs.status == "finished")]
    if pick.empty:
        raise BiqaError(f"no finished eval run of --head {head} --weights {weights} --backbone {backbone}; "
                        f"run: biqabench eval --head {head} --weights {weights} --backbone {backbone}")
    return load_run(pick.iloc[-1]["id"], root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biqabench.results.paired", description=__doc__.split("\n")[0])
    parser.add_argument("--head", default="hyperiqa")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--base", default="random", help="baseline weights (default: random)")
    parser.add_argument("--other", default="qpt", help="weights compared with it (default: qpt)")
    parser.add_argument("--root", default=None, help="results folder (default: ./results or $BIQABENCH_RESULTS)")
    args = parser.parse_args(argv)
    try:
        base = latest_run(args.base, args.head, args.backbone, args.root)
        other = latest_run(args.other, args.head, args.backbone, args.root)
        table = paired_table(base, other)
    except BiqaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{args.head} on {args.backbone}: {args.base} ({base.id}) vs {args.other} ({other.id}), "
          "SRCC per split paired, Wilcoxon signed-rank (two-sided)\n")
    print(table.to_markdown(index=False, floatfmt=".3f"))
    report = comparison_report_path(args, base, other)
    if report is not None:
        print(f"\nreport: {report}")
    return 0


def comparison_report_path(args: argparse.Namespace, base: Run, other: Run) -> Path | None:
    """Write the HTML report of the two runs (``<results>/reports/``); None if it cannot be rendered."""
    from biqabench.results.folder import runs_root
    from biqabench.results.report import comparison_report, write_report_quietly

    out = runs_root(args.root).parent / "reports" / f"{args.head}-{args.backbone}-{args.base}-vs-{args.other}.html"
    return write_report_quietly(comparison_report, [base, other], out)


if __name__ == "__main__":
    raise SystemExit(main())
