"""Agreement between predicted quality and MOS: SRCC, KRCC, PLCC (raw and logistic-mapped), RMSE.

Why two PLCCs.  Rank correlations (SRCC, KRCC) do not care about the scale of the predictions,
but PLCC and RMSE do.  The HyperIQA/QPT codebases report the *raw* Pearson correlation of
predictions and MOS; VQEG practice first maps predictions onto the MOS scale with a monotonic
4-parameter logistic and reports PLCC/RMSE after that mapping.  Both are reported here, under
names that say which is which: ``plcc`` is raw, ``plcc_logistic`` / ``rmse_logistic`` are mapped.

Why fallbacks instead of exceptions.  A benchmark of ten splits must not die on the fifth
because a briefly diverged model predicted a constant, or a tiny test set made ``curve_fit`` give
up.  A fit that cannot be made falls back to a straight line, and if even that is impossible to
the identity; the ``mapping`` field records which one was used ("logistic", "linear-fallback",
"none").  Correlations of a constant are NaN (undefined), recorded rather than raised.

Across splits, the field reports the median; :func:`aggregate` adds mean, std and a seeded
bootstrap 95% interval of the median so two runs can be told apart from noise.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from biqabench.base.stats import bootstrap_ci

log = logging.getLogger(__name__)

#: Fewer points than this cannot pin down four logistic parameters sensibly.
MIN_POINTS_LOGISTIC = 5

#: The metrics :func:`compute_metrics` returns that are numbers worth aggregating across splits.
METRIC_COLUMNS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic")

MAPPING_LOGISTIC = "logistic"
MAPPING_LINEAR = "linear-fallback"
MAPPING_NONE = "none"


def _as_pair(pred: Iterable[float], mos: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(mos, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predictions ({x.size}) and MOS ({y.size}) differ in length")
    return x, y


def _finite_pair(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_pair(pred, mos)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _is_constant(a: np.ndarray) -> bool:
    return a.size == 0 or bool(np.all(a == a[0]))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or _is_constant(x) or _is_constant(y):
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    denom = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    if denom == 0.0 or not math.isfinite(denom):
        return math.nan
    return float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))


def plcc(pred, mos) -> float:
    """Raw Pearson linear correlation (no mapping); NaN if either side is constant.

    Pairs with a non-finite value are ignored (see :func:`compute_metrics` for the count).
    """
    return _pearson(*_finite_pair(pred, mos))


def srcc(pred, mos) -> float:
    """Spearman rank correlation: Pearson correlation of the (tie-averaged) ranks."""
    x, y = _finite_pair(pred, mos)
    if x.size < 2 or _is_constant(x) or _is_constant(y):
        return math.nan
    return _pearson(stats.rankdata(x), stats.rankdata(y))


def krcc(pred, mos) -> float:
    """Kendall rank correlation, tau-b (accounts for ties, as scipy's default and IQA codebases)."""
    x, y = _finite_pair(pred, mos)
    if x.size < 2 or _is_constant(x) or _is_constant(y):
        return math.nan
    tau = stats.kendalltau(x, y, variant="b").statistic
    return float(tau) if np.isfinite(tau) else math.nan


def rmse(pred, mos) -> float:
    """Root mean squared error; only meaningful once predictions are on the MOS scale."""
    x, y = _finite_pair(pred, mos)
    if x.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((x - y) ** 2)))


