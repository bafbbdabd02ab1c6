"""Standardised frozen features (recipe ``standardize_features``): fitted on the training split,
the same map for cached and live scoring, carried by exported models."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from biqabench.components.backbones import create_backbone
from biqabench.base.errors import BiqaError
from biqabench.components.feature_norm import StageStandardizer
from biqabench.components.heads import TrainRecipe, create_head, validate_recipe

STANDARDIZED = TrainRecipe(patch_size=64, freeze_backbone=True, cache_features=True, standardize_features=True)


def test_fit_standardises_every_channel_of_the_training_features():
    torch.manual_seed(0)
    feats = [torch.randn(50, 4, 3, 3) * torch.tensor([1.0, 10.0, 1e3, 0.0]).view(1, 4, 1, 1) + 7.0,
             torch.randn(50, 2) * 5 - 3]
    norm = StageStandardizer([4, 2])
    assert all(torch.equal(a, b) for a, b in zip(norm(feats), feats))  # identity until fitted
    norm.fit(feats)
    out = norm(feats)
    flat = out[0].transpose(0, 1).reshape(4, -1)
    assert torch.allclose(flat[:3].mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(flat[:3].std(1, unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.equal(flat[3], torch.zeros_like(flat[3]))  # a constant (dead) channel gives 0, not NaN
    assert torch.allclose(out[1].mean(0), torch.zeros(2), atol=1e-4)


def test_it_commutes_with_average_pooling():
    """Why cached (pooled) and full maps score alike."""
    torch.manual_seed(0)
    norm = StageStandardizer([6])
    norm.fit([torch.randn(20, 6, 5, 5) * 3 + 1])
    x = torch.randn(4, 6, 16, 16) * 2
    assert torch.allclose(norm([F.adaptive_avg_pool2d(x, 4)])[0], F.adaptive_avg_pool2d(norm([x])[0], 4), atol=1e-5)


def test_fit_refuses_features_of_another_shape():
    with pytest.raises(ValueError, match="2 stages got 1"):
        StageStandardizer([3, 3]).fit([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="built for 3"):
        StageStandardizer([3]).fit([torch.zeros(2, 5)])


@pytest.mark.parametrize("head", ["hyperiqa", "linear"])
def test_a_fitted_head_scores_images_as_it_scores_their_cached_features(head):
    torch.manual_seed(0)
    model = create_head(head, create_backbone("resnet18"), recipe=STANDARDIZED).eval()
    x = torch.randn(6, 3, 64, 64) * 3
    with torch.no_grad():
        feats = model.cache_features(model.backbone(x))
        before = model.score_features(feats)
        model.feature_norm.fit(feats)
        cached = model.score_features(feats)
        direct = model(x)
    assert not torch.allclose(before, cached)  # the fitted map changes what the head sees
    assert torch.allclose(direct, cached, atol=1e-4, rtol=1e-4)


def test_the_recipe_needs_cached_features_and_a_head_that_standardises():
    with pytest.raises(BiqaError, match="standardize_features needs cache_features"):
        validate_recipe(TrainRecipe(freeze_backbone=True, standardize_features=True))
    with pytest.raises(BiqaError, match="head 'tres' does not standardise"):
        create_head("tres", create_backbone("tiny"), recipe=STANDARDIZED)


def test_eval_fits_each_split_and_the_saved_model_reproduces_the_predictions(tmp_path):
    """The statistics are the training split's (so they differ between splits), and a model loaded
    from the run applies them to images exactly as the cached scoring did."""
    from biqabench import load_model
    from biqabench.data import load_dataset
    from biqabench.evaluation.runner import EvalConfig, evaluate
    from biqabench.components.weights import read_state_dict

    recipe = dict(patch_size=64, train_patches=1, test_patches=1, batch_size=16, epochs=1, lr=1e-3, lr_step=0)
    cfg = EvalConfig(head="hyperiqa", weights="random", backbone="tiny", splits=2, recipe="cpu",
                     recipe_overrides=recipe, device="cpu", precision="fp32", workers=0, save_all_models=True)
    run = evaluate(cfg, run_dir=tmp_path / "run", progress=False)
    states = [read_state_dict(run / "model.safetensors"), read_state_dict(run / "splits" / "1" / "model.safetensors")]
    means = [s["feature_norm.mean0"] for s in states]
    assert all(m.abs().sum() > 0 for m in means) and not torch.equal(means[0], means[1])

    preds = pd.read_csv(run / "predictions.csv")
    mine = preds[(preds["split"] == 0) & (preds["test_set"] == "demo-b")].head(8)
    table = load_dataset("demo-b")
    paths = [table.paths[list(table.names).index(n)] for n in mine["image"]]
    scores = load_model(run, device="cpu", precision="fp32")(paths)
    assert scores == pytest.approx(mine["pred"].to_numpy(), rel=1e-4, abs=1e-3)
