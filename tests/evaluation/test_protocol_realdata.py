"""Real data (slow): on the CLIVE part in ../shared/data, split files hold 80% train+val / 20% test
with the validation part inside the 80%, and --splits-from reproduces a run's splits exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from biqabench.data.splitfiles import split_file
from biqabench.evaluation.runner import EvalConfig, evaluate

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

TINY = dict(patch_size=32, train_patches=1, test_patches=1, batch_size=64, epochs=1, lr=1e-3, lr_step=0)


def _cfg(shared_data, **kw) -> EvalConfig:
    base = dict(head="linear", weights="random", backbone="tiny", train="clive", splits=2, recipe="cpu",
                recipe_overrides=TINY, data_root=str(shared_data), device="cpu", precision="fp32", workers=0,
                save_model=False)
    return EvalConfig(**{**base, **kw})


def test_clive_split_files_are_80_20_with_val_inside_and_reusable(shared_data, tmp_path):
    first = evaluate(_cfg(shared_data), run_dir=tmp_path / "a", progress=False)
    for k in range(2):
        parts = pd.read_csv(split_file(first, k))["part"].value_counts()
        n = int(parts.sum())
        assert 570 <= n <= 588  # the part of CLIVE held in clive-dev (t1..t7 dropped by default)
        assert parts["test"] == round(0.2 * n)                          # 20% of the images test
        assert parts["val"] == round(0.1 * (n - parts["test"]))         # val: 10% of the 80%
        assert parts["train"] + parts["val"] == n - parts["test"]
    again = evaluate(_cfg(shared_data, seed=7, splits_from=str(first)), run_dir=tmp_path / "b", progress=False)
    for k in range(2):
        assert split_file(again, k).read_bytes() == split_file(first, k).read_bytes()
    tested = pd.read_csv(again / "predictions.csv")
    expected = pd.read_csv(split_file(first, 0))
    assert set(tested[tested.split == 0].image) == set(expected[expected.part == "test"].image)
