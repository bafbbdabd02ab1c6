"""Crops that cover a photo (``train_patches: 0`` / ``test_patches: 0``): the grid, the feature
cache that holds its crops, and test scores averaged over exactly those crops."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from biqabench.components.backbones import create_backbone
from biqabench.data import grid_boxes, image_patches
from biqabench.data.patches import PatchDataset, crop_boxes
from biqabench.base.errors import BiqaError
from biqabench.components.heads import TrainRecipe, create_head, validate_recipe
from biqabench.evaluation.runner import EvalConfig, evaluate

GRID = dict(patch_size=64, train_patches=0, test_patches=0, batch_size=8, epochs=2, lr=1e-3, lr_step=0,
            freeze_backbone=True, cache_features=True, hflip=True)


@pytest.mark.parametrize("h,w,p", [(500, 500, 128), (384, 512, 128), (128, 128, 128), (130, 300, 128),
                                   (256, 256, 128), (97, 203, 32)])
def test_the_grid_covers_every_pixel_with_the_fewest_crops(h, w, p):
    boxes = grid_boxes(h, w, p)
    covered = np.zeros((h, w), bool)
    for top, left, flip in boxes:
        assert not flip and 0 <= top <= h - p and 0 <= left <= w - p
        covered[top:top + p, left:left + p] = True
    assert covered.all()
    per_side = [-(-(s - p) // p) + 1 for s in (h, w)]
    assert len(boxes) == per_side[0] * per_side[1]  # fewer crops of side p cannot reach both edges
    assert crop_boxes(h, w, p, 0, seed=123) == boxes  # n = 0 asks for it, whatever the seed


def test_a_500px_photo_takes_16_crops_of_128_and_a_demo_image_one():
    assert len(grid_boxes(500, 500, 128)) == 16 and [b[0] for b in grid_boxes(500, 500, 128)[::4]] == [0, 124, 248, 372]
    assert grid_boxes(128, 128, 128) == ((0, 0, False),)


def test_image_patches_cuts_the_grid():
    img = np.random.default_rng(0).integers(0, 256, (3, 100, 150), dtype=np.uint8)
    crops = image_patches(img, 64, 0, seed=5)
    boxes = grid_boxes(100, 150, 64)
    assert crops.shape == (len(boxes), 3, 64, 64)
    ref = image_patches(img[:, boxes[-1][0]:boxes[-1][0] + 64, boxes[-1][1]:boxes[-1][1] + 64], 64, 1, seed=0)
    assert torch.equal(crops[-1], ref[0])


def test_a_grid_of_training_crops_needs_the_feature_cache():
    with pytest.raises(BiqaError, match="train_patches: 0"):
        validate_recipe(TrainRecipe(train_patches=0))
    validate_recipe(TrainRecipe(test_patches=0))  # testing on the grid works with any recipe
    validate_recipe(TrainRecipe(**GRID))
    with pytest.raises(BiqaError, match="test_patches must be at least 1, or 0"):
        validate_recipe(TrainRecipe(test_patches=-1))
    with pytest.raises(ValueError, match="n_patches >= 1"):
        PatchDataset(None, [0], 64, 0, train=True)


@pytest.fixture
def photos(tmp_path):
    """A labelled folder of generated 'photos' larger than the crop (the demo's are the crop's size):
    noise whose strength sets the MOS, in two sizes."""
    rng = np.random.default_rng(0)
    from PIL import Image

    rows = []
    for i in range(24):
        h, w = (64, 160) if i % 2 else (130, 100)
        level = i / 23
        base = np.linspace(60, 190, w)[None, :, None].repeat(h, 0).repeat(3, 2)
        img = np.clip(base + rng.normal(0, 5 + 60 * level, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f"img{i:02d}.png"
        Image.fromarray(img).save(tmp_path / name)
        rows.append({"image": name, "mos": 100 * (1 - level)})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path


def _config(photos, **kw) -> EvalConfig:
    base = dict(head="hyperiqa", weights="random", backbone="tiny", splits=2, recipe="cpu", recipe_overrides=GRID,
                device="cpu", precision="fp32", workers=0, train="csv", data_root=str(photos),
                dataset_options={"csv": {"scale": "0,100"}})
    base.update(kw)
    return EvalConfig(**base)


def test_cached_scores_are_the_mean_over_the_grid_crops_and_the_cache_holds_them(photos):
    """FeatureStore (what a cache_features eval scores with) = score_table (the model run on the
    crops) = the mean of the head's scores over exactly the grid crops of each image."""
    from biqabench.data import ImageCache, load_dataset
    from biqabench.runtime.device import get_runtime
    from biqabench.training.features import FeatureStore
    from biqabench.evaluation.runner import score_table

    torch.manual_seed(0)
    recipe = validate_recipe(TrainRecipe(**GRID))
    table = load_dataset("csv", photos, scale="0,100")
    cache, runtime = ImageCache(), get_runtime("cpu", "fp32")
    model = create_head("hyperiqa", create_backbone("tiny"), recipe=recipe).eval()
    store = FeatureStore(runtime, progress=False)
    train, test = np.arange(0, 16), np.arange(16, 24)
    feats = store.train_set(model, table, train, cache, recipe, seed=0)
    grids = {i: grid_boxes(*cache.get_array(table.paths[i]).shape[1:], 64) for i in range(len(table))}
    assert len(feats) == sum(2 * len(grids[i]) for i in train)  # every grid crop and its mirror
    assert {len(grids[i]) for i in range(len(table))} == {3, 6}  # 64x160: 1 x 3 crops, 130x100: 3 x 2
    scores = store.score(model, table, test, cache, recipe, seed=0)
    expected_keys = {(table.name, table.names[i], (t, left, f), 64) for i in train for t, left, _ in grids[i]
                     for f in (False, True)} | {(table.name, table.names[i], b, 64) for i in test for b in grids[i]}
    assert set(store._feats) == expected_keys and store.computed == len(expected_keys)
    again = store.score(model, table, train[:4], cache, recipe, seed=7)  # train images' test crops: already there
    assert store.computed == len(expected_keys)
    direct = score_table(model, table, test, cache, recipe, runtime, seed=0, progress=False)
    by_hand = []
    with torch.no_grad():
        for i in test:
            crops = image_patches(cache.get_array(table.paths[i]), 64, 0, seed=0)
            assert crops.shape[0] == len(grids[i])
            by_hand.append(float(model(crops).mean()))
    np.testing.assert_allclose(scores, by_hand, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(direct, by_hand, rtol=1e-4, atol=1e-5)
    assert len(again) == 4


def test_an_eval_on_the_grid_runs_each_crop_once(photos, tmp_path, monkeypatch):
    from biqabench.data import ImageCache, load_dataset
    from conftest import BackboneImageCounter

    counter = BackboneImageCounter(monkeypatch)
    run = evaluate(_config(photos), run_dir=tmp_path / "r", progress=False)
    table = load_dataset("csv", photos, scale="0,100")
    cache = ImageCache()
    crops = sum(len(grid_boxes(*cache.get_array(p).shape[1:], 64)) for p in table.paths)
    assert crops <= counter.images <= 2 * crops  # grid crops (+ mirrors of training images), once per run
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 2 and metrics["srcc"].notna().all()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["recipe"]["test_patches"] == 0 and manifest["recipe"]["train_patches"] == 0


def test_shrinking_resize_leaves_small_images_alone(tmp_path):
    from PIL import Image

    from biqabench.data import decode_array
    from biqabench.data.images import AtMost, describe_resize, parse_resize

    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(np.zeros((500, 400, 3), np.uint8)).save(big)
    Image.fromarray(np.zeros((128, 160, 3), np.uint8)).save(small)
    assert decode_array(big, "<=256").shape == (3, 320, 256)
    assert decode_array(small, "<=256").shape == (3, 128, 160)  # not upscaled, where 256 would
    assert decode_array(small, 256).shape == (3, 256, 320)
    assert parse_resize("<=256") == 256 and isinstance(parse_resize("<=256"), AtMost) and str(parse_resize("<=256")) == "<=256"
    assert describe_resize("<=384") == "short side at most 384 px"
    with pytest.raises(BiqaError, match="'<=N'"):
        parse_resize("<=abc")
    recipe = validate_recipe(TrainRecipe(resize="<=256", **GRID))
    with pytest.raises(BiqaError, match="resize"):
        validate_recipe(TrainRecipe(resize="big"))
    from biqabench.data import ImageCache

    a, b = ImageCache(resize=recipe.resize), ImageCache(resize=256)
    assert a.get_array(small).shape == (3, 128, 160) and b.get_array(small).shape == (3, 256, 320)


def test_random_training_crops_are_distinct():
    from biqabench.data import ImageCache, load_dataset
    from biqabench.runtime.device import get_runtime
    from biqabench.training.features import FeatureStore

    recipe = validate_recipe(TrainRecipe(**{**GRID, "patch_size": 128, "train_patches": 4}))
    table = load_dataset("demo-a")
    model = create_head("hyperiqa", create_backbone("tiny"), recipe=recipe)
    keys = FeatureStore(get_runtime("cpu", "fp32"), progress=False).ensure(
        model, table, [0, 1], ImageCache(), recipe, seed=0, train=True)
    assert [len(k) for k in keys] == [2, 2]  # a 128 px image has one 128 px crop (and its mirror)


def test_the_photos_preset_sees_a_real_photo_whole_and_leaves_the_cpu_preset_to_the_demo(tmp_path):
    """HyperIQA's ``photos`` preset: a 500x500 CLIVE-sized photo is shrunk to 384 px and its one
    384 px crop is the whole image (a 128 px crop of the ``cpu`` preset is a sixteenth of it)."""
    from PIL import Image

    from biqabench.components.heads import head_spec
    from biqabench.data import ImageCache

    spec = head_spec("hyperiqa")
    photos, cpu = spec.preset("photos"), spec.preset("cpu")
    assert photos.cache_features and photos.freeze_backbone and cpu.patch_size == 128
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (500, 500, 3), dtype=np.uint8)).save(path)
    arr = ImageCache(resize=photos.resize).get_array(path)
    assert arr.shape == (3, photos.patch_size, photos.patch_size)  # shrunk to the crop: the crop is the photo
    assert crop_boxes(*arr.shape[1:], photos.patch_size, photos.test_patches, seed=3) == ((0, 0, False),)
    assert len(grid_boxes(500, 500, cpu.patch_size)) == 16
