"""Paired statistics: scipy's bootstrap and Wilcoxon, logistic5, `results compare` pairing by split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from biqabench.base import metrics as M
from biqabench import results as R
from biqabench.cli import app
from biqabench.evaluation.compare import compare_paired, paired_gain, splits_difference
from biqabench.data import IQATable, make_splits
from biqabench.data.splitfiles import write_split_files
from biqabench.base.errors import BiqaError
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


# -- results compare on generated run folders ---------------------------------------------------
def _table(n=60) -> IQATable:
    names = [f"img{i:03d}.jpg" for i in range(n)]
    return IQATable("clive", None, [Path("/x") / s for s in names], names, np.linspace(0, 100, n), (0, 100))


def _fake_run(root: Path, name: str, srcc: list[float], weights="random", seed0=0, backbone="resnet18") -> Path:
    table = _table()
    run = root / name
    run.mkdir(parents=True)
    splits = make_splits(table, n=len(srcc), seed=seed0, val_frac=0.1)
    R.write_manifest(run, kind="eval", head="linear", weights=weights, backbone=backbone, train="clive",
                     seeds=[s.seed for s in splits], status="finished",
                     split_files=write_split_files(run, table, splits))
    for k, v in enumerate(srcc):
        R.write_metrics(run, pd.DataFrame([{"split": k, "train_set": "clive", "test_set": "clive", "srcc": v,
                                            "krcc": v, "plcc": v, "plcc_logistic": v, "rmse_logistic": 1.0,
                                            "mapping": "logistic", "n": 12}]), split=k)
    return run


def test_compare_pairs_by_seed_and_reports_delta_ci_p(tmp_path):
    a = _fake_run(tmp_path, "a", [0.60, 0.62, 0.58, 0.65, 0.61])
    b = _fake_run(tmp_path, "b", [0.63, 0.66, 0.60, 0.69, 0.64], weights="imagenet")
    summary, per_split = compare_paired([a, b])
    row = summary[summary.metric == "srcc"].iloc[0]
    assert row["delta (median)"] == pytest.approx(0.03)
    assert row["Wilcoxon p"] == pytest.approx(0.0625)  # 5 positive deltas: the smallest p five splits allow
    assert "linear/random/resnet18" in summary.columns and "linear/imagenet/resnet18" in summary.columns
    deltas = per_split[per_split.metric == "srcc"].iloc[0]
    assert [deltas[f"seed {s}"] for s in range(5)] == pytest.approx([0.03, 0.04, 0.02, 0.04, 0.03])


def test_compare_refuses_runs_on_other_splits_in_one_line(tmp_path):
    a = _fake_run(tmp_path, "a", [0.6, 0.62, 0.58])
    c = _fake_run(tmp_path, "c", [0.6, 0.62, 0.58], seed0=10)
    with pytest.raises(BiqaError, match="split seeds differ") as err:
        compare_paired([a, c])
    assert "\n" not in str(err.value) and "--splits-from" in str(err.value)
    d = _fake_run(tmp_path, "d", [0.6, 0.62, 0.58])
    (d / "splits" / "split_1.csv").write_text((a / "splits" / "split_2.csv").read_text())  # same seeds, other split
    assert splits_difference(R.load_run(a), R.load_run(d)).startswith("split 1 (seed 1) differs")
    import shutil

    shutil.rmtree(d / "splits")  # a run from before split files: its splits cannot be checked
    assert "recorded no split files" in splits_difference(R.load_run(a), R.load_run(d))


def test_results_compare_cli_prints_the_paired_table(tmp_path, capsys):
    from conftest import invoke_cli

    a = _fake_run(tmp_path, "a", [0.60, 0.62, 0.58, 0.65, 0.61])
    b = _fake_run(tmp_path, "b", [0.63, 0.66, 0.60, 0.69, 0.64], weights="imagenet")
    out = CliRunner().invoke(app, ["results", "compare", str(a), str(b)])
    assert out.exit_code == 0, out.output
    for text in ("Wilcoxon p", "95% CI", "seed 4", "linear/imagenet/resnet18"):
        assert text in out.output
    c = _fake_run(tmp_path, "c", [0.6, 0.62, 0.58, 0.6, 0.6], seed0=3)
    code, _, line = invoke_cli(capsys, "results", "compare", a, c)
    assert code != 0 and "cannot pair" in line and "seeds differ" in line


def test_benchmark_gain_carries_the_paired_test():
    rows = []
    for w, shift in (("random", 0.0), ("qpt", 0.05)):
        for k in range(6):
            rows.append({"head": "linear", "weights": w, "train_set": "clive", "test_set": "clive", "split": k,
                         "srcc": 0.5 + 0.01 * k + shift + (0.01 if k % 2 and w == "qpt" else 0.0)})
    table = paired_gain(pd.DataFrame(rows), baseline="random")
    row = table.iloc[0]
    assert row["weights"] == "qpt vs random" and row["median delta SRCC"] == pytest.approx(0.055)
    assert row["Wilcoxon p"] == pytest.approx(sps.wilcoxon([0.05, 0.06] * 3).pvalue) and row["splits"] == 6
