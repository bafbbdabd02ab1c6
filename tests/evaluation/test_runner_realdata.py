"""Real data (slow): the linear head on a CPU recipe over the CLIVE part in ../shared/data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biqabench.evaluation.runner import EvalConfig, evaluate

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_linear_head_on_clive_reports_per_split_metrics(shared_data, tmp_path):
    cfg = EvalConfig(head="linear", weights="random", backbone="resnet18", train="clive", splits=3,
                     data_root=str(shared_data), recipe="cpu", device="cpu", workers=0)
    run = evaluate(cfg, run_dir=tmp_path / "clive", progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["split"]) == [0, 1, 2] and set(metrics["test_set"]) == {"clive"}
    assert (metrics["n"] == 117).all() or metrics["n"].between(100, 130).all()  # 20% of 581
    assert np.isfinite(metrics[["srcc", "plcc", "krcc"]].to_numpy()).all()
    preds = pd.read_csv(run / "predictions.csv")
    assert preds["mos"].between(0, 100).all()
