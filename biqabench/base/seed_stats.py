"""Statistics that count the seeds: a pretraining study's strategies x pretraining seeds x splits.

A study pretrains each strategy with several seeds and evaluates every pretrained backbone on the
same K splits of a labelled set (the same split files in every cell).  Two sources of variance
meet in its numbers: the pretraining seed (two runs of one recipe are two backbones: on CLIVE the
demo-default QPT beat random weights by +0.080, +0.030 and +0.034 median SRCC with seeds 0, 1
and 2) and the split (which images land in the test part).  Per strategy, protocol and test set:

* per seed, the median over splits (:func:`per_seed_medians`);
* across seeds, their mean with a hierarchical bootstrap interval: resample seeds, then splits
  within each resampled seed (:func:`hierarchical_ci`);
* the paired difference with a baseline over the (seed, split) pairs that share a split: per seed
  the median of its per-split differences (listed, each with its Wilcoxon p over its own splits,
  which is optimistic), and across seeds their mean, a t interval and the two-sided p of a
  one-sample t-test on the per-seed differences (:func:`seed_test`): the seed is the replicate.

Why that test.  Splits of one dataset overlap (two 80/20 splits share about 64% of their training
and 20% of their test images), so the per-split differences of one seed are correlated, and a test
over all (seed, split) pairs as if they were independent rejects a true null far more often than
it claims (docs/protocol.md gives the simulated rate).  Reducing each seed to one number first
leaves values that are independent because the pretraining runs are; a t-test on them is valid
whatever the correlation between splits (balanced, it equals the F-test of a mixed model with a
random seed effect).  A sign or sign-flip permutation test on the per-seed numbers needs no
normality but cannot reach p < 0.05 below 6 seeds (3 seeds: its smallest two-sided p is 0.25).
Size and power are measured on simulated studies (:func:`simulate_pairs`, :func:`rejection_rate`)
by ``tests/base/test_seed_stats.py`` and stated in docs/protocol.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _stats

from biqabench.base.errors import BiqaError
from biqabench.base.stats import wilcoxon_p

N_RESAMPLES = 2000
BOOT_SEED = 0
CONFIDENCE = 0.95

#: The noise of the simulated studies (SRCC units), as measured on CLIVE (docs/protocol.md):
#: ``seed_sd`` the spread of the true gain between pretraining seeds, ``split_sd`` one run's
#: SRCC around its mean on one split (the part not shared with other runs), ``split_corr`` the
#: correlation of that noise between two splits of one run (their test sets overlap), and
#: ``shared_split_sd`` what one split's test set does to every run alike (it cancels in a pair).
NOISE = {"seed_sd": 0.03, "split_sd": 0.035, "split_corr": 0.3, "shared_split_sd": 0.03}

KEYS = ("strategy", "protocol", "test_set")


# -- one strategy's (seed x split) matrix ---------------------------------------------------------
def seed_matrix(rows: pd.DataFrame, value: str = "srcc") -> tuple[np.ndarray, list, list]:
    """``rows[value]`` as a (seeds x splits) matrix, NaN where a (seed, split) is missing; with the
    seed and split labels of its rows and columns (sorted)."""
    dup = rows.duplicated(["seed", "split"], keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        raise BiqaError(f"study table: seed {first['seed']} split {first['split']} appears {int(dup.sum())} times "
                        "for one strategy, protocol and test set; one value per (seed, split) is expected")
    pivot = rows.pivot(index="seed", columns="split", values=value).sort_index().sort_index(axis=1)
    return pivot.to_numpy(dtype=np.float64), list(pivot.index), list(pivot.columns)


def per_seed_medians(matrix) -> np.ndarray:
    """Each seed's median over its splits (NaN for a seed without a value)."""
    m = np.asarray(matrix, dtype=np.float64)
    out = np.full(m.shape[0], np.nan)
    for r, row in enumerate(m):
        row = row[np.isfinite(row)]
        if row.size:
            out[r] = np.median(row)
    return out


