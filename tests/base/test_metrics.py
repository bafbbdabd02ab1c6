"""Metrics: correlations agree with scipy, the logistic mapping fits what it should and falls back
(recorded, never raised) when it cannot, and split aggregation is reproducible."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from biqabench.base import metrics as M


@pytest.fixture
def scores():
    rng = np.random.default_rng(7)
    mos = rng.uniform(1, 5, 120)
    pred = 0.3 * mos**2 + rng.normal(0, 0.6, 120)
    pred[:10] = np.round(pred[:10])  # some ties
    mos[10:20] = 3.0
    return pred, mos


def test_correlations_match_scipy(scores):
    pred, mos = scores
    assert M.srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos).statistic, abs=1e-12)
    assert M.krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos).statistic, abs=1e-12)
    assert M.plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos).statistic, abs=1e-12)
    assert M.rmse(pred, mos) == pytest.approx(math.sqrt(np.mean((pred - mos) ** 2)))


def test_krcc_is_tau_b_by_pair_counting():
    pred = [1, 2, 2, 3, 5, 4, 4]
    mos = [1, 1, 2, 4, 3, 5, 5]
    conc = disc = tie_x = tie_y = 0
    for i, j in itertools.combinations(range(len(pred)), 2):
        dx, dy = pred[i] - pred[j], mos[i] - mos[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tie_x += 1
        elif dy == 0:
            tie_y += 1
        elif dx * dy > 0:
            conc += 1
        else:
            disc += 1
    tau_b = (conc - disc) / math.sqrt((conc + disc + tie_x) * (conc + disc + tie_y))
    assert M.krcc(pred, mos) == pytest.approx(tau_b)


def test_anticorrelated_and_perfect():
    x = np.arange(10.0)
    assert M.srcc(x, x**3) == pytest.approx(1.0)
    assert M.srcc(-x, x) == pytest.approx(-1.0)
    assert M.plcc(2 * x + 1, x) == pytest.approx(1.0)


def test_logistic_recovers_known_parameters():
    rng = np.random.default_rng(0)
    b = (4.6, 1.3, 0.2, 0.12)
    x = rng.uniform(-0.6, 1.0, 400)
    y = M.logistic4(x, *b) + rng.normal(0, 0.03, x.size)
    mapping = M.fit_logistic(x, y)
    assert mapping.kind == "logistic"
    assert mapping.params == pytest.approx(b, rel=0.05)
    m = M.compute_metrics(x, y)
    assert m["mapping"] == "logistic"
    assert m["plcc_logistic"] > m["plcc"] + 0.02  # the S-shape is what raw PLCC misses
    assert m["rmse_logistic"] == pytest.approx(0.03, rel=0.2)  # residual is the noise we added


def test_logistic_is_scale_free_and_handles_falling_curves():
    rng = np.random.default_rng(1)
    mos = rng.uniform(0, 100, 300)
    pred = -5000.0 * np.tanh((mos - 50) / 20) + 1e6 + rng.normal(0, 300, 300)  # huge offset, lower = better
    m = M.compute_metrics(pred, mos)
    assert m["mapping"] == "logistic"
    assert m["srcc"] < -0.9
    assert m["plcc_logistic"] > 0.95 > abs(m["plcc"]) - 0.05
    assert m["rmse_logistic"] < 10


def _no_warnings(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_constant_predictions_give_nan_not_errors():
    mos = np.linspace(1, 5, 20)
    m = _no_warnings(M.compute_metrics, np.full(20, 0.5), mos)
    assert math.isnan(m["srcc"]) and math.isnan(m["krcc"]) and math.isnan(m["plcc"])
    assert m["mapping"] == "none"
    assert m["n"] == 20


def test_constant_mos_falls_back_to_linear():
    m = _no_warnings(M.compute_metrics, np.linspace(0, 1, 12), np.full(12, 3.0))
    assert m["mapping"] == "linear-fallback"
    assert math.isnan(m["srcc"])
    assert m["rmse_logistic"] == pytest.approx(0.0, abs=1e-9)


def test_too_few_points_fall_back_to_linear():
    m = M.compute_metrics([0.1, 0.5, 0.9], [1.0, 2.5, 4.0])
    assert m["mapping"] == "linear-fallback"
    assert m["plcc_logistic"] == pytest.approx(abs(m["plcc"]))
    assert M.compute_metrics([0.3], [2.0])["mapping"] == "none"


def test_nan_pairs_are_left_out_and_counted():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=30)
    y = 2 * x + rng.normal(0, 0.1, 30)
    x_nan = x.copy()
    x_nan[[3, 7]] = np.nan
    y[11] = np.inf
    m = M.compute_metrics(x_nan, y)
    keep = np.isfinite(x_nan) & np.isfinite(y)
    assert (m["n"], m["n_invalid"]) == (27, 3)
    assert m["srcc"] == pytest.approx(stats.spearmanr(x[keep], y[keep]).statistic)
    all_nan = M.compute_metrics([np.nan] * 5, [1, 2, 3, 4, 5])
    assert all_nan["n"] == 0 and all_nan["mapping"] == "none" and math.isnan(all_nan["plcc_logistic"])


def test_failed_or_nonfinite_fit_falls_back(monkeypatch):
    x = np.linspace(0, 1, 30)
    y = x**2

    def fails(*a, **k):
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr(M.optimize, "curve_fit", fails)
    fit = M.fit_logistic(x, y)
    assert fit.kind == "linear-fallback" and "maxfev" in fit.reason
    assert M.compute_metrics(x, y)["mapping"] == "linear-fallback"

    monkeypatch.setattr(M.optimize, "curve_fit", lambda *a, **k: (np.array([np.nan, 0, 0, 1.0]), None))
    assert M.fit_logistic(x, y).kind == "linear-fallback"


def test_degenerate_fits_are_rejected(monkeypatch):
    """A step parked beyond the data (every prediction -> one value) or a fit worse than a line."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, 50)
    y = x + rng.normal(0, 0.3, 50)
    monkeypatch.setattr(M.optimize, "curve_fit", lambda f, xz, yz, **k: (np.array([1.0, 0.0, 50.0, 0.01]), None))
    fit = M.fit_logistic(x, y)
    assert fit.kind == "linear-fallback" and "one value" in fit.reason
    m = M.compute_metrics(x, y)
    assert m["plcc_logistic"] == pytest.approx(m["plcc"])  # the line keeps the raw correlation
    def falling(f, xz, yz, **k):  # the wrong direction: worse than any line
        return np.array([-1.0, 1.0, 0.0, 0.5]), None

    monkeypatch.setattr(M.optimize, "curve_fit", falling)
    assert "worse than a straight line" in M.fit_logistic(x, y).reason


