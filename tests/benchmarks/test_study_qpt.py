"""benchmarks/study_qpt.py: snapshot schedule and the paired table against step 0 (no training here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import study_qpt  # noqa: E402


def test_snapshots_double_from_the_first_and_end_at_the_total():
    assert study_qpt.snapshot_steps(25, 400) == [0, 25, 50, 100, 200, 400]
    assert study_qpt.snapshot_steps(25, 300) == [0, 25, 50, 100, 200, 300]


def test_study_table_pairs_each_step_with_step_zero():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.5, 10)
    better = base + rng.uniform(0.03, 0.08, 10)
    same = base + rng.normal(0, 0.01, 10)
    rows = [{"step": 0, "size": 384, "srcc": list(base), "plcc": list(base)},
            {"step": 50, "size": 384, "srcc": list(better), "plcc": list(better)},
            {"step": 25, "size": 384, "srcc": list(same), "plcc": list(same)}]
    t = study_qpt.study_table(rows).set_index("step")
    assert list(t.index) == [0, 25, 50]
    assert t.loc[50, "splits up"] == "10/10"
    assert t.loc[50, "delta vs step 0"] == pytest.approx(np.median(better - base))
    assert t.loc[50, "Wilcoxon p"] == pytest.approx(wilcoxon(better, base).pvalue) and t.loc[50, "Wilcoxon p"] < 0.01
    assert t.loc[25, "Wilcoxon p"] > 0.05
    assert np.isnan(t.loc[0, "delta vs step 0"])


def test_the_photos_preset_loads_with_the_studied_settings():
    from biqabench_plugins.qpt.pretrainer import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "qpt_pretrain_cpu_photos.yaml")
    assert (cfg.crop_size, cfg.patch_size, cfg.negative_degradations, cfg.steps) == (256, 128, 4, 2000)
    assert cfg.degradation.preserve_size and cfg.degradation.order_probs == [0.25, 0.5, 0.25]
