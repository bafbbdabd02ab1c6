"""The 80/20 protocol: validation inside the training part, split files, --splits-from, official flag."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from biqabench.data import IQATable, content_overlap, make_splits
from biqabench.data.splitfiles import load_run_splits, read_split_table, split_difference, split_file
from biqabench.base.errors import BiqaError
from biqabench.evaluation.runner import EvalConfig, evaluate
from conftest import forwarded_options
from split_tables import authentic_table, synthetic_table

TINY = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=32, epochs=2, lr=1e-3, lr_step=0)


def tiny_config(**kw) -> EvalConfig:
    base = dict(head="linear", weights="random", backbone="tiny", splits=2, recipe="cpu", recipe_overrides=TINY,
                device="cpu", precision="fp32", workers=0, test=[], save_model=False)
    base.update(kw)
    return EvalConfig(**base)


def authentic(n=100) -> IQATable:
    return authentic_table(n)


def synthetic(refs=20, per_ref=5) -> IQATable:
    return synthetic_table(refs, per_ref)


def test_test_part_is_20_percent_and_validation_comes_out_of_the_80():
    table = authentic(100)
    split = make_splits(table, n=1, seed=3, test_frac=0.2, val_frac=0.1)[0]
    assert split.sizes() == {"train": 72, "val": 8, "test": 20}  # val = 10% of the 80 training images


def test_test_part_does_not_depend_on_the_validation_share():
    table = authentic(100)
    for seed in range(3):
        with_val = make_splits(table, n=1, seed=seed, val_frac=0.1)[0]
        without = make_splits(table, n=1, seed=seed, val_frac=0.0)[0]
        assert with_val.test.tolist() == without.test.tolist()
        assert sorted(with_val.train.tolist() + with_val.val.tolist()) == without.train.tolist()


def test_content_aware_split_keeps_val_inside_the_training_contents():
    table = synthetic(20, 5)
    for split in make_splits(table, n=4, seed=0, val_frac=0.25):
        assert not content_overlap(table, split)
        tested = set(table.content[split.test])
        assert len(tested) == 4 and len(set(table.content[split.val])) == 4  # 25% of the 16 training contents


@pytest.fixture(scope="module")
def run_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = evaluate(tiny_config(), run_dir=root / "a", progress=False)
    b = evaluate(tiny_config(seed=5, splits_from=str(a)), run_dir=root / "b", progress=False)
    return a, b


@pytest.fixture(scope="module")
def final_epoch_run(tmp_path_factory):
    return evaluate(tiny_config(val_frac=0.0, splits=1), run_dir=tmp_path_factory.mktemp("runs") / "c",
                    progress=False)


def test_every_run_writes_its_split_files(run_pair):
    a, _ = run_pair
    from biqabench.data import load_dataset, make_splits

    table = load_dataset("demo-a")
    expected = make_splits(table, n=2, seed=0, test_frac=0.2, val_frac=0.1)
    for k, split in enumerate(expected):
        df = pd.read_csv(split_file(a, k))
        assert list(df.columns) == ["image", "content", "part"]
        for part in ("train", "val", "test"):
            assert set(df[df.part == part].image) == {table.names[i] for i in split.part(part)}
        # content-aware: a content id never sits in two parts
        assert (df.groupby("content")["part"].nunique() == 1).all()
    manifest = json.loads((a / "manifest.json").read_text())
    assert [r["seed"] for r in manifest["split_files"]] == [0, 1]
    assert manifest["model_selection"].startswith("epoch with the best validation SRCC")


def test_splits_from_reuses_the_other_runs_splits_exactly(run_pair):
    a, b = run_pair
    for k in range(2):
        assert split_file(a, k).read_bytes() == split_file(b, k).read_bytes()
        assert split_difference(split_file(a, k), split_file(b, k)) == ""
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["splits_from"] == a.name  # seeds of the source
    preds_a, preds_b = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
    assert set(preds_a.image) == set(preds_b.image)


def test_val_frac_zero_keeps_the_final_epoch_and_says_so(final_epoch_run):
    b = final_epoch_run
    assert set(pd.read_csv(split_file(b, 0)).part) == {"train", "test"}
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["model_selection"].startswith("final epoch")
    history = pd.read_csv(b / "history.csv")
    assert (history["best_epoch"] == 2).all()
    assert "final epoch" in (b / "summary.md").read_text()


def test_splits_from_a_run_on_another_dataset_is_refused(run_pair, tmp_path):
    a, _ = run_pair
    with pytest.raises(BiqaError, match="splits-from .*demo-a.*demo-b"):
        evaluate(tiny_config(train="demo-b", splits_from=str(a)), run_dir=tmp_path / "c", progress=False)


def test_split_files_name_bad_rows(tmp_path):
    bad = tmp_path / "split_0.csv"
    bad.write_text("image,content,part\na.jpg,a.jpg,train\nb.jpg,b.jpg,holdout\n")
    with pytest.raises(BiqaError, match="line 3"):
        read_split_table(bad)


def test_run_without_split_files_cannot_lend_them(tmp_path):
    (tmp_path / "old").mkdir()
    with pytest.raises(BiqaError, match="no split files"):
        load_run_splits(tmp_path / "old", authentic())


def test_official_split_flag_reaches_the_config(monkeypatch):
    import biqabench.evaluation.runner as runner_mod

    seen = forwarded_options(monkeypatch, runner_mod, "evaluate",
                             ["eval", "--official-split", "--splits-from", "abc", "--val-frac", "0"])
    assert seen["official_split"] is True and seen["splits_from"] == "abc" and seen["val_frac"] == 0.0