def logistic4(x, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    ``b1``/``b2`` are the upper/lower asymptotes (swap for anti-correlated predictions), ``b3``
    the midpoint, ``|b4|`` the width.  Written with ``expit`` so large arguments do not overflow.
    """
    scale = max(abs(float(b4)), 1e-12)
    return (b1 - b2) * special.expit((np.asarray(x, dtype=np.float64) - b3) / scale) + b2


def logistic5(x, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """VQEG 5-parameter logistic ``b1 * (1/2 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5``.

    The logistic part plus a linear term (VQEG FR-TV Phase II); ``1/2 - 1/(1 + e^t)`` is written
    as ``expit(t) - 1/2`` so large arguments do not overflow.
    """
    x = np.asarray(x, dtype=np.float64)
    return b1 * (special.expit(b2 * (x - b3)) - 0.5) + b4 * x + b5


#: ``plcc_fit`` values: the mapping applied before PLCC (logistic) and RMSE (logistic).
PLCC_FITS = ("logistic4", "logistic5")


@dataclass(frozen=True)
class Mapping:
    """A fitted monotonic map from predictions to the MOS scale, and how it was obtained."""

    kind: str  # "logistic" | "linear-fallback" | "none"
    params: tuple[float, ...] = ()
    reason: str = ""  # why a fallback was needed (empty for a successful logistic fit)

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind == MAPPING_LOGISTIC:
            return logistic4(x, *self.params) if len(self.params) == 4 else logistic5(x, *self.params)
        if self.kind == MAPPING_LINEAR:
            slope, intercept = self.params
            return slope * x + intercept
        return x


def _fit_linear(x: np.ndarray, y: np.ndarray, reason: str) -> Mapping:
    """Least-squares line, the fallback when the logistic cannot be fitted."""
    if x.size < 2 or _is_constant(x):
        why = "constant predictions" if x.size >= 2 else f"only {x.size} valid point(s)"
        return Mapping(MAPPING_NONE, (), f"{reason}; no linear fit either ({why})")
    slope, intercept = np.polyfit(x, y, 1)
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        return Mapping(MAPPING_NONE, (), f"{reason}; linear fit not finite")
    return Mapping(MAPPING_LINEAR, (float(slope), float(intercept)), reason)


def fit_logistic(pred, mos, kind: str = "logistic4") -> Mapping:
    """Fit the 4-parameter (or, ``kind="logistic5"``, the 5-parameter) logistic; fall back, never raise.

    The fit runs on standardised predictions and MOS (z-scores) so the same starting points work
    whatever the scales are; the parameters are converted back.  Three starts are tried and the
    lowest squared error kept: asymptotes at the MOS extremes with the midpoint at the mean
    prediction (width 1/4 and 1 standard deviation), and a wide, nearly straight curve matching
    the least-squares line.  The last makes a weak relation fit no worse than a line; without it
    ``curve_fit`` can park a step beyond the data, which maps every prediction to one value.
    A fit worse than the straight line, or one that maps everything to one value, is rejected.
    """
    x, y = _finite_pair(pred, mos)
    if x.size < MIN_POINTS_LOGISTIC:
        return _fit_linear(x, y, f"{x.size} valid points (< {MIN_POINTS_LOGISTIC}) for a logistic fit")
    if _is_constant(x):
        return _fit_linear(x, y, "constant predictions")
    if _is_constant(y):
        return _fit_linear(x, y, "constant MOS")
    mx, sx = float(x.mean()), float(x.std())
    my, sy = float(y.mean()), float(y.std())
    xz, yz = (x - mx) / sx, (y - my) / sy
    hi, lo = float(yz.max()), float(yz.min())
    slope = _pearson(xz, yz)  # least-squares slope on z-scores; intercept 0
    if slope < 0:  # anti-correlated (e.g. a lower-is-better score): a falling curve
        hi, lo = lo, hi
    if kind not in PLCC_FITS:
        raise ValueError(f"plcc_fit {kind!r} is not one of {', '.join(PLCC_FITS)}")
    func, starts = _logistic_starts(kind, hi, lo, slope)
    line_sse = float(np.sum((slope * xz - yz) ** 2))
    best: tuple[float, np.ndarray] | None = None
    reason = "logistic fit failed"
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # OptimizeWarning about the covariance is irrelevant here
                params, _ = optimize.curve_fit(func, xz, yz, p0=p0, maxfev=20000)
        except (RuntimeError, ValueError, FloatingPointError, optimize.OptimizeWarning) as exc:
            reason = f"logistic fit failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            continue
        params = np.asarray(params, dtype=np.float64)
        if not np.all(np.isfinite(params)):
            reason = "logistic fit gave non-finite parameters"
            continue
        fitted = func(xz, *params)
        if not np.all(np.isfinite(fitted)) or _is_constant(fitted):
            reason = "logistic fit maps every prediction to one value"
            continue
        sse = float(np.sum((fitted - yz) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    if best is not None and best[0] > line_sse * (1 + 1e-6) + 1e-12:
        reason, best = "logistic fit is worse than a straight line", None
    if best is None:
        log.debug("falling back to a linear mapping: %s", reason)
        return _fit_linear(x, y, reason)
    if kind == "logistic5":  # back from z-scores: y = my + sy * f((x - mx) / sx)
        b1, b2, b3, b4, b5 = (float(p) for p in best[1])
        return Mapping(MAPPING_LOGISTIC, (sy * b1, b2 / sx, mx + sx * b3, sy * b4 / sx, my + sy * b5 - sy * b4 * mx / sx))
    b1, b2, b3, b4 = (float(p) for p in best[1])
    return Mapping(MAPPING_LOGISTIC, (my + sy * b1, my + sy * b2, mx + sx * b3, sx * abs(b4)))


def _logistic_starts(kind: str, hi: float, lo: float, slope: float):
    """The curve and its starting points on z-scores: steep and gentle S-curves between the MOS
    extremes, and a nearly straight one matching the least-squares line (``slope``)."""
    if kind == "logistic5":
        sign = 1.0 if slope >= 0 else -1.0
        rng = abs(hi - lo)
        return logistic5, ([rng * sign, 4.0, 0.0, 0.0, 0.0], [rng * sign, 1.0, 0.0, 0.0, 0.0],
                           [0.1 * sign, 1.0, 0.0, slope, 0.0])
    wide = 3.0  # near x = b3 the logistic has slope (b1 - b2) / (4 |b4|): match the line there
    return logistic4, ([hi, lo, 0.0, 0.25], [hi, lo, 0.0, 1.0], [2 * wide * slope, -2 * wide * slope, 0.0, wide])


def compute_metrics(pred, mos, plcc_fit: str = "logistic4") -> dict:
    """All per-test-set numbers for one split.

    Returns ``n`` (pairs used), ``n_invalid`` (pairs dropped for a NaN/inf prediction or MOS),
    ``srcc``, ``krcc``, ``plcc`` (raw Pearson), ``plcc_logistic`` and ``rmse_logistic`` (after
    mapping predictions onto the MOS scale) and ``mapping`` (which map was used).
    """
    x_all, y_all = _as_pair(pred, mos)
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    x, y = x_all[keep], y_all[keep]
    n_invalid = int((~keep).sum())
    if n_invalid:
        log.warning("%d of %d prediction/MOS pairs are NaN or infinite and were left out", n_invalid, keep.size)
    mapping = fit_logistic(x, y, plcc_fit)
    mapped = mapping(x)
    return {
        "n": int(x.size),
        "n_invalid": n_invalid,
        "srcc": srcc(x, y),
        "krcc": krcc(x, y),
        "plcc": _pearson(x, y),
        "plcc_logistic": _pearson(mapped, y),
        "rmse_logistic": rmse(mapped, y) if x.size else math.nan,
        "mapping": mapping.kind,
        "plcc_fit": plcc_fit,
    }


# -- aggregation across splits -------------------------------------------------------------------
def aggregate(values: Sequence[float], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Median, mean, sample std and a bootstrap interval of the median over splits.

    NaN values (a split whose metric was undefined) are left out and counted in ``n_nan``.  The
    interval is ``scipy.stats.bootstrap``'s percentile interval of the median with a seeded
    generator (:func:`biqabench.base.stats.bootstrap_ci`), so the same values give the same interval.
    """
    a = np.asarray(list(values), dtype=np.float64).reshape(-1)
    finite = a[np.isfinite(a)]
    n = int(finite.size)
    out = {"median": math.nan, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "n": n, "n_nan": int(a.size - n)}
    if n == 0:
        return out
    out["median"] = float(np.median(finite))
    out["mean"] = float(finite.mean())
    out["std"] = float(finite.std(ddof=1)) if n > 1 else math.nan
    out["ci_low"], out["ci_high"] = bootstrap_ci(finite, confidence=confidence, n_resamples=n_boot, seed=seed)
    return out


def aggregate_frame(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] | None = None,
                    n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per group of ``by`` with ``<metric>_<stat>`` columns and ``splits`` (rows per group).

    ``metrics`` defaults to every column of :data:`METRIC_COLUMNS` present in ``df``.  If a
    ``mapping`` column is present, ``fallbacks`` counts splits whose mapping was not logistic.
    """
    by = list(by)
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise ValueError(f"aggregate_frame: no column(s) {missing} in {list(df.columns)}")
    metrics = [m for m in (metrics or METRIC_COLUMNS) if m in df.columns]
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["splits"] = len(group)
        for m in metrics:
            stats_ = aggregate(pd.to_numeric(group[m], errors="coerce").to_numpy(dtype=float), n_boot=n_boot, seed=seed)
            for stat in ("median", "mean", "std", "ci_low", "ci_high"):
                row[f"{m}_{stat}"] = stats_[stat]
        if "mapping" in group.columns:
            row["fallbacks"] = int((group["mapping"].astype(str) != MAPPING_LOGISTIC).sum())
        rows.append(row)
    columns = by + ["splits"] + [f"{m}_{s}" for m in metrics for s in ("median", "mean", "std", "ci_low", "ci_high")]
    if "mapping" in df.columns:
        columns.append("fallbacks")
    return pd.DataFrame(rows, columns=columns)


def metrics_rows(split: int, train_name: str, test_name: str, kind: str, table, idx, pred_norm,
                 plcc_fit: str = "logistic4") -> tuple[list, dict]:
    """(prediction rows, metrics row) for one test set of one split: ``pred_norm`` (0..1 scores of
    ``table``'s images at ``idx``) back on the native scale, scored against the MOS; these rows are
    what a run's ``predictions.csv`` and ``metrics.csv`` hold (eval, probe and zero-shot alike)."""
    mos = table.mos[idx]
    pred = table.to_native(pred_norm)
    m = compute_metrics(pred, mos, plcc_fit)
    row = {"split": split, "train_set": train_name, "test_set": test_name, "kind": kind, **m}
    preds = [{"split": split, "test_set": test_name, "image": table.names[i], "mos": float(mos[j]),
              "pred": float(pred[j]), "pred_norm": float(pred_norm[j])} for j, i in enumerate(idx)]
    return preds, row
