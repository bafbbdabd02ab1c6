"""``biqabench probe``: closed-form ridge, alpha chosen on the training part only, features cached once."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from biqabench.evaluation import ridge
from biqabench.evaluation.probe import FeatureCache, load_probe_config, run_probe


def _standardised(x):
    sd = x.std(0)
    sd[sd == 0] = 1.0
    return (x - x.mean(0)) / sd


@pytest.mark.parametrize("n, d", [(30, 8), (20, 60)])  # more rows than features, and fewer
def test_ridge_path_matches_the_normal_equations(n, d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d) + rng.normal(size=d)
    y = x @ rng.normal(size=d) + rng.normal(size=n)
    x_new = rng.normal(size=(5, d))
    path = ridge.fit_path(x, y)
    a = _standardised(x)
    b = (x_new - x.mean(0)) / x.std(0)
    for alpha in (1e-2, 1.0, 30.0):
        w = np.linalg.solve(a.T @ a + alpha * np.eye(d), a.T @ (y - y.mean()))
        np.testing.assert_allclose(path.coef(alpha), w, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(path.predict(x_new, [alpha])[:, 0], b @ w + y.mean(), rtol=1e-7, atol=1e-9)


def test_ridge_recovers_a_linear_target_and_cv_prefers_shrinkage_on_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    groups = np.arange(80)
    alpha = ridge.choose_alpha(x, y, groups)
    assert alpha <= 1e-2  # noiseless: hardly any shrinkage
    np.testing.assert_allclose(ridge.fit_path(x, y).predict(x, [alpha])[:, 0], y, atol=1e-3)
    noise = rng.normal(size=80)
    assert ridge.choose_alpha(x, noise, groups) >= 10.0  # no signal: shrink towards the mean


def test_inner_folds_keep_each_content_in_one_fold():
    groups = np.repeat(np.arange(12), 3)
    ids = ridge.fold_ids(groups, folds=5, seed=3)
    for g in range(12):
        assert len(set(ids[groups == g])) == 1
    assert set(ids) == set(range(5))
    np.testing.assert_array_equal(ids, ridge.fold_ids(groups, folds=5, seed=3))


# -- the protocol on a small generated dataset ----------------------------------------------------
def make_set(root: Path, n: int = 24) -> Path:
    """``n`` generated photos (8 contents x 3 blur levels) and a labels.csv with ref ids."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        content, level = divmod(i, 3)
        base = np.random.default_rng(content).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        img = Image.fromarray(base).filter(ImageFilter.GaussianBlur(level * 1.5))
        name = f"images/c{content}_b{level}.png"
        img.save(root / name)
        rows.append([name, round(80 - 25 * level + rng.normal(0, 2), 2), f"c{content}"])
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mos", "ref"])
        w.writerows(rows)
    return root


@pytest.fixture
def gen_set(tmp_path):
    return make_set(tmp_path / "gen")


def _probe_kwargs(root: Path, **more):
    kwargs = dict(backbone="tiny", weights="random", train="csv", data_root=str(root), size=32, splits=3,
                  test_frac=0.25, folds=3, dataset_options={"csv": {"scale": "0,100"}}, device="cpu")
    return {**kwargs, **more}


def test_alpha_is_chosen_without_the_test_rows(gen_set, tmp_path, monkeypatch):
    """A spy on the inner CV sees only each split's training rows (column 0 carries the row id)."""
    import biqabench.evaluation.probe as probe
    from biqabench.data import load_dataset, make_splits

    n = 24
    fake = np.c_[np.arange(n, dtype=float), np.random.default_rng(0).normal(size=(n, 6))]
    monkeypatch.setattr(probe, "extract_features", lambda net, paths, *a, **k: (fake[:len(paths)].copy(),
                                                                                probe.FeatureStats()))
    seen = []
    real = ridge.choose_alpha
    monkeypatch.setattr(ridge, "choose_alpha", lambda x, *a, **k: seen.append(set(x[:, 0].astype(int))) or real(x, *a, **k))
    run = run_probe(progress=False, cache=FeatureCache(tmp_path / "feat"), **_probe_kwargs(gen_set))
    table = load_dataset("csv", gen_set, scale="0,100")
    splits = make_splits(table, n=3, seed=0, test_frac=0.25)
    assert len(seen) == 3
    for rows, split in zip(seen, splits):
        assert rows.isdisjoint(split.test.tolist())
        assert rows == set(np.union1d(split.train, split.val).tolist())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "probe" and manifest["status"] == "finished" and len(manifest["alphas"]) == 3


