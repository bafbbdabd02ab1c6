"""The protocol's decisions, read off the config and the table (biqabench.evaluation.protocol)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biqabench.base.errors import BiqaError
from biqabench.components.heads import TrainRecipe
from biqabench.data import IQATable, make_splits
from biqabench.data.splitfiles import write_split_files
from biqabench.evaluation import protocol
from biqabench.evaluation.eval_config import EvalConfig, ProbeConfig
from biqabench.results import RunFolder


def _table(n=40, name="clive", **options) -> IQATable:
    names = [f"img{i:03d}.jpg" for i in range(n)]
    table = IQATable(name, None, [Path("/x") / s for s in names], names, np.linspace(0, 100, n), (0, 100))
    table.options.update(options)
    return table


def test_seeded_splits_are_the_same_for_eval_and_probe():
    table = _table()
    eval_splits, source = protocol.plan_splits(EvalConfig(splits=3, seed=4), table, None)
    probe_splits, _ = protocol.plan_splits(ProbeConfig(splits=3, seed=4), table, None)
    assert source == "seeds 4..6" and [s.seed for s in eval_splits] == [4, 5, 6]
    assert [list(s.test) for s in eval_splits] == [list(s.test) for s in probe_splits]


def test_a_resumed_run_reads_its_own_split_files(tmp_path):
    table = _table()
    splits = make_splits(table, n=2, seed=9)
    folder = RunFolder(tmp_path / "run").ensure()
    folder.write_manifest(seeds=[s.seed for s in splits], split_files=write_split_files(folder.path, table, splits))
    again, source = protocol.plan_splits(EvalConfig(splits=5, seed=0), table, folder.path)  # cfg ignored
    assert source == "own files" and [s.seed for s in again] == [9, 10]
    assert [list(s.test) for s in again] == [list(s.test) for s in splits]


def test_splits_from_a_run_on_another_set_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BIQABENCH_RESULTS", str(tmp_path))
    table = _table(name="koniq10k")
    splits = make_splits(table, n=1, seed=0)
    folder = RunFolder.create("eval", "source", tmp_path)
    folder.write_manifest(train="koniq10k", seeds=[0], split_files=write_split_files(folder.path, table, splits))
    got, source = protocol.plan_splits(EvalConfig(splits_from=folder.id), table, None)
    assert source == folder.id and [list(s.test) for s in got] == [list(s.test) for s in splits]
    with pytest.raises(BiqaError, match="that run split 'koniq10k', this one trains on 'clive'"):
        protocol.plan_splits(EvalConfig(splits_from=folder.id), _table(), None)


def test_model_selection_says_how_the_tested_epoch_is_chosen():
    table = _table()
    with_val = make_splits(table, n=1, seed=0, val_frac=0.2)
    assert protocol.model_selection(with_val, 0.2).startswith("epoch with the best validation SRCC (validation: 20%")
    assert "val_frac 0" in protocol.model_selection(make_splits(table, n=1, seed=0, val_frac=0.0), 0.0)
    tiny = make_splits(_table(n=8), n=1, seed=0, val_frac=0.1)
    assert all(len(s.val) < protocol.MIN_VAL_IMAGES for s in tiny)
    assert "too small to rank epochs" in protocol.model_selection(tiny, 0.1)


def test_reference_input_sizes_apply_under_the_paper_preset_only():
    assert protocol.dataset_options("koniq10k", {}, "paper") == {"images": "512x384"}
    assert protocol.dataset_options("koniq10k", {}, "cpu") == {}
    assert protocol.dataset_options("spaq", {"resize": 256}, "paper") == {"resize": 256}  # the run's own wins


def test_the_dataset_resize_wins_over_the_recipe():
    recipe = TrainRecipe(resize=320)
    assert protocol.effective_resize(_table(), recipe) == 320
    assert protocol.effective_resize(_table(resize="512x512"), recipe) == "512x512"
    assert protocol.input_size(_table(images="512x384"), TrainRecipe()).startswith("512x384 folder, ")
