"""The one home of paired statistics (biqabench.base.stats): scipy's bootstrap interval of the
median and Wilcoxon signed-rank test, and the edge cases docs/protocol.md decides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from biqabench.base import metrics as M
from biqabench.base.stats import bootstrap_ci, paired_test, wilcoxon_p


def test_bootstrap_ci_is_scipys_percentile_interval_and_seeded():
    x = np.array([0.81, 0.84, 0.79, 0.88, 0.83, 0.86, 0.80])
    lo, hi = bootstrap_ci(x, seed=1)
    ref = sps.bootstrap((x,), np.median, n_resamples=2000, method="percentile",
                        random_state=np.random.default_rng(1)).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high))
    assert lo <= np.median(x) <= hi and bootstrap_ci(x, seed=1) == (lo, hi)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5) and all(map(math.isnan, bootstrap_ci([])))


def test_aggregate_uses_the_scipy_interval():
    x = [0.7, 0.75, 0.8, 0.72, 0.9]
    a = M.aggregate(x, seed=2)
    assert (a["ci_low"], a["ci_high"]) == bootstrap_ci(x, seed=2)


def test_wilcoxon_and_paired_deltas():
    base = np.array([0.70, 0.72, 0.68, 0.75, 0.71, 0.69, 0.73, 0.74])
    better = base + np.array([0.02, 0.03, 0.01, 0.04, 0.02, 0.03, 0.05, 0.02])
    t = paired_test(base, better)
    assert t["deltas"] == pytest.approx((better - base).tolist())
    assert t["median_delta"] == pytest.approx(np.median(better - base))
    assert t["ci_low"] > 0 and t["wilcoxon_p"] == pytest.approx(sps.wilcoxon(better - base).pvalue)
    assert t["wilcoxon_p"] < 0.01
    assert wilcoxon_p([0.0, 0.0]) == 1.0
    noisy = paired_test(base, base + np.array([0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.005]))
    assert noisy["wilcoxon_p"] > 0.3 and noisy["ci_low"] <= 0 <= noisy["ci_high"]


def test_paired_edge_cases_are_decided_once():
    """docs/protocol.md's table: NaN pairs dropped, no pair -> NaN, zero deltas dropped before ranking,
    fewer than two non-zero deltas -> p = 1.0."""
    assert math.isnan(wilcoxon_p([])) and math.isnan(wilcoxon_p([math.nan, math.nan]))
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0 and wilcoxon_p([0.1]) == 1.0 and wilcoxon_p([0.1, 0.0, 0.0]) == 1.0
    assert wilcoxon_p([0.1, 0.2, 0.0]) == wilcoxon_p([0.1, 0.2]) == pytest.approx(0.5)
    assert wilcoxon_p(np.full(10, 0.05)) == pytest.approx(2 / 2 ** 10)
    t = paired_test([0.5, math.nan, 0.6, 0.7], [0.6, 0.9, 0.6, 0.8])  # the NaN split is left out
    assert t["n"] == 3 and t["median_delta"] == pytest.approx(0.1) and t["wilcoxon_p"] == pytest.approx(0.5)  # 0 dropped
    none = paired_test([math.nan], [0.5])
    assert none["n"] == 0 and all(math.isnan(none[k]) for k in ("median_delta", "ci_low", "ci_high", "wilcoxon_p"))
    assert paired_test([0.5, 0.6], [0.5, 0.6])["wilcoxon_p"] == 1.0