def hierarchical_ci(matrix, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                    seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """(level, low, high): the mean over seeds of the per-seed medians over splits, and its
    percentile interval from a two-level bootstrap: draw the seeds with replacement, then for
    each drawn seed as many of its splits as it has, with replacement.

    With few seeds the interval is too narrow (3 seeds give 10 distinct seed draws); its coverage
    on simulated studies is in docs/protocol.md.  One value gives a zero-width interval."""
    rows = [r[np.isfinite(r)] for r in np.asarray(matrix, dtype=np.float64)]
    rows = [r for r in rows if r.size]
    if not rows:
        return math.nan, math.nan, math.nan
    level = float(np.mean([np.median(r) for r in rows]))
    sizes = np.asarray([r.size for r in rows])
    if sizes.sum() == 1 or all(np.all(r == rows[0][0]) for r in rows):
        return level, level, level
    rng = np.random.default_rng(seed)
    pad = np.full((len(rows), sizes.max()), np.nan)
    for i, r in enumerate(rows):
        pad[i, :r.size] = r
    pick = rng.integers(0, len(rows), (n_resamples, len(rows)))          # seeds drawn
    k = sizes[pick][..., None]                                           # their split counts
    idx = np.minimum((rng.random((*pick.shape, sizes.max())) * k).astype(np.int64), k - 1)
    vals = np.where(np.arange(sizes.max()) < k, pad[pick[..., None], idx], np.nan)
    stat = np.nanmedian(vals, axis=-1).mean(axis=-1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stat, [tail, 1.0 - tail])
    return level, float(lo), float(hi)


# -- the seed-level paired test ------------------------------------------------------------------
def _t_test(x: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised one-sample t-test over the last axis (no NaN): mean, interval half-width, p."""
    n = x.shape[-1]
    mean = x.mean(axis=-1)
    if n < 2:
        nan = np.full(mean.shape, np.nan)
        return mean, nan, nan
    se = x.std(axis=-1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / se
    p = 2.0 * _stats.t.sf(np.abs(t), n - 1)
    p = np.where(se > 0, p, np.where(mean == 0, 1.0, np.nan))  # no spread: no t-test (unless all 0)
    half = _stats.t.ppf(0.5 + confidence / 2.0, n - 1) * se
    return mean, half, p


def seed_test(per_seed: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """The seed-level test of per-seed paired differences (NaN seeds left out): their mean, its
    t interval, the two-sided one-sample t-test p, and how many seeds are up (difference > 0).

    Needs 2 seeds for an interval and a p (NaN otherwise).  Valid when the seeds are independent
    runs and their differences roughly normal (each is a median of many splits)."""
    d = np.asarray(per_seed, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"seeds": 0, "diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan,
                "p": math.nan, "seeds_up": 0}
    mean, half, p = (float(v) for v in _t_test(d, confidence))
    return {"seeds": int(d.size), "diff": mean, "diff_ci_low": mean - half, "diff_ci_high": mean + half,
            "p": p, "seeds_up": int((d > 0).sum())}


def paired_difference(other, baseline, confidence: float = CONFIDENCE) -> dict:
    """``other - baseline``, two aligned (seeds x splits) matrices (NaN: no pair there).

    Returns :func:`seed_test`'s fields plus ``pairs`` (pairs used), ``seed_diffs`` (per seed, the
    median of its per-split differences) and ``seed_p`` (per seed, the two-sided Wilcoxon p over
    its splits: a statement about that pretraining run only, and optimistic since splits overlap)."""
    o, b = np.asarray(other, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if o.shape != b.shape:
        raise ValueError(f"paired_difference needs aligned matrices, got {o.shape} and {b.shape}")
    d = o - b
    seed_diffs, seed_p, pairs = [], [], 0
    for row in d:
        row = row[np.isfinite(row)]
        pairs += row.size
        seed_diffs.append(float(np.median(row)) if row.size else math.nan)
        seed_p.append(wilcoxon_p(row) if row.size else math.nan)
    return {**seed_test(seed_diffs, confidence), "pairs": int(pairs), "seed_diffs": seed_diffs, "seed_p": seed_p}


def seed_test_p(baseline: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The p-value of :func:`paired_difference` for many complete studies at once: arrays
    (studies, seeds, splits) -> (studies,)."""
    per_seed = np.median(np.asarray(other, np.float64) - np.asarray(baseline, np.float64), axis=-1)
    return _t_test(per_seed, CONFIDENCE)[2]


def pooled_wilcoxon_p(baseline: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The test this module does *not* use, for comparison: a Wilcoxon signed-rank test over all
    (seed, split) pairs of each study as if they were independent, (studies, seeds, splits) ->
    (studies,)."""
    d = (np.asarray(other, np.float64) - np.asarray(baseline, np.float64)).reshape(len(other), -1)
    return np.asarray(_stats.wilcoxon(d, axis=-1).pvalue, dtype=np.float64)


# -- simulated studies with a known answer -------------------------------------------------------
def simulate_pairs(n_studies: int, n_seeds: int, n_splits: int, effect: float = 0.0, *,
                   rng: np.random.Generator, seed_sd: float = NOISE["seed_sd"],
                   split_sd: float = NOISE["split_sd"], split_corr: float = NOISE["split_corr"],
                   shared_split_sd: float = NOISE["shared_split_sd"], level: float = 0.5,
                   seed_dist: str = "normal") -> tuple[np.ndarray, np.ndarray]:
    """(baseline, other) SRCC arrays (studies, seeds, splits) of studies whose true difference is
    ``effect``.  Run (strategy, seed) on split k scores

        level [+ effect] + a_k + u_run + split_sd * (sqrt(rho) z_run + sqrt(1 - rho) z_run,k)

    with a_k ~ N(0, shared_split_sd) common to every run on split k (its test set), u_run the
    seed effect (sd ``seed_sd / sqrt 2`` per side, so the gain of a seed over its baseline seed
    varies with sd ``seed_sd``; ``seed_dist="t3"``: heavy-tailed, Student t with 3 df scaled to
    that sd) and the rest noise correlated ``split_corr`` between the splits of one run."""
    shape = (n_studies, n_seeds, n_splits)
    a = rng.normal(0.0, shared_split_sd, (n_studies, 1, n_splits))

    def run() -> np.ndarray:
        if seed_dist == "normal":
            u = rng.normal(0.0, 1.0, (n_studies, n_seeds, 1))
        elif seed_dist == "t3":
            u = rng.standard_t(3, (n_studies, n_seeds, 1)) / math.sqrt(3.0)
        else:
            raise ValueError(f"seed_dist {seed_dist!r}: normal or t3")
        common = rng.normal(0.0, 1.0, (n_studies, n_seeds, 1))
        own = rng.normal(0.0, 1.0, shape)
        noise = split_sd * (math.sqrt(split_corr) * common + math.sqrt(1.0 - split_corr) * own)
        return level + a + u * seed_sd / math.sqrt(2.0) + noise

    base = run()
    return base, run() + effect


def rejection_rate(n_seeds: int, n_splits: int = 10, effect: float = 0.0, *, n_studies: int = 1000,
                   alpha: float = 0.05, seed: int = 0, test: str = "seed", **noise) -> float:
    """The share of simulated studies whose p is below ``alpha``: the size of the test when
    ``effect`` is 0, its power otherwise.  ``test``: ``seed`` (this module's test) or ``pooled``
    (Wilcoxon over all pairs, for comparison)."""
    base, other = simulate_pairs(n_studies, n_seeds, n_splits, effect, rng=np.random.default_rng(seed), **noise)
    p = seed_test_p(base, other) if test == "seed" else pooled_wilcoxon_p(base, other)
    return float(np.mean(p < alpha))


# -- a study's long table -> its table -----------------------------------------------------------
def _check_long(long: pd.DataFrame, value: str) -> None:
    missing = [c for c in ("strategy", "seed", "split", "test_set", "protocol", value) if c not in long.columns]
    if missing:
        raise BiqaError(f"study table: the long table lacks columns {missing} (has {list(long.columns)})")


def _baseline_rows(long: pd.DataFrame, baseline: str, protocol, test_set, step) -> pd.DataFrame:
    """The baseline's rows to pair with a cell: same protocol and test set, and the same step
    when the baseline has it (a baseline with one step, e.g. random weights, pairs with all)."""
    b = long[(long["strategy"] == baseline) & (long["protocol"] == protocol) & (long["test_set"] == test_set)]
    if step is not None and "step" in b.columns:
        steps = b["step"].unique()
        if step in steps:
            b = b[b["step"] == step]
        elif len(steps) != 1:
            return b.iloc[0:0]
    return b


def align(other: pd.DataFrame, base: pd.DataFrame, value: str = "srcc") -> tuple[np.ndarray, np.ndarray, list]:
    """Two strategies' (seed x split) matrices on their common splits: seeds paired by label, or
    every seed with the baseline's only seed (a deterministic baseline); returns the seeds kept."""
    om, oseeds, osplits = seed_matrix(other, value)
    bm, bseeds, bsplits = seed_matrix(base, value)
    splits = [s for s in osplits if s in bsplits]
    oc = [osplits.index(s) for s in splits]
    bc = [bsplits.index(s) for s in splits]
    if len(bseeds) == 1:
        seeds = oseeds
        b_rows = [0] * len(seeds)
    else:
        seeds = [s for s in oseeds if s in bseeds]
        b_rows = [bseeds.index(s) for s in seeds]
    o_rows = [oseeds.index(s) for s in seeds]
    return om[np.ix_(o_rows, oc)], bm[np.ix_(b_rows, bc)], seeds


def _fmt(values: Sequence[float], signed: bool = False) -> str:
    return " ".join("nan" if not np.isfinite(v) else (f"{v:+.3f}" if signed else f"{v:.3f}") for v in values)


def study_table(long: pd.DataFrame, baseline: str, *, value: str = "srcc", confidence: float = CONFIDENCE,
                n_resamples: int = N_RESAMPLES, seed: int = BOOT_SEED) -> pd.DataFrame:
    """The study table from a long table (one row per strategy, seed, split, test set, protocol
    and, optionally, pretraining ``step``): one row per strategy x protocol x test set [x step].

    Columns: ``seeds``, ``splits`` (the most any seed has), ``median`` (mean over seeds of the
    per-seed medians) with ``ci_low``/``ci_high`` (:func:`hierarchical_ci`), ``per_seed`` (the
    medians), and against ``baseline`` over the shared (seed, split) pairs: ``diff``,
    ``diff_ci_low``/``diff_ci_high``, ``p`` (:func:`paired_difference`), ``seeds_up`` ("2/3"),
    ``seed_diffs`` and ``seed_p`` (per seed), ``pairs``.  The baseline's own row has no difference."""
    _check_long(long, value)
    if baseline not in set(long["strategy"]):
        raise BiqaError(f"study table: baseline {baseline!r} is not among the strategies "
                        f"{sorted(map(str, long['strategy'].unique()))}")
    by = [*KEYS, *(["step"] if "step" in long.columns else [])]
    out = []
    for key, rows in long.groupby(by, sort=False):
        cell = dict(zip(by, key))
        m, seeds, splits = seed_matrix(rows, value)
        level, lo, hi = hierarchical_ci(m, confidence, n_resamples, seed)
        row = {**cell, "seeds": len(seeds), "splits": int(np.isfinite(m).sum(axis=1).max()), "median": level,
               "ci_low": lo, "ci_high": hi, "per_seed": _fmt(per_seed_medians(m)), "baseline": baseline,
               "diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "p": math.nan,
               "seeds_up": "", "seed_diffs": "", "seed_p": "", "pairs": 0}
        base = _baseline_rows(long, baseline, cell["protocol"], cell["test_set"], cell.get("step"))
        if cell["strategy"] != baseline and len(base):
            o, b, _ = align(rows, base, value)
            d = paired_difference(o, b, confidence)
            row.update({k: d[k] for k in ("diff", "diff_ci_low", "diff_ci_high", "p", "pairs")},
                       seeds_up=f"{d['seeds_up']}/{d['seeds']}", seed_diffs=_fmt(d["seed_diffs"], signed=True),
                       seed_p=_fmt(d["seed_p"]))
        out.append(row)
    table = pd.DataFrame(out)
    return table.sort_values([c for c in by if c != "strategy"], kind="stable").reset_index(drop=True)


def seed_medians(long: pd.DataFrame, value: str = "srcc") -> pd.DataFrame:
    """Per strategy, protocol, test set, step and seed: the median of ``value`` over the splits."""
    _check_long(long, value)
    if "step" not in long.columns:
        raise BiqaError("study curves need a 'step' column (the pretraining step of each snapshot)")
    return long.groupby([*KEYS, "step", "seed"], sort=False)[value].median().reset_index()


def seed_curves(long: pd.DataFrame, value: str = "srcc") -> pd.DataFrame:
    """Per strategy, protocol, test set and step: the per-seed medians' mean, min and max over
    seeds (what :func:`biqabench.base.plots.study_plot` draws)."""
    per_seed = seed_medians(long, value)
    agg = per_seed.groupby([*KEYS, "step"], sort=False)[value].agg(["mean", "min", "max", "count"])
    return agg.reset_index().rename(columns={"count": "seeds"})


__all__ = ["BOOT_SEED", "CONFIDENCE", "KEYS", "NOISE", "N_RESAMPLES", "align", "hierarchical_ci",
           "paired_difference", "per_seed_medians", "pooled_wilcoxon_p", "rejection_rate", "seed_curves",
           "seed_matrix", "seed_medians", "seed_test", "seed_test_p", "simulate_pairs", "study_table"]
