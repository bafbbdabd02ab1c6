"""Cached frozen-backbone features (recipe ``cache_features``): exact, computed once, used by eval."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from biqabench.components.backbones import create_backbone
from biqabench.base.errors import BiqaError
from biqabench.components.heads import TrainRecipe, create_head, validate_recipe
from biqabench.evaluation.runner import EvalConfig, evaluate
from conftest import BackboneImageCounter

CACHED = dict(patch_size=64, train_patches=2, test_patches=2, batch_size=8, epochs=3, lr=1e-3, lr_step=0,
              freeze_backbone=True, cache_features=True)


@pytest.mark.parametrize("head", ["hyperiqa", "linear", "tres"])
def test_scoring_from_cached_features_equals_the_forward_pass(head):
    torch.manual_seed(0)
    model = create_head(head, create_backbone("resnet18"), recipe=TrainRecipe(patch_size=64)).eval()
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        direct = model(x)
        feats = model.cache_features(model.backbone(x))
        cached = model.score_features(feats)
    assert model.scores_features
    assert torch.allclose(direct, cached, atol=1e-5, rtol=1e-4)
    if head == "hyperiqa":  # stages 1-3 kept at their LDA grids only: smaller than the maps
        assert [tuple(f.shape[-2:]) for f in feats[:3]] == [(8, 8), (4, 4), (2, 2)]


def test_cache_features_needs_a_frozen_backbone():
    with pytest.raises(BiqaError, match="cache_features needs freeze_backbone"):
        validate_recipe(TrainRecipe(cache_features=True))


def _config(**kw) -> EvalConfig:
    base = dict(head="hyperiqa", weights="random", backbone="tiny", splits=2, recipe="cpu",
                recipe_overrides=CACHED, device="cpu", precision="fp32", workers=0)
    base.update(kw)
    return EvalConfig(**base)


def test_eval_computes_each_crop_once_for_every_split_and_epoch(tmp_path, monkeypatch):
    from biqabench.data import load_dataset

    counter = BackboneImageCounter(monkeypatch)
    run = evaluate(_config(splits=2), run_dir=tmp_path / "r", progress=False)
    a, b = load_dataset("demo-a"), load_dataset("demo-b")
    # at most: train crops (2 + 2 mirrored) and test crops (2) of every demo-a image, test crops of demo-b;
    # a fine-tune without the cache runs 2 splits x 3 epochs x the train crops, plus every test
    once = len(a) * (4 + 2) + len(b) * 2
    assert 0 < counter.images <= once
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 4 and metrics["srcc"].notna().all()
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 * 3  # every epoch ran, from the cache
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recipe"]["cache_features"] is True


def test_cached_training_learns_on_a_clean_signal():
    """Training from a FeatureSet moves the head: on features that carry the label, the loss falls."""
    from biqabench.runtime.device import get_runtime
    from biqabench.training.engine import train_head
    from biqabench.training.features import FeatureSet

    torch.manual_seed(0)
    recipe = validate_recipe(TrainRecipe(freeze_backbone=True, cache_features=True, batch_size=16, epochs=30,
                                         lr=1e-2, head_lr_mult=1.0, lr_step=0, weight_decay=0.0))
    head = create_head("linear", create_backbone("tiny"), recipe=recipe)
    n, c = 64, head.backbone.out_channels
    mos = torch.rand(n)
    feats = torch.randn(n, c) * 0.1
    feats[:, 0] = mos * 3  # channel 0 carries the label
    result = train_head(head, FeatureSet([feats], mos, torch.arange(n)), recipe, get_runtime("cpu", "fp32"),
                        progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]


def test_a_head_without_score_features_is_a_one_line_error(tmp_path, monkeypatch):
    from biqabench.components.heads import IQAHead
    from biqabench_plugins.tres.model import TReSHead

    monkeypatch.setattr(TReSHead, "score_features", IQAHead.score_features)  # as a head that has none
    with pytest.raises(BiqaError, match="cannot score from cached"):
        evaluate(_config(head="tres", splits=1, recipe_overrides={**CACHED, "loss": "l1"}), run_dir=tmp_path / "r",
                 progress=False)


def test_tres_trains_from_cached_features_without_the_flip_term():
    """The flip self-consistency term pairs a crop's and its flip's passes: a cache cannot; the
    recipe is refused when the head is built, and l1+rank trains from the cache."""
    recipe = TrainRecipe(**{**CACHED, "loss": "l1+rank+consistency"})
    with pytest.raises(BiqaError, match="self-consistency"):
        create_head("tres", create_backbone("tiny"), recipe=recipe)
    torch.manual_seed(0)
    head = create_head("tres", create_backbone("tiny"), recipe=TrainRecipe(**{**CACHED, "loss": "l1+rank"}))
    feats = head.cache_features(head.backbone(torch.randn(4, 3, 64, 64)))
    loss = head.loss_features([f.detach() for f in feats], torch.rand(4))
    loss.backward()
    assert head.scores_features and torch.isfinite(loss)
    assert all(p.grad is None for p in head.backbone.parameters())


def test_frozen_backbones_are_the_same_in_every_split():
    from biqabench.training.features import backbone_fingerprint
    from biqabench.components.heads import head_spec
    from biqabench.evaluation.runner import build_model

    cfg, spec = _config(), head_spec("hyperiqa")
    recipe = validate_recipe(TrainRecipe(freeze_backbone=True, cache_features=True, patch_size=64))
    torch.manual_seed(1)
    one = build_model(cfg, spec, recipe, None)
    torch.manual_seed(2)
    two = build_model(cfg, spec, recipe, None)
    assert backbone_fingerprint(one) == backbone_fingerprint(two)
    big = build_model(_config(backbone="resnet18"), spec, recipe, None)
    before = backbone_fingerprint(big)
    assert backbone_fingerprint(big.to(memory_format=torch.channels_last)) == before  # as train_head moves it
    head_one = [p for p in one.head_parameters()][0]
    head_two = [p for p in two.head_parameters()][0]
    assert not torch.equal(head_one, head_two)  # heads still start from the split's seed


def test_summary_counts_predictions_outside_the_scale(tmp_path):
    from biqabench.evaluation.runner import outside_scale_counts

    preds = pd.DataFrame({"test_set": ["a", "a", "a", "b"], "pred": [-1.0, 50.0, 101.0, 3.0]})
    manifest = {"datasets": {"a": {"scale": [0, 100]}, "b": {"scale": [1, 5]}}}
    out = outside_scale_counts(preds, manifest)
    assert out["a"]["outside"] == 2 and out["a"]["predictions"] == 3 and out["b"]["outside"] == 0


def test_progress_bars_count_scored_images(monkeypatch):
    """A set smaller than one forward pass used to show 0img for the whole pass."""
    import biqabench.training.engine as engine
    from biqabench.runtime.device import get_runtime

    bars = []

    class Bar:
        def __init__(self, *a, total=None, **kw):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(engine, "tqdm", Bar)
    head = create_head("linear", create_backbone("tiny"), recipe=TrainRecipe(patch_size=32))
    stacks = [torch.randn(2, 3, 32, 32) for _ in range(5)]
    engine.predict_images(head, iter(stacks), get_runtime("cpu", "fp32"), total=5)
    assert bars[-1].total == 5 and bars[-1].n == 5
    engine.predict_images(head, stacks, get_runtime("cpu", "fp32"), batch_patches=4)  # a list: len() is the total
    assert bars[-1].total == 5 and bars[-1].n == 5


def test_summary_md_says_how_many_predictions_left_the_scale(tmp_path):
    run = evaluate(_config(splits=1, recipe_overrides={**CACHED, "epochs": 1}), run_dir=tmp_path / "r",
                   progress=False)
    text = (run / "summary.md").read_text()
    assert "outside the dataset's scale" in text and "demo-b" in text
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["outside_scale"]) == {"demo-a", "demo-b"}
    preds = pd.read_csv(run / "predictions.csv")
    b = preds[preds.test_set == "demo-b"].pred.to_numpy()
    assert manifest["outside_scale"]["demo-b"]["outside"] == int(((b < 0) | (b > 100)).sum())
    assert np.isfinite(b).all()
