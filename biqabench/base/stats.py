"""Statistics over splits: bootstrap intervals of the median, and the paired test of two runs.

Why paired.  Ten splits of one dataset vary far more between splits (which images land in the
test part) than two good models differ on the same split.  Two runs evaluated on the *same*
splits are compared split by split: the per-split delta removes the split-to-split variation, so
the median delta with its bootstrap interval and the Wilcoxon signed-rank test answer "is B better
than A?" where two side-by-side medians cannot.  :func:`paired_test` is used by ``results
compare`` and by the benchmark's gain tables, so both report the same numbers.

Both tests come from scipy: the interval is ``scipy.stats.bootstrap`` (percentile method, seeded,
2000 resamples) and the p-value ``scipy.stats.wilcoxon`` (two-sided, exact for small samples).
With 5 splits the smallest two-sided Wilcoxon p-value possible is 0.0625, with 10 it is 0.002:
five splits can show a direction, not significance at 5%.

This is the one home of paired statistics: ``results compare``, the benchmark's gain table
(:mod:`biqabench.evaluation.compare`) and ``make demo``'s last table all come from here.  The
edge cases, decided once (docs/protocol.md, "Comparing two runs"): a pair with a NaN on either side
is dropped; zero deltas are dropped before ranking (scipy's ``zero_method="wilcox"``); no finite
pair gives p = NaN (nothing was measured); fewer than two non-zero deltas give p = 1.0 (no
evidence of a difference: n non-zero deltas cannot reach a two-sided p below 2 / 2**n).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as _stats

N_RESAMPLES = 2000
BOOT_SEED = 0
CONFIDENCE = 0.95


def _finite(values) -> np.ndarray:
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).reshape(-1)
    return a[np.isfinite(a)]


def bootstrap_ci(values, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (``scipy.stats.bootstrap``), seeded.

    NaN values are left out.  One value (or all equal) gives a zero-width interval at it; none
    gives (NaN, NaN).
    """
    x = _finite(values)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1 or np.all(x == x[0]):
        return float(np.median(x)), float(np.median(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "degenerate distribution" for resamples of few distinct values
        res = _stats.bootstrap((x,), np.median, confidence_level=confidence, n_resamples=n_resamples,
                               method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return lo, hi


def wilcoxon_p(deltas) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired deltas: NaN deltas and zero deltas are
    left out; NaN with no finite delta; 1.0 with fewer than two non-zero deltas."""
    d = _finite(deltas)
    if d.size == 0:
        return math.nan
    if np.count_nonzero(d) < 2:
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sample size too small for normal approximation"
        return float(_stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_test(baseline: Sequence[float], other: Sequence[float], seed: int = BOOT_SEED) -> dict:
    """Per-split deltas ``other - baseline`` (splits already paired), their median, its bootstrap
    interval and the Wilcoxon p-value.  Pairs with a NaN on either side are dropped."""
    a = np.asarray(baseline, dtype=np.float64).reshape(-1)
    b = np.asarray(other, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired_test needs one value per split on both sides ({a.size} vs {b.size})")
    deltas = b - a
    keep = np.isfinite(deltas)
    d = deltas[keep]
    lo, hi = bootstrap_ci(d, seed=seed)
    return {"n": int(d.size), "deltas": deltas.tolist(), "median_delta": float(np.median(d)) if d.size else math.nan,
            "ci_low": lo, "ci_high": hi, "wilcoxon_p": wilcoxon_p(d)}


__all__ = ["BOOT_SEED", "CONFIDENCE", "N_RESAMPLES", "bootstrap_ci", "paired_test", "wilcoxon_p"]
