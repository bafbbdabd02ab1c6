"""Zero-shot test of an existing model (biqabench.evaluation.zeroshot): a run folder like eval's."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from biqabench.base.errors import BiqaError
from biqabench.evaluation.zeroshot import ZERO_SHOT, test_model

ON_CPU = {"device": "cpu", "precision": "fp32", "progress": False}


def test_a_model_tested_on_its_own_training_set_is_marked_seen(tiny_model_run, tmp_path):
    run = test_model(tiny_model_run, "demo-a, demo-a", run_dir=tmp_path / "t", **ON_CPU)  # named twice: once
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.test_set) == ["demo-a"] and list(metrics.train_set) == [ZERO_SHOT]
    assert list(metrics.kind) == ["seen"]  # its own training images: not a cross-dataset number
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "test" and manifest["status"] == "finished" and manifest["train"] == "demo-a"
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == manifest["datasets"]["demo-a"]["images"] and {"score", "pred", "mos"} <= set(preds.columns)


def test_no_test_set_is_a_one_line_error_before_any_work(tmp_path):
    with pytest.raises(BiqaError, match="--test names no dataset"):
        test_model("no-such-model", " , ", run_dir=tmp_path / "t", **ON_CPU)
    assert not (tmp_path / "t").exists()


def test_a_failure_while_scoring_is_written_to_the_manifest(tiny_model_run, tmp_path, monkeypatch):
    from biqabench.evaluation import zeroshot

    def broken(*args, **kwargs):
        raise BiqaError("disk gone")

    monkeypatch.setattr(zeroshot, "_score_table", broken)
    with pytest.raises(BiqaError, match="disk gone"):
        test_model(tiny_model_run, ["demo-b"], run_dir=tmp_path / "t", **ON_CPU)
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "disk gone"