def test_features_are_extracted_once_and_keyed_on_the_weights(gen_set, tmp_path, monkeypatch):
    import biqabench.evaluation.probe as probe

    calls = []
    real = probe.image_features
    monkeypatch.setattr(probe, "image_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = FeatureCache(tmp_path / "feat")
    first = run_probe(progress=False, cache=cache, **_probe_kwargs(gen_set))
    assert len(calls) == 24
    second = run_probe(progress=False, cache=cache, **_probe_kwargs(gen_set, splits=2))
    assert len(calls) == 24  # nothing extracted again
    stats = json.loads((second / "manifest.json").read_text())["features"]["csv"]
    assert (stats["extracted"], stats["cached"]) == (0, 24)
    m1 = json.loads((first / "manifest.json").read_text())
    m2 = json.loads((second / "manifest.json").read_text())
    assert m1["backbone_state_sha256"] == m2["backbone_state_sha256"]
    import pandas as pd
    a = pd.read_csv(first / "metrics.csv").query("split < 2").srcc.to_numpy()
    b = pd.read_csv(second / "metrics.csv").srcc.to_numpy()
    np.testing.assert_allclose(a, b)  # cached features give the same fits
    run_probe(progress=False, cache=cache, **_probe_kwargs(gen_set, seed=5))  # other random weights
    assert len(calls) == 48


def test_probe_run_is_read_by_results_commands(gen_set, tmp_path):
    from biqabench import results

    run = run_probe(progress=False, cache=FeatureCache(tmp_path / "feat"), **_probe_kwargs(gen_set))
    listing = results.list_runs()
    assert run.name in set(listing.id) and listing.set_index("id").loc[run.name, "kind"] == "probe"
    metrics = pd_read(run / "metrics.csv")
    assert {"srcc", "plcc", "krcc", "alpha"} <= set(metrics.columns) and len(metrics) == 3
    assert (run / "summary.md").read_text().count("| csv ") >= 1
    table = results.compare_runs([run, run])
    assert not table.empty


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


def test_bad_probe_options_name_the_option():
    from biqabench.base.errors import BiqaError

    with pytest.raises(BiqaError, match="--size"):
        load_probe_config(size=8)
    with pytest.raises(BiqaError, match="--folds"):
        load_probe_config(folds=1)


@pytest.mark.slow
@pytest.mark.realdata
def test_probe_on_clive_dev_finds_quality_in_random_resnet18_features(shared_data, tmp_path):
    """Random ResNet-18 features already rank CLIVE well above chance (0.4-0.5 at 384 px)."""
    run = run_probe(backbone="resnet18", weights="random", train="clive", data_root=str(shared_data / "clive-dev"),
                    size=128, splits=3, device="cpu", progress=False, cache=FeatureCache(tmp_path / "feat"))
    metrics = pd_read(run / "metrics.csv")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["datasets"]["clive"]["images"] == 581
    assert metrics.srcc.median() > 0.25, metrics


def test_eval_linear_probe_protocol_runs_the_ridge_probe(gen_set, monkeypatch, tmp_path):
    from biqabench.evaluation.runner import evaluate

    monkeypatch.setenv("BIQABENCH_CACHE", str(tmp_path / "cache"))
    kwargs = _probe_kwargs(gen_set)
    for key in ("size", "folds"):
        kwargs.pop(key)
    run = evaluate(protocol="linear-probe", head="linear", progress=False, **kwargs)
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["kind"], manifest["head"], manifest["status"]) == ("probe", "ridge", "finished")
    assert len(pd_read(run / "metrics.csv")) == 3
