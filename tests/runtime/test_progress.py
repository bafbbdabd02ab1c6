"""Progress bars end on their real count, even on sets scored faster than one tqdm refresh
(issue: ``test demo-a: 0img`` and ``predict: 0img`` on small sets)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from PIL import Image

from biqabench.data.splitfiles import read_split_table, split_file


def last_frame(err: str, desc: str) -> str:
    """The last non-blank frame tqdm drew for the bar named ``desc``."""
    frames = [f for f in re.split(r"[\r\n]", err) if f.strip().startswith(f"{desc}:")]
    assert frames, f"no bar {desc!r} in: {err[-400:]!r}"
    return frames[-1]


def test_eval_test_bars_end_on_the_number_of_images(capsys, tmp_path):
    from biqabench.data import load_dataset
    from biqabench.evaluation.runner import EvalConfig, evaluate

    recipe = dict(patch_size=32, train_patches=2, test_patches=2, batch_size=32, epochs=1, lr=1e-3, lr_step=0)
    cfg = EvalConfig(head="linear", weights="random", backbone="tiny", splits=1, recipe="cpu", recipe_overrides=recipe,
                     device="cpu", precision="fp32", workers=0, save_model=False)
    run = evaluate(cfg, run_dir=tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    tested = sum(part == "test" for part in read_split_table(split_file(run, 0)).values())
    assert f"{tested}/{tested}" in last_frame(err, "split 1 test demo-a")
    n_b = len(load_dataset("demo-b"))
    assert f"{n_b}/{n_b}" in last_frame(err, "split 1 test demo-b")
    assert len(pd.read_csv(run / "predictions.csv").query("test_set == 'demo-a'")) == tested


def test_score_bar_ends_on_the_number_of_files(tiny_model_run, capsys, tmp_path):
    from biqabench.model.load import load_model
    from biqabench.model.scoring import score_paths

    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    model = load_model(tiny_model_run, device="cpu", precision="fp32")
    capsys.readouterr()
    df = score_paths(model, [tmp_path], progress=True)
    assert len(df) == 3 and "3/3" in last_frame(capsys.readouterr().err, "score")
