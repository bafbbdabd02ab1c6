"""Paired comparison of runs: same splits, split-by-split deltas, a CI and a p-value.

``biqabench results compare A B`` and the benchmark's gain tables both come from here.  Two runs
are compared only when they were tested on the same splits: the same training set, and for every
seed they share the same split file (``splits/split_<k>.csv``; a run made before split files
existed cannot be checked, and is refused: its validation part was still drawn from all images).
Anything else is refused with one line naming what differs, because a delta between different test images says
nothing about the models.  The numbers themselves come from :func:`biqabench.base.stats.paired_test`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from biqabench.base.errors import BiqaError
from biqabench.results.folder import run_label
from biqabench.base.stats import paired_test



def labels_for(runs: Sequence) -> list[str]:
    labels = [run_label(r) for r in runs]
    return [f"{lab} [{r.id[-4:]}]" if labels.count(lab) > 1 else lab for lab, r in zip(labels, runs)]


def _seed_of_split(run) -> dict[str, int]:
    """Metrics' split key -> seed (the manifest lists seeds in split order; a run that lists none
    is keyed by its split numbers)."""
    seeds = run.get("seeds") or []
    if not seeds:
        return {str(k): int(k) for k in run.metrics.get("split", []) if str(k).isdigit()}
    return {str(k): int(s) for k, s in enumerate(seeds)}


def split_based(run) -> bool:
    """Whether a run was tested on splits of a training set (eval, probe); a zero-shot ``test`` run
    scores whole sets, so there is nothing to pair split by split."""
    return bool(run.get("train")) and run.get("kind") not in ("test",)


def splits_difference(a, b) -> str:
    """'' when runs ``a`` and ``b`` were tested on the same splits, else what differs (one line)."""
    from biqabench.data.splitfiles import run_split_files, split_difference

    if a.get("train") != b.get("train"):
        return f"they trained on different sets ({a.get('train')} vs {b.get('train')})"
    seeds_a, seeds_b = list(a.get("seeds") or []), list(b.get("seeds") or [])
    if seeds_a != seeds_b:
        return f"their split seeds differ ({_seeds(seeds_a)} vs {_seeds(seeds_b)})"
    files_a, files_b = run_split_files(a.path), run_split_files(b.path)
    if files_a and files_b:
        if len(files_a) != len(files_b):
            return f"they recorded {len(files_a)} vs {len(files_b)} split files"
        for k, (fa, fb) in enumerate(zip(files_a, files_b)):
            diff = split_difference(fa, fb)
            if diff:
                return f"split {k} (seed {seeds_a[k] if k < len(seeds_a) else k}) differs: {diff}"
        return ""
    missing = [r.id for r, files in ((a, files_a), (b, files_b)) if not files]
    return (f"{' and '.join(missing)} recorded no split files (made before runs wrote splits/split_<k>.csv, "
            "when the validation part was taken from all images), so the splits cannot be checked; "
            "use --unpaired for medians side by side")


def _seeds(seeds: list) -> str:
    if not seeds:
        return "none"
    return f"{seeds[0]}..{seeds[-1]}" if seeds == list(range(seeds[0], seeds[0] + len(seeds))) else \
        ",".join(map(str, seeds))


def require_same_splits(a, b) -> None:
    diff = splits_difference(a, b)
    if diff:
        hint = "" if "no split files" in diff else f"; rerun one with --splits-from {a.id}"
        raise BiqaError(f"cannot pair {a.id} and {b.id}: {diff}{hint}")


def _per_seed(run, metric: str) -> dict[tuple[str, str], dict[int, float]]:
    """(train_set, test_set) -> {seed: value} of one metric."""
    m = run.metrics
    out: dict[tuple[str, str], dict[int, float]] = {}
    if m.empty or metric not in m.columns:
        return out
    seed_of = _seed_of_split(run)
    for _, row in m.iterrows():
        key = (str(row.get("train_set", "")), str(row["test_set"]))
        seed = seed_of.get(str(row["split"]))
        if seed is None:
            continue
        out.setdefault(key, {})[seed] = float(pd.to_numeric(row[metric], errors="coerce"))
    return out


def paired_rows(base, other, base_label: str, label: str, metrics: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(summary rows, per-split delta rows) of ``other`` against ``base`` on every shared test set."""
    rows, deltas = [], []
    for metric in metrics:
        va, vb = _per_seed(base, metric), _per_seed(other, metric)
        for key in [k for k in va if k in vb]:
            seeds = sorted(set(va[key]) & set(vb[key]))
            if not seeds:
                continue
            a = [va[key][s] for s in seeds]
            b = [vb[key][s] for s in seeds]
            t = paired_test(a, b)
            med = lambda xs: float(pd.Series(xs).median())  # noqa: E731
            rows.append({"train_set": key[0], "test_set": key[1], "metric": metric, base_label: med(a),
                         label: med(b), "delta (median)": t["median_delta"],
                         "95% CI": f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]",
                         "Wilcoxon p": t["wilcoxon_p"], "splits": t["n"]})
            deltas.append({"test_set": key[1], "metric": metric, "vs": f"{label} - {base_label}",
                           **{f"seed {s}": d for s, d in zip(seeds, t["deltas"])}})
    return rows, deltas


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"