def test_weak_relation_fits_no_worse_than_a_line():
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.normal(5, 1, 130)
        y = 0.1 * x + rng.normal(0, 1, 130)
        m = M.compute_metrics(x, y)
        assert m["mapping"] == "logistic"
        assert m["plcc_logistic"] >= abs(m["plcc"]) - 1e-6


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        M.compute_metrics([1, 2, 3], [1, 2])


def test_aggregate_median_ci_and_determinism():
    values = [0.90, 0.91, 0.88, 0.93, 0.92, 0.87, 0.90, 0.95, 0.89, 0.91]
    a = M.aggregate(values, seed=3)
    assert a["median"] == pytest.approx(np.median(values))
    assert a["mean"] == pytest.approx(np.mean(values))
    assert a["std"] == pytest.approx(np.std(values, ddof=1))
    assert a["ci_low"] <= a["median"] <= a["ci_high"]
    assert min(values) <= a["ci_low"] < a["ci_high"] <= max(values)
    assert M.aggregate(values, seed=3) == a
    others = {tuple(sorted(M.aggregate(values, seed=s, n_boot=200).items())) for s in range(5)}
    assert len(others) > 1  # the seed really drives the resampling


def test_aggregate_edge_cases():
    a = M.aggregate([0.8, np.nan, 0.9])
    assert (a["n"], a["n_nan"]) == (2, 1) and a["median"] == pytest.approx(0.85)
    one = M.aggregate([0.7])
    assert one["ci_low"] == one["ci_high"] == 0.7 and math.isnan(one["std"])
    assert math.isnan(M.aggregate([])["median"])


def test_aggregate_frame_groups_and_counts_fallbacks():
    df = pd.DataFrame({
        "test_set": ["a"] * 4 + ["b"] * 3,
        "srcc": [0.8, 0.9, 0.85, 0.7, 0.5, 0.6, np.nan],
        "plcc": [0.81, 0.91, 0.86, 0.71, 0.51, 0.61, 0.55],
        "mapping": ["logistic"] * 4 + ["logistic", "linear-fallback", "none"],
    })
    out = M.aggregate_frame(df, by=["test_set"])
    assert list(out["test_set"]) == ["a", "b"]
    a, b = out.iloc[0], out.iloc[1]
    assert a["splits"] == 4 and a["srcc_median"] == pytest.approx(0.825)
    assert b["srcc_median"] == pytest.approx(0.55) and b["plcc_median"] == pytest.approx(0.55)
    assert (a["fallbacks"], b["fallbacks"]) == (0, 2)
    assert "krcc_median" not in out.columns  # only metrics present are aggregated
    with pytest.raises(ValueError, match="no column"):
        M.aggregate_frame(df, by=["train_set"])


def test_logistic5_recovers_a_vqeg_curve():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 300)
    b = (60.0, 9.0, 0.5, 10.0, 50.0)
    y = M.logistic5(x, *b) + rng.normal(0, 0.5, x.size)
    fit = M.fit_logistic(x, y, "logistic5")
    assert fit.kind == "logistic" and len(fit.params) == 5
    assert np.sqrt(np.mean((fit(x) - y) ** 2)) < 0.6
    m5, m4 = M.compute_metrics(x, y, "logistic5"), M.compute_metrics(x, y)
    assert m5["plcc_fit"] == "logistic5" and m5["rmse_logistic"] <= m4["rmse_logistic"] + 1e-9
    with pytest.raises(ValueError, match="plcc_fit"):
        M.fit_logistic(x, y, "cubic")
