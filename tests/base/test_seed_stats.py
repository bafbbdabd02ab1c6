"""Statistics that count the seeds (biqabench.base.seed_stats): checked on simulated studies whose
answer is known.  numpy only, fixed seeds, a few seconds in all."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from biqabench.base import seed_stats as S
from biqabench.base.errors import BiqaError
from biqabench.base.stats import wilcoxon_p

DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _documented_power() -> dict[int, float]:
    """The power docs/protocol.md states for +0.05 SRCC with 3 and 5 seeds x 10 splits."""
    text = DOCS.read_text(encoding="utf-8")
    found = dict(re.findall(r"power\[(\d+) seeds\] = (0\.\d+)", text))
    assert set(found) >= {"3", "5"}, "docs/protocol.md must state the power for 3 and 5 seeds"
    return {int(k): float(v) for k, v in found.items()}


# -- calibration and power ------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", [3, 5])
def test_the_seed_test_rejects_a_true_null_at_five_percent(seeds):
    # 1,000 simulated null studies (seed and split noise as measured on CLIVE: S.NOISE), 10 splits
    rate = S.rejection_rate(seeds, 10, 0.0, n_studies=1000, seed=11)
    assert 0.03 <= rate <= 0.07


def test_a_test_over_all_pairs_would_be_miscalibrated():
    # what docs/protocol.md warns about: splits of one seed are correlated and seeds differ, so
    # a Wilcoxon over the 30 (seed, split) pairs as if independent rejects a true null far too often
    rate = S.rejection_rate(3, 10, 0.0, n_studies=300, seed=12, test="pooled")
    assert rate > 0.2


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_power_the_docs_state_for_a_005_gain(seeds):
    power = S.rejection_rate(seeds, 10, 0.05, n_studies=1000, seed=13)
    assert power == pytest.approx(_documented_power()[seeds], abs=0.04)


def test_more_seeds_give_more_power_and_no_more_false_alarms():
    p3 = S.rejection_rate(3, 10, 0.05, n_studies=1000, seed=14)
    p5 = S.rejection_rate(5, 10, 0.05, n_studies=1000, seed=14)
    assert p5 > p3 + 0.1


def test_the_t_interval_covers_the_true_difference_at_95_percent():
    base, other = S.simulate_pairs(1000, 3, 10, 0.05, rng=np.random.default_rng(15))
    covered = 0
    for b, o in zip(base, other):
        d = S.paired_difference(o, b)
        covered += d["diff_ci_low"] <= 0.05 <= d["diff_ci_high"]
    assert 0.93 <= covered / 1000 <= 0.97


def test_simulated_noise_has_the_stated_structure():
    base, other = S.simulate_pairs(4000, 3, 10, 0.0, rng=np.random.default_rng(16))
    gain = (other - base).mean(axis=-1)  # per-seed gains: seed sd plus the split noise that stays
    expected = math.sqrt(S.NOISE["seed_sd"] ** 2 + 2 * S.NOISE["split_sd"] ** 2
                         * (S.NOISE["split_corr"] + (1 - S.NOISE["split_corr"]) / 10))
    assert gain.std() == pytest.approx(expected, rel=0.05)
    assert abs(gain.mean()) < 0.003


# -- the pieces -----------------------------------------------------------------------------------
def test_seed_test_is_scipys_one_sample_t_test():
    d = [0.080, 0.030, 0.034]  # the per-seed gains of the demo-default QPT on CLIVE (issue 26)
    t = S.seed_test(d)
    ref = sps.ttest_1samp(d, 0.0)
    ci = ref.confidence_interval(0.95)
    assert t["p"] == pytest.approx(ref.pvalue)
    assert (t["diff_ci_low"], t["diff_ci_high"]) == pytest.approx((ci.low, ci.high))
    assert t["diff"] == pytest.approx(np.mean(d)) and t["seeds"] == 3 and t["seeds_up"] == 3
    assert math.isnan(S.seed_test([0.05])["p"]) and S.seed_test([0.0, 0.0])["p"] == 1.0
    assert S.seed_test([float("nan"), 0.01, -0.02])["seeds"] == 2


def test_paired_difference_lists_each_seed():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.03, (3, 10))
    other = base + np.array([[0.08], [0.03], [-0.01]]) + rng.normal(0, 0.01, (3, 10))
    other[2, 4] = np.nan  # a missing cell drops that pair only
    d = S.paired_difference(other, base)
    want = [float(np.nanmedian(other[r] - base[r])) for r in range(3)]
    assert d["seed_diffs"] == pytest.approx(want)
    assert d["seed_p"][0] == pytest.approx(wilcoxon_p(other[0] - base[0]))
    assert d["pairs"] == 29 and d["seeds_up"] == 2 and d["diff"] == pytest.approx(np.mean(want))


def test_hierarchical_interval_counts_the_seed_spread():
    # splits agree within a seed, seeds disagree: the interval must be as wide as the seeds say,
    # where a bootstrap that pools all 30 values as if independent is far too narrow
    rng = np.random.default_rng(1)
    m = np.array([[0.45], [0.50], [0.58]]) + rng.normal(0, 0.005, (3, 10))
    level, lo, hi = S.hierarchical_ci(m, seed=3)
    assert level == pytest.approx(np.mean(np.median(m, axis=1)))
    assert lo < level < hi and hi - lo > 0.08
    pooled = np.quantile([np.median(rng.choice(m.ravel(), m.size)) for _ in range(2000)], [0.025, 0.975])
    assert pooled[1] - pooled[0] < (hi - lo) / 2
    assert S.hierarchical_ci(m, seed=3) == (level, lo, hi)  # seeded
    one = S.hierarchical_ci([[0.4, 0.5, 0.6, 0.55]], seed=0)  # one seed: a bootstrap over its splits
    assert one[1] >= 0.4 and one[2] <= 0.6
    assert S.hierarchical_ci([[0.5, np.nan]]) == (0.5, 0.5, 0.5)
    assert all(map(math.isnan, S.hierarchical_ci([[np.nan]])))


def test_unbalanced_seeds_resample_only_their_own_splits():
    m = np.array([[0.5, 0.5, np.nan, np.nan], [0.7, 0.7, 0.7, 0.7]])
    level, lo, hi = S.hierarchical_ci(m, seed=0)
    assert level == pytest.approx(0.6) and lo == pytest.approx(0.5) and hi == pytest.approx(0.7)


# -- the study table and its plot ----------------------------------------------------------------
def _long(effect=0.05, seeds=(0, 1, 2), splits=10, steps=(None,), rng_seed=2) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    base, other = S.simulate_pairs(1, len(seeds), splits, effect, rng=rng)
    rows = []
    for step in steps:
        grow = 0.0 if step is None else step / max(s for s in steps)
        for name, m in (("random", base[0]), ("qpt", other[0] + 0.02 * grow)):
            for r, seed in enumerate(seeds):
                for k in range(splits):
                    row = {"strategy": name, "seed": seed, "split": k, "test_set": "clive",
                           "protocol": "probe", "srcc": m[r, k]}
                    if step is not None:
                        row["step"] = 0 if name == "random" else step
                    rows.append(row)
    long = pd.DataFrame(rows)
    return long.drop_duplicates(subset=[c for c in long.columns if c != "srcc"])


def test_study_table_rows_and_the_baseline_difference():
    long = _long()
    t = S.study_table(long, "random")
    assert list(t["strategy"]) == ["random", "qpt"]
    qpt, rnd = t.iloc[1], t.iloc[0]
    o, b, seeds = S.align(long[long.strategy == "qpt"], long[long.strategy == "random"])
    d = S.paired_difference(o, b)
    assert qpt["diff"] == pytest.approx(d["diff"]) and qpt["p"] == pytest.approx(d["p"])
    assert qpt["seeds_up"] == f"{d['seeds_up']}/3" and qpt["pairs"] == 30 and seeds == [0, 1, 2]
    assert qpt["seed_diffs"] == " ".join(f"{v:+.3f}" for v in d["seed_diffs"])
    assert qpt["ci_low"] <= qpt["median"] <= qpt["ci_high"] and qpt["seeds"] == 3 and qpt["splits"] == 10
    assert math.isnan(rnd["diff"]) and rnd["seeds_up"] == ""


def test_a_deterministic_baseline_pairs_with_every_seed_and_steps_pair_with_step_zero():
    long = _long(steps=(100, 200))
    one_seed = long[(long.strategy == "qpt") | (long.seed == 0)]  # the baseline has seed 0 only
    t = S.study_table(one_seed, "random")
    row = t[(t.strategy == "qpt") & (t.step == 200)].iloc[0]
    assert row["pairs"] == 30 and row["seeds_up"].endswith("/3")
    assert set(t["step"]) == {0, 100, 200}


def test_study_table_refuses_bad_input():
    long = _long()
    with pytest.raises(BiqaError, match="baseline 'imagenet'"):
        S.study_table(long, "imagenet")
    with pytest.raises(BiqaError, match="lacks columns"):
        S.study_table(long.drop(columns="protocol"), "random")
    with pytest.raises(BiqaError, match="appears 2 times"):
        S.study_table(pd.concat([long, long.iloc[:1]]), "random")


def test_study_plot_writes_a_png(tmp_path):
    from biqabench.base.plots import study_plot

    long = _long(steps=(100, 200, 400))
    curves = S.seed_curves(long)
    q = curves[(curves.strategy == "qpt") & (curves.step == 400)].iloc[0]
    per_seed = long[(long.strategy == "qpt") & (long.step == 400)].groupby("seed")["srcc"].median()
    assert q["mean"] == pytest.approx(per_seed.mean()) and q["min"] == pytest.approx(per_seed.min())
    out = study_plot(long, tmp_path / "study.png", title="demo")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BiqaError, match="step"):
        study_plot(long.drop(columns="step"), tmp_path / "x.png")