def compare_paired(ids: Sequence[Any], root=None, metrics: Sequence[str] = ("srcc", "plcc")
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run after the first against the first, split by split: (summary, per-split deltas)."""
    from biqabench.results import load_run

    runs = [load_run(i, root) for i in ids]
    if len(runs) < 2:
        raise BiqaError("compare needs at least two runs: the baseline first, then the run(s) to compare with it")
    labels = labels_for(runs)
    summary, per_split = [], []
    for run, label in zip(runs[1:], labels[1:]):
        require_same_splits(runs[0], run)
        rows, deltas = paired_rows(runs[0], run, labels[0], label, metrics)
        summary += rows
        per_split += deltas
    if not summary:
        raise BiqaError(f"{runs[0].id} and the other run(s) share no finished split on any test set")
    return pd.DataFrame(summary), pd.DataFrame(per_split)


def paired_gain(df: pd.DataFrame, baseline: str, metric: str = "srcc") -> pd.DataFrame:
    """Benchmark gain table: per head and dataset, each weights' per-split delta vs ``baseline``.

    ``df`` holds per-split metrics with head, weights, train_set, test_set and split columns (the
    matrix's jobs share seeds and settings, so split k is the same split in every job).
    """
    need = {"head", "weights", "test_set", "split", metric}
    if df.empty or not need <= set(df.columns):
        return pd.DataFrame()
    rows = []
    for (head, train, test), group in df.groupby(["head", df.get("train_set", df["test_set"]), "test_set"],
                                                 sort=False):
        by_w = {w: g.set_index(g["split"].astype(str))[metric].astype(float) for w, g in group.groupby("weights")}
        if baseline not in by_w:
            continue
        for w, values in by_w.items():
            if w == baseline:
                continue
            common = [s for s in by_w[baseline].index if s in values.index]
            t = paired_test(by_w[baseline][common].to_numpy(), values[common].to_numpy())
            dataset = test if str(train) == str(test) else f"{train}->{test}"
            rows.append({"head": head, "weights": f"{w} vs {baseline}", "dataset": dataset,
                         f"median delta {metric.upper()}": t["median_delta"],
                         "95% CI": f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]",
                         "Wilcoxon p": t["wilcoxon_p"], "splits": t["n"], "splits up": splits_up(t["deltas"])})
    return pd.DataFrame(rows)


def splits_up(deltas: Sequence[float]) -> str:
    """``"k/n"``: of the ``n`` finite per-split deltas, ``k`` are positive (the other run is higher)."""
    finite = [d for d in deltas if d is not None and math.isfinite(d)]
    return f"{sum(d > 0 for d in finite)}/{len(finite)}"


__all__ = ["split_based", "compare_paired", "labels_for", "paired_gain", "paired_rows", "require_same_splits", "run_label",
           "splits_difference", "splits_up"]
