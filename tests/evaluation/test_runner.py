"""The eval protocol end to end on the embedded demo sets (tiny backbone, tiny recipe)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import biqabench.evaluation.runner as runner_mod
from biqabench.cli import app
from biqabench.base.errors import BiqaError
from biqabench.evaluation.runner import EvalConfig, evaluate

TINY = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=32, epochs=2, lr=1e-3, lr_step=0)


def tiny_config(**kw) -> EvalConfig:
    base = dict(head="linear", weights="random", backbone="tiny", splits=2, recipe="cpu", recipe_overrides=TINY,
                device="cpu", precision="fp32", workers=0)
    base.update(kw)
    return EvalConfig(**base)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return evaluate(tiny_config(), run_dir=tmp_path_factory.mktemp("run") / "r", progress=False)


def test_run_folder_has_every_artifact(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    for f in ("config.yaml", "manifest.json", "predictions.csv", "metrics.csv", "summary.md", "history.csv",
              "plots", "model.safetensors"):
        assert f in names, f
    plots = {p.name for p in (finished_run / "plots").iterdir()}
    assert {"training_curves.png", "scatter-demo-a.png", "scatter-demo-b.png"} <= plots
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["seeds"] == [0, 1]
    assert manifest["precision"] == "fp32" and manifest["device"] == "cpu"
    assert set(manifest["datasets"]) == {"demo-a", "demo-b"}
    assert all(len(d["fingerprint"]) == 64 for d in manifest["datasets"].values())
    metrics = pd.read_csv(finished_run / "metrics.csv")
    assert len(metrics) == 4  # 2 splits x (intra demo-a, cross demo-b)
    assert set(metrics["kind"]) == {"intra", "cross"}
    for col in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic", "mapping", "n"):
        assert col in metrics


def test_intra_tests_only_held_out_images(finished_run):
    from biqabench.data import load_dataset, make_splits

    table = load_dataset("demo-a")
    splits = make_splits(table, n=2, seed=0, test_frac=0.2, val_frac=0.1)
    preds = pd.read_csv(finished_run / "predictions.csv")
    for k, split in enumerate(splits):
        tested = set(preds[(preds.split == k) & (preds.test_set == "demo-a")].image)
        assert tested == {table.names[i] for i in split.test}
        assert not tested & {table.names[i] for i in np.concatenate([split.train, split.val])}
    cross = preds[(preds.split == 0) & (preds.test_set == "demo-b")]
    assert len(cross) == len(load_dataset("demo-b"))


def test_same_image_same_score(finished_run, tmp_path):
    """Deterministic test crops: predict on a run reproduces the scores of its split 0."""
    from biqabench.data import load_dataset
    from biqabench.model.predict import predict

    table = load_dataset("demo-b")
    preds = pd.read_csv(finished_run / "predictions.csv")
    ours = preds[(preds.split == 0) & (preds.test_set == "demo-b")].head(5)
    files = [table.paths[table.names.index(n)] for n in ours.image]
    again = predict(finished_run, files, device="cpu", precision="fp32", progress=False)
    assert np.allclose(again.pred.to_numpy(), ours.pred.to_numpy(), atol=1e-4)


def test_interrupted_run_resumes_to_the_uninterrupted_result(finished_run, tmp_path, monkeypatch):
    real = runner_mod.train_head
    batches = {"n": 0}

    def interrupting(*args, **kw):
        if kw["desc"].startswith("split 2"):  # stop split 2 in its second epoch
            per_epoch = len(args[1]) // TINY["batch_size"]  # full batches (the last partial one is dropped)

            def stop():
                batches["n"] += 1
                return batches["n"] > per_epoch + 2
            kw["stop_flag"] = stop
        return real(*args, **kw)

    monkeypatch.setattr(runner_mod, "train_head", interrupting)
    run = tmp_path / "interrupted"
    with pytest.raises(BiqaError, match="--resume"):
        evaluate(tiny_config(), run_dir=run, progress=False)
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"
    assert (run / "splits" / "0" / "metrics.csv").is_file() and not (run / "splits" / "1" / "metrics.csv").exists()
    assert (run / "splits" / "1" / "checkpoint.pt").is_file()  # epoch 1 of split 2 is kept
    monkeypatch.setattr(runner_mod, "train_head", real)
    evaluate(resume=run, progress=False)
    a = pd.read_csv(run / "metrics.csv").drop(columns=[], errors="ignore")
    b = pd.read_csv(finished_run / "metrics.csv")
    num = ["srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic"]
    assert np.allclose(a[num].to_numpy(), b[num].to_numpy(), atol=1e-9, equal_nan=True)


def test_weights_qpt_without_weights_says_how_to_make_them(tmp_path):
    with pytest.raises(BiqaError, match="biqabench pretrain qpt --backbone tiny"):
        evaluate(tiny_config(weights="qpt"), run_dir=tmp_path / "x", progress=False)


def test_cli_eval_and_results_commands(tmp_path):
    cfg = tmp_path / "eval.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"recipe_overrides": TINY, "workers": 0}))
    cli = CliRunner()
    out = cli.invoke(app, ["eval", "--config", str(cfg), "--head", "linear", "--weights", "random", "--backbone",
                           "tiny", "--splits", "1", "--device", "cpu", "--precision", "fp32", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "demo-b" in out.output and "SRCC" in out.output
    listing = cli.invoke(app, ["results", "list"]).output
    assert "linear" in listing and "tiny" in listing


def test_unknown_protocol_is_rejected():
    with pytest.raises(BiqaError, match="--protocol"):
        runner_mod.load_eval_config(protocol="probe")
